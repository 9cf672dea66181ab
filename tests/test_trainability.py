"""Gradient variance at initialization (the barren-plateau diagnostic) against independent references:
plain-torch autograd, a closed form for a linear model, and the same quantum circuit on three simulators."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qlandscape.models import MLP
from qlandscape.objective import NonFiniteLossError
from qlandscape.trainability import GradientVarianceResult, gradient_variance, init_seeds

# Everything runs in float64 and the references take the same mathematical route (one backward pass
# of a mean loss), so engine and reference differ only by summation order: ~1e-16 relative, far
# below 1e-12. A real bug (wrong denominator, wrong parameter order, ddof=0) is >= 1e-3 relative.
TOL = 1e-12


def _mlp_factory(s: int) -> nn.Module:
    torch.manual_seed(s)
    return MLP(6, [5], 3)


def _data(n: int = 12, d: int = 6, classes: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=gen, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=gen))


def _mlp_result(**kw) -> GradientVarianceResult:
    return gradient_variance(_mlp_factory, "cross_entropy", _data(), n_inits=5, progress=False, **kw)


def test_mlp_matches_direct_autograd_reference():
    x, y = _data()
    res = _mlp_result()
    grads, losses = [], []
    for s in res.seeds:
        model = _mlp_factory(s).double()
        params = list(model.parameters())
        value = F.cross_entropy(model(x), y)  # mean over samples, plain torch
        g = torch.autograd.grad(value, params)
        grads.append(torch.cat([t.reshape(-1) for t in g]).numpy())
        losses.append(value.item())
    G = np.stack(grads)
    assert res.variance.shape == res.mean.shape == (G.shape[1],)
    np.testing.assert_allclose(res.variance, np.var(G, axis=0, ddof=1), rtol=TOL, atol=0)
    np.testing.assert_allclose(res.mean, G.mean(axis=0), rtol=TOL, atol=TOL * np.abs(G).max())
    np.testing.assert_allclose(res.grad_norm_sq, (G ** 2).sum(axis=1), rtol=TOL, atol=0)
    np.testing.assert_allclose(res.losses, losses, rtol=TOL, atol=0)
    # the per-initialization gradients behind the statistics (the rows qlandscape.stats resamples)
    np.testing.assert_allclose(res.rows(), G, rtol=TOL, atol=TOL * np.abs(G).max())
    assert res.param_names == [n for n, _ in _mlp_factory(0).named_parameters()]
    assert res.n_samples == 12 and res.info["loss"] == "cross_entropy" and res.info["dtype"] == "float64"


def test_batching_does_not_change_the_result():
    full, chunked = _mlp_result(), _mlp_result(batch_size=5)
    np.testing.assert_allclose(chunked.variance, full.variance, rtol=1e-10, atol=0)
    np.testing.assert_allclose(chunked.losses, full.losses, rtol=1e-12, atol=0)


def test_linear_model_closed_form():
    # f(x) = w.x, per-sample loss 0.5 (w.x)^2: L(w) = 0.5 w^T A w, grad = A w with A = mean_i x_i x_i^T
    d, n = 4, 10
    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(n, dtype=torch.float64)

    def factory(s: int) -> nn.Module:
        torch.manual_seed(s)
        return nn.Linear(d, 1, bias=False)

    res = gradient_variance(factory, lambda out, _y: 0.5 * out[:, 0] ** 2, (x, y), n_inits=7, seed=3,
                            progress=False)
    A = (x.T @ x / n).numpy()
    W = np.stack([factory(s).weight.detach().double().numpy()[0] for s in res.seeds])  # (n_inits, d)
    G = W @ A  # rows A w_s (A symmetric)
    np.testing.assert_allclose(res.mean, G.mean(axis=0), rtol=TOL, atol=TOL * np.abs(G).max())
    np.testing.assert_allclose(res.variance, G.var(axis=0, ddof=1), rtol=TOL, atol=0)
    np.testing.assert_allclose(res.grad_norm_sq, (G ** 2).sum(axis=1), rtol=TOL, atol=0)
    np.testing.assert_allclose(res.losses, 0.5 * np.einsum("sd,de,se->s", W, A, W), rtol=TOL, atol=0)
    assert res.param_names == ["weight"] and res.tensor_slices == {"weight": [0, d]}


def test_quantum_model_agrees_across_simulators():
    from qlandscape.quantum import PatchQNN

    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(8, 64, generator=gen, dtype=torch.float64), torch.randint(0, 4, (8,), generator=gen))

    def run(device: str) -> GradientVarianceResult:
        return gradient_variance(lambda s: PatchQNN("digits", n_patches=1, layers=1, n_qubits=2, n_classes=4,
                                                    device=device, seed=s),
                                 "cross_entropy", data, n_inits=3, progress=False)

    ref = run("default.qubit")  # backprop through PennyLane's simulator
    assert ref.mean_variance > 0 and ref.param_names == ["pos_bias", "circuits.0.weights"]
    # lightning.qubit: adjoint differentiation (first order only); torch.statevector: qlandscape's own simulator
    for other in (run("lightning.qubit"), run("torch.statevector")):
        assert other.seeds == ref.seeds
        scale = ref.variance.max()
        np.testing.assert_allclose(other.variance, ref.variance, rtol=1e-8, atol=1e-8 * scale)
        np.testing.assert_allclose(other.mean, ref.mean, rtol=1e-8, atol=1e-8 * np.abs(ref.mean).max())
        np.testing.assert_allclose(other.losses, ref.losses, rtol=1e-10, atol=0)


def test_determinism_and_seeds():
    a, b, c = _mlp_result(seed=7), _mlp_result(seed=7), _mlp_result(seed=8)
    assert a.seeds == b.seeds == init_seeds(7, 5)
    np.testing.assert_array_equal(a.variance, b.variance)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert a.seeds != c.seeds and not np.array_equal(a.variance, c.variance)
    assert len(set(a.seeds)) == 5 and all(0 <= s < 2**31 for s in a.seeds)
    assert init_seeds(7, 3) == a.seeds[:3]  # more initializations extend the list
    expected = [int(np.random.SeedSequence([7, i]).generate_state(1)[0]) % 2**31 for i in range(5)]
    assert a.seeds == expected


def test_tensor_aggregates():
    res = _mlp_result()
    by_tensor = res.variance_by_tensor()
    assert list(by_tensor) == res.param_names == ["net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias"]
    offsets = np.cumsum([0] + [p.numel() for p in _mlp_factory(0).parameters()])
    for k, name in enumerate(res.param_names):
        assert res.tensor_slices[name] == [offsets[k], offsets[k + 1]]
        assert by_tensor[name] == pytest.approx(res.variance[offsets[k]:offsets[k + 1]].mean(), rel=1e-15)
    assert res.mean_variance == pytest.approx(res.variance.mean(), rel=1e-15)
    text = res.summary()
    assert "5 initializations" in text and all(name in text for name in res.param_names)


def test_params_selection():
    res = _mlp_result(params="net.3.*")
    full = _mlp_result()
    assert res.param_names == ["net.3.weight", "net.3.bias"] and res.info["params"] == "net.3.*"
    np.testing.assert_allclose(res.variance, full.variance[-res.n_params:], rtol=1e-12, atol=0)


def test_save_load_round_trip(tmp_path):
    res = _mlp_result()
    res.save(tmp_path / "gv")
    back = GradientVarianceResult.load(tmp_path / "gv")
    for name in ("variance", "mean", "grad_norm_sq", "losses"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert back.seeds == res.seeds and back.param_names == res.param_names
    assert back.tensor_slices == res.tensor_slices and back.n_samples == res.n_samples
    assert back.info["loss"] == "cross_entropy" and back.info["seed_rule"] == res.info["seed_rule"]
    assert back.variance_by_tensor() == res.variance_by_tensor() and back.summary() == res.summary()
    np.testing.assert_array_equal(back.rows(), res.rows())


def test_a_result_without_gradients_says_how_to_get_intervals():
    res = _mlp_result()
    old = GradientVarianceResult(**{**res.__dict__, "gradients": None})
    with pytest.raises(ValueError, match="recompute it with qlandscape.gradient_variance"):
        old.rows()


def test_n_inits_below_two_raises():
    with pytest.raises(ValueError, match="n_inits"):
        gradient_variance(_mlp_factory, "cross_entropy", _data(), n_inits=1, progress=False)


def test_different_architecture_names_the_tensor():
    def factory(s: int) -> nn.Module:
        torch.manual_seed(s)
        return MLP(6, [5 if s == first else 4], 3)

    first = init_seeds(0, 3)[0]
    with pytest.raises(ValueError, match=r"net\.1\.weight.*\(4, 6\).*\(5, 6\)"):
        gradient_variance(factory, "cross_entropy", _data(), n_inits=3, progress=False)


def test_non_module_raises_type_error():
    with pytest.raises(TypeError, match="nn.Module"):
        gradient_variance(lambda s: lambda x: x, "cross_entropy", _data(), n_inits=2, progress=False)


def test_factory_ignoring_its_seed_raises():
    def factory(s: int) -> nn.Module:
        torch.manual_seed(0)
        return MLP(6, [5], 3)

    with pytest.raises(ValueError, match="identically initialized"):
        gradient_variance(factory, "cross_entropy", _data(), n_inits=3, progress=False)


def test_non_finite_gradient_names_the_initialization():
    x, y = _data()
    x[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"initialization 0 \(factory seed \d+\)"):
        gradient_variance(_mlp_factory, "cross_entropy", (x, y), n_inits=2, progress=False)
