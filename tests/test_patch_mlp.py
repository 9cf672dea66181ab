"""PatchMLP: the classical baseline with the patch structure of PatchQNN."""

from __future__ import annotations

import types

import pytest
import torch

from qlandscape.models import PatchMLP
from qlandscape.patches import PatchGrid

GRID = PatchGrid.from_count(8, 4, 4)


def _mlp(**kw):
    base = dict(hidden=3, n_classes=10, coefficient=2.0, seed=0)
    base.update(kw)
    return PatchMLP(GRID, **base).double()


@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 1, 8, 8), (5, 64)])
def test_output_shapes(shape):
    model = _mlp()
    x = torch.randn(shape, dtype=torch.float64)
    out = model(x)
    assert out.shape == (5, 10) and out.dtype == torch.float64
    flat = x.reshape(5, 64)
    assert torch.allclose(out, model(flat))


def test_bad_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="expected inputs of shape"):
        _mlp()(torch.randn(2, 63))


def test_per_patch_independence():
    """Changing patch p's MLP changes only patch p's scores, and the logits by coefficient/P times it."""
    model = _mlp(aggregation="mean", positional_bias=False)
    x = torch.randn(6, 64, dtype=torch.float64)
    patches = model.grid.extract(x.reshape(6, 8, 8) * model.input_scale)
    before, logits_before = model.patch_outputs(patches), model(x)
    with torch.no_grad():
        model.patch_nets[2][2].bias.add_(1.0)
        model.patch_nets[2][0].weight.mul_(-1.5)
    after, logits_after = model.patch_outputs(patches), model(x)
    changed = (after - before).abs().amax(dim=(0, 2))
    assert changed[2] > 0 and torch.all(changed[[0, 1, 3]] == 0)
    expected = model.coefficient * (after[:, 2] - before[:, 2]) / 4
    assert torch.allclose(logits_after - logits_before, expected, atol=1e-12)


@pytest.mark.parametrize("aggregation", ["mean", "sum", "linear"])
def test_aggregation_equals_a_hand_loop(aggregation):
    model = _mlp(aggregation=aggregation, n_out=7 if aggregation == "linear" else None, input_scale=0.5)
    with torch.no_grad():
        model.pos_bias.copy_(torch.randn(8, 8, dtype=torch.float64))
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    img = x[:, 0] * 0.5 + model.pos_bias
    scores = []
    for p, (r, c) in enumerate(GRID.corners):
        patch = img[:, r:r + 4, c:c + 4].reshape(3, 16)
        net = model.patch_nets[p]
        scores.append(torch.tanh(patch @ net[0].weight.T + net[0].bias) @ net[2].weight.T + net[2].bias)
    if aggregation == "mean":
        agg = sum(scores) / 4
    elif aggregation == "sum":
        agg = sum(scores)
    else:
        agg = model.head(torch.cat(scores, dim=1))
    assert torch.allclose(model(x), 2.0 * agg, atol=1e-12)


@pytest.mark.parametrize("aggregation, bias", [("mean", True), ("sum", False), ("linear", True)])
def test_count_params_matches_the_module(aggregation, bias):
    kw = dict(n_out=5 if aggregation == "linear" else None, aggregation=aggregation, positional_bias=bias)
    model = PatchMLP(GRID, 6, 10, **kw)
    assert model.n_params == PatchMLP.count_params(GRID, 6, 10, **kw)


@pytest.mark.parametrize("target", [100, 384, 1000, 5000])
def test_matched_to_is_within_one_hidden_unit(target):
    fake = types.SimpleNamespace(grid=GRID, n_params=target, config=dict(
        n_classes=10, aggregation="mean", coefficient=10.0, positional_bias=True, input_scale=0.3,
        observables=["X0"] * 10))
    mlp = PatchMLP.matched_to(fake, seed=1)
    per_unit = GRID.n_patches * (GRID.n_features + 1 + 10)
    assert mlp.matched_info["params_per_hidden_unit"] == per_unit
    assert abs(mlp.n_params - target) <= per_unit / 2 or mlp.hidden == 1
    for h in (mlp.hidden - 1, mlp.hidden + 1):  # no other width is closer
        if h >= 1:
            assert abs(PatchMLP.count_params(GRID, h, 10) - target) >= abs(mlp.n_params - target)
    assert mlp.coefficient == 10.0 and mlp.input_scale == 0.3 and mlp.pos_bias is not None
    assert mlp.matched_info == {"qnn_n_params": target, "mlp_n_params": mlp.n_params, "hidden": mlp.hidden,
                                "params_per_hidden_unit": per_unit}


def test_matched_to_a_real_patch_qnn():
    from qlandscape.quantum import PatchQNN
    qnn = PatchQNN("digits", device="default.qubit")
    mlp = PatchMLP.matched_to(qnn)
    assert mlp.grid == qnn.grid and mlp.aggregation == qnn.aggregation and mlp.coefficient == qnn.coefficient
    assert abs(mlp.n_params - qnn.n_params) <= mlp.matched_info["params_per_hidden_unit"] / 2
    x = torch.randn(4, 64)
    assert mlp(x).shape == qnn(x).shape == (4, 10)


def test_seed_makes_the_initialization_deterministic_and_leaves_the_global_rng():
    state = torch.get_rng_state()
    a, b = PatchMLP(GRID, 4, seed=3), PatchMLP(GRID, 4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kw, match", [
    (dict(hidden=0), "hidden must be an int >= 1"),
    (dict(aggregation="max"), "aggregation must be one of"),
    (dict(n_out=3), "needs n_out == n_classes"),
])
def test_bad_arguments_are_clear_errors(kw, match):
    base = dict(hidden=2, n_classes=10)
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        PatchMLP(GRID, **base)


def test_patch_mlp_does_not_import_quantum():
    import ast
    import inspect

    import qlandscape.models.classical as mod
    tree = ast.parse(inspect.getsource(mod))
    names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not any("quantum" in n or "pennylane" in n for n in names)
