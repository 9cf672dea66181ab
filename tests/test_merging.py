"""Permutation alignment (Git Re-Basin) and merging: function preservation, exact recovery, brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from qlandscape.data import load_digits
from qlandscape.merging import (
    MergeResult,
    align_weights,
    apply_permutations,
    average_weights,
    identity_permutations,
    interpolation_barriers,
    permutation_spec,
    random_permutations,
    weight_similarity,
)
from qlandscape.models import MLP, SmallCNN
from qlandscape.params import ParamSpace
from qlandscape.train import train


def _mlp(seed: int = 0, hidden: tuple[int, ...] = (6, 5), activation: str = "tanh", batchnorm: bool = False,
         in_features: int = 7, out: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return MLP(in_features, hidden, out, activation=activation, batchnorm=batchnorm).double()


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics (eval mode uses them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(1 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64))
                m.bias.copy_(0.3 * torch.randn(n, generator=g, dtype=torch.float64))
                m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g, dtype=torch.float64))
    return model.eval()


def _flat(model: nn.Module) -> torch.Tensor:
    return ParamSpace.from_module(model).from_module_values(model)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_state_equal(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def _cnn(seed: int = 0, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = SmallCNN(2, (4, 5), 3, batchnorm=batchnorm).double()
    return _randomize_bn(model, seed) if batchnorm else model.eval()


def _sequential(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU(), nn.Conv2d(4, 3, 3),
                         nn.LeakyReLU(0.1), nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Softplus(), nn.Linear(6, 5), nn.Sigmoid(),
                         nn.Identity(), nn.Linear(5, 2)).double()


CASES = {
    "mlp-tanh": (lambda s: _mlp(s).eval(), (11, 7)),
    "mlp-relu": (lambda s: _mlp(s, activation="relu").eval(), (11, 7)),
    "mlp-bn": (lambda s: _randomize_bn(_mlp(s, batchnorm=True), s), (11, 1, 7)),
    "cnn": (lambda s: _cnn(s), (4, 2, 5, 6)),
    "cnn-bn": (lambda s: _cnn(s, batchnorm=True), (4, 2, 5, 6)),
    "sequential": (lambda s: _randomize_bn(_sequential(s), s), (4, 1, 6, 6)),
}


# ------------------------------------------------------------------------------------------ permutations
@pytest.mark.parametrize("case", sorted(CASES))
def test_permuted_network_computes_the_same_function(case):
    make, shape = CASES[case]
    model = make(0)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = _state(model)
    perms = random_permutations(permutation_spec(model), seed=3)
    assert any(not np.array_equal(p, np.arange(len(p))) for p in perms)
    permuted = apply_permutations(model, perms)
    _assert_state_equal(before, model)
    assert not torch.equal(_flat(permuted), _flat(model))
    with torch.no_grad():
        torch.testing.assert_close(permuted(x), model(x), rtol=0, atol=1e-12)
    # the inverse permutation restores the original exactly
    back = apply_permutations(permuted, [np.argsort(p) for p in perms])
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_spec_of_mlp_with_batchnorm_permutes_running_statistics():
    spec = permutation_spec(_mlp(batchnorm=True))
    assert spec.widths == (6, 5) and spec.kinds == ("linear", "linear")
    assert spec.axes["net.2.running_mean"] == (0,) and spec.axes["net.5.running_var"] == (1,)
    assert spec.axes["net.4.weight"] == (1, 0) and spec.axes["net.7.weight"] == (None, 1)
    assert spec.axes["net.7.bias"] == (None,)


# ------------------------------------------------------------------------------------------ exact recovery
@pytest.mark.parametrize("method", ["weight", "activation"])
@pytest.mark.parametrize("case", ["mlp-tanh", "mlp-bn", "cnn-bn", "sequential"])
def test_alignment_recovers_a_permuted_copy_exactly(case, method):
    make, shape = CASES[case]
    model_a = make(0)
    perms = random_permutations(permutation_spec(model_a), seed=5)
    model_b = apply_permutations(model_a, perms)
    state_a, state_b = _state(model_a), _state(model_b)
    x = torch.randn(64, *shape[1:], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    result = align_weights(model_a, model_b, method, data=x if method == "activation" else None)
    _assert_state_equal(state_a, model_a)
    _assert_state_equal(state_b, model_b)
    for got, p in zip(result.permutations, perms):
        np.testing.assert_array_equal(got, np.argsort(p))
    assert result.identity == [False] * len(perms)
    for k, v in model_a.state_dict().items():
        assert torch.equal(result.model.state_dict()[k], v), k
    assert result.similarity_after >= result.similarity_before
    if method == "weight":
        assert result.similarity_after == pytest.approx(weight_similarity(model_a, model_a), rel=1e-12)
    else:
        assert result.similarity_after == pytest.approx(1.0, abs=1e-12)


def test_barriers_of_a_permuted_copy_vanish_after_alignment():
    model_a = _mlp(0, hidden=(8, 8))
    model_b = apply_permutations(model_a, random_permutations(permutation_spec(model_a), seed=1))
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(40, 7, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g))
    for method in ("weight", "activation"):
        res = interpolation_barriers(model_a, model_b, data, n_points=5, align=method)
        assert res.barrier_aligned == 0.0 and res.error_barrier_aligned == 0.0
        np.testing.assert_array_equal(res.loss_aligned, np.full(5, res.loss_a))
        assert res.merged_loss_aligned == pytest.approx(res.loss_a, abs=1e-12)
        assert res.loss_b == pytest.approx(res.loss_a, abs=1e-12)  # same function
        assert abs(res.loss_plain[2] - res.loss_a) > 1e-3  # the unaligned midpoint is a different network


# ------------------------------------------------------------------------------------------ brute-force references
def test_weight_matching_one_hidden_layer_is_the_brute_force_optimum():
    model_a, model_b = _mlp(0, hidden=(5,)), _mlp(1, hidden=(5,))
    result = align_weights(model_a, model_b, "weight")
    best = max(weight_similarity(model_a, apply_permutations(model_b, [np.array(p)]))
               for p in itertools.permutations(range(5)))
    assert result.similarity_after == pytest.approx(best, rel=1e-12, abs=1e-12)
    assert weight_similarity(model_a, result.model) == pytest.approx(best, rel=1e-12, abs=1e-12)
    assert result.similarity_before == pytest.approx(weight_similarity(model_a, model_b), rel=1e-12)


def test_weight_matching_two_hidden_layers_is_an_improving_fixed_point():
    model_a, model_b = _mlp(2, hidden=(4, 4)), _mlp(3, hidden=(4, 4))
    result = align_weights(model_a, model_b, "weight", seed=0)
    assert result.converged
    identity = weight_similarity(model_a, model_b)
    assert result.similarity_before == pytest.approx(identity, rel=1e-12)
    assert result.similarity_after >= identity - 1e-12
    got = weight_similarity(model_a, result.model)
    assert got == pytest.approx(result.similarity_after, rel=1e-12)
    for layer in range(2):  # no single-layer change improves it (enumerated, not by LAP)
        for p in itertools.permutations(range(4)):
            perms = [q.copy() for q in result.permutations]
            perms[layer] = np.array(p)
            assert weight_similarity(model_a, apply_permutations(model_b, perms)) <= got + 1e-12


def test_activation_matching_one_layer_maximizes_the_correlation():
    model_a, model_b = _mlp(0, hidden=(5,)), _mlp(1, hidden=(5,))
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = align_weights(model_a, model_b, "activation", data=x)
    with torch.no_grad():
        ha, hb = model_a.net[:3](x).numpy(), model_b.net[:3](x).numpy()
    corr = np.corrcoef(ha.T, hb.T)[:5, 5:]
    best = max(np.mean(corr[np.arange(5), list(p)]) for p in itertools.permutations(range(5)))
    assert result.similarity_after == pytest.approx(best, abs=1e-12)
    assert result.similarity_before == pytest.approx(np.mean(np.diag(corr)), abs=1e-12)


# ------------------------------------------------------------------------------------------ trained networks
def test_weight_matching_reduces_the_barrier_between_trained_mlps():
    ds = load_digits(n_samples=300, downsample=4)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, _ = train(MLP(ds.n_features, (32, 32), ds.n_classes).double(), ds.train, epochs=15, lr=0.05,
                         seed=seed, progress=False)
        models.append(model)
    res = interpolation_barriers(models[0], models[1], ds.train, n_points=11, align="weight")
    print(f"\nbarrier plain {res.barrier_plain:.4f} -> aligned {res.barrier_aligned:.4f}; error barrier "
          f"{res.error_barrier_plain:.4f} -> {res.error_barrier_aligned:.4f}; merged loss {res.merged_loss_plain:.4f}"
          f" -> {res.merged_loss_aligned:.4f} (endpoints {res.loss_a:.4f}, {res.loss_b:.4f})")
    assert res.barrier_aligned < res.barrier_plain
    assert res.merged_loss_aligned < res.merged_loss_plain
    assert res.similarity_after > res.similarity_before
    # the merged model's loss is the curve's midpoint (one interpolation engine)
    assert res.merged_loss_plain == pytest.approx(res.loss_plain[5], rel=1e-10)
    assert res.merged_loss_aligned == pytest.approx(res.loss_aligned[5], rel=1e-10)


# ------------------------------------------------------------------------------------------ averaging, results
def test_average_weights_averages_parameters_and_running_statistics():
    a, b = _randomize_bn(_mlp(0, batchnorm=True), 0), _randomize_bn(_mlp(1, batchnorm=True), 1)
    sa, sb = _state(a), _state(b)
    merged = average_weights(a, b, alpha=0.25)
    _assert_state_equal(sa, a)
    _assert_state_equal(sb, b)
    for k, v in merged.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * sa[k] + 0.25 * sb[k], rtol=0, atol=1e-14)
        else:
            assert torch.equal(v, sa[k])


def test_batchnorm_models_need_train_mode_for_interpolation():
    a, b = _randomize_bn(_mlp(0, batchnorm=True), 0), _randomize_bn(_mlp(1, batchnorm=True), 1)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(30, 7, generator=g, dtype=torch.float64), torch.randint(0, 3, (30,), generator=g))
    with pytest.raises(ValueError, match="mode='train'"):
        interpolation_barriers(a, b, data)
    res = interpolation_barriers(a, b, data, n_points=3, align="weight", mode="train")
    assert np.isfinite(res.barrier_plain) and np.isfinite(res.barrier_aligned)


def test_merge_result_round_trip(tmp_path):
    a, b = _mlp(0), _mlp(1)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(20, 7, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g))
    state_a, state_b = _state(a), _state(b)
    for align in (None, "activation"):
        res = interpolation_barriers(a, b, data, n_points=5, align=align)
        back = MergeResult.load(res.save(tmp_path / f"merge-{align}"))
        for name, value in vars(res).items():
            got = getattr(back, name)
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got, value)
            elif isinstance(value, float) and np.isnan(value):
                assert np.isnan(got), name
            elif name != "provenance":
                assert got == value, name
    assert res.align == "activation" and len(res.permutations) == 2
    _assert_state_equal(state_a, a)
    _assert_state_equal(state_b, b)


# ------------------------------------------------------------------------------------------ bad inputs
class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.lin(x)


def test_mismatched_widths_are_refused_naming_the_parameter():
    with pytest.raises(ValueError, match=r"net\.1\.weight.*widths"):
        align_weights(_mlp(0, hidden=(6, 5)), _mlp(1, hidden=(7, 5)))
    with pytest.raises(ValueError, match="Tanh in model_a"):
        align_weights(_mlp(0), _mlp(0, activation="relu"))
    with pytest.raises(ValueError, match="MLP.*SmallCNN"):
        align_weights(_mlp(0), _cnn(0))


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Linear(4, 4), _Residual(), nn.Linear(4, 2)), r"'1' \(_Residual\)"),
    (nn.LSTM(4, 4), "LSTM model"),
    (nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2)), r"'1' \(PReLU\)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2)), r"'1' \(Flatten\)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(4, 2)), r"'1' \(Linear\).*AdaptiveAvgPool2d"),
])
def test_unsupported_modules_are_refused_with_the_supported_list(model, match):
    with pytest.raises(ValueError, match=match) as info:
        permutation_spec(model)
    assert "supported: qlandscape.models.MLP" in str(info.value)
    with pytest.raises(ValueError, match=match):
        align_weights(model, model)


def test_activation_matching_without_data_is_refused():
    with pytest.raises(ValueError, match="needs data"):
        align_weights(_mlp(0), _mlp(1), "activation")
    with pytest.raises(ValueError, match="method must be"):
        align_weights(_mlp(0), _mlp(1), "weights")
    with pytest.raises(ValueError, match="max_iter"):
        align_weights(_mlp(0), _mlp(1), max_iter=0)


@pytest.mark.parametrize("perms, match", [
    ([np.arange(6)], "2 hidden layers"),
    ([np.arange(6), np.arange(6)], r"perms\[1\] must be a permutation of 0..4"),
    ([np.arange(6), np.array([0, 1, 2, 3, 3])], r"perms\[1\] must be a permutation"),
    ([np.arange(6.0), np.arange(5)], r"perms\[0\] must hold integers"),
    (np.arange(6), "must be a list"),
])
def test_invalid_permutations_are_refused(perms, match):
    model = _mlp(0)
    with pytest.raises(ValueError, match=match):
        apply_permutations(model, perms)


def test_identity_permutation_copy_is_exact_and_independent():
    model = _mlp(0)
    copy = apply_permutations(model, identity_permutations(permutation_spec(model)))
    assert copy is not model and torch.equal(_flat(copy), _flat(model))
    with torch.no_grad():
        next(copy.parameters()).add_(1.0)
    assert not torch.equal(_flat(copy), _flat(model))
