"""The objective: full-data value / gradient / HVP against independent references, and the
traps other tools fall into (uneven batches, reduction, train-mode layers, mutation)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import hessian

from qlandscape import NonFiniteLossError, Objective, dense_hessian
from qlandscape.second_order import FiniteDifferenceOfGradients

from .cases import ALL_CASES, bn_case, least_squares, mlp_case

# float64 throughout: autograd references agree to rounding (~1e-15 relative); 1e-10 leaves
# room for summation-order differences between chunked and unchunked evaluation.
TOL = 1e-10


@pytest.mark.parametrize("make_case", ALL_CASES)
@pytest.mark.parametrize("second_order", ["auto", "reverse", "forward"])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_hvp_matches_dense_torch_func_hessian(make_case, second_order, batch_size):
    case = make_case()
    ob = Objective(case.model, case.loss, (case.x, case.y), batch_size=batch_size, second_order=second_order)
    H_ref = hessian(lambda t: case.reference(t, ob.space))(ob.theta0)
    v = torch.randn(ob.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ob.hvp(v), H_ref @ v, rtol=TOL, atol=TOL)
    assert torch.allclose(dense_hessian(ob), H_ref, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("make_case", ALL_CASES)
def test_value_and_gradient_match_reference(make_case):
    case = make_case()
    ob = Objective(case.model, case.loss, (case.x, case.y), batch_size=5)
    t = ob.theta0.clone().requires_grad_(True)
    ref = case.reference(t, ob.space)
    (g_ref,) = torch.autograd.grad(ref, t)
    assert ob.loss() == pytest.approx(float(ref.detach()), rel=1e-12)
    assert torch.allclose(ob.gradient(), g_ref, rtol=TOL, atol=TOL)


def test_finite_difference_provider_approximates_the_hessian():
    case = mlp_case()
    ob = Objective(case.model, case.loss, (case.x, case.y), second_order=FiniteDifferenceOfGradients())
    H_ref = hessian(lambda t: case.reference(t, ob.space))(ob.theta0)
    # central differences with h ~ eps^(1/3): error ~ h^2 |g'''| + eps |g| / h ~ 1e-10
    assert torch.allclose(dense_hessian(ob), H_ref, atol=1e-8)


def test_uneven_last_batch_is_weighted_by_its_size():
    case = mlp_case()  # 23 samples: chunks 10, 10, 3
    whole = Objective(case.model, case.loss, (case.x, case.y))
    chunked = Objective(case.model, case.loss, (case.x, case.y), batch_size=10)
    loader = [(case.x[i:i + 10], case.y[i:i + 10]) for i in range(0, 23, 10)]
    from_loader = Objective(case.model, case.loss, loader)
    v = torch.randn(whole.n_params, dtype=torch.float64)
    assert chunked.loss() == pytest.approx(whole.loss(), rel=1e-13)
    assert from_loader.loss() == pytest.approx(whole.loss(), rel=1e-13)
    assert torch.allclose(chunked.hvp(v), whole.hvp(v), rtol=TOL, atol=TOL)
    # the naive average of per-batch means is a different (wrong) number here
    naive = np.mean([F.cross_entropy(case.model(x).double(), y).item() for x, y in loader])
    assert abs(naive - whole.loss()) > 1e-4


def test_sum_reduction_is_n_times_mean():
    case = mlp_case()
    mean = Objective(case.model, case.loss, (case.x, case.y))
    total = Objective(case.model, case.loss, (case.x, case.y), reduction="sum", batch_size=7)
    v = torch.randn(mean.n_params, dtype=torch.float64)
    assert total.loss() == pytest.approx(23 * mean.loss(), rel=1e-13)
    assert torch.allclose(total.hvp(v), 23 * mean.hvp(v), rtol=TOL, atol=TOL)


def test_least_squares_hessian_is_closed_form():
    model, X, y, H = least_squares()
    ob = Objective(model, "mse", (X, y), batch_size=7)
    assert torch.allclose(dense_hessian(ob), H, rtol=1e-12, atol=1e-12)


def test_parameter_subset_hessian_is_the_submatrix():
    case = mlp_case()
    full = Objective(case.model, case.loss, (case.x, case.y))
    sub = Objective(case.model, case.loss, (case.x, case.y), params="2.*")
    H = dense_hessian(full)
    n_first = 5 * 6 + 6
    assert sub.n_params == 6 * 3 + 3
    assert torch.allclose(dense_hessian(sub), H[n_first:, n_first:], rtol=TOL, atol=TOL)


def _snapshot(model: nn.Module):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [(m, m.training) for m in model.modules()],
            [(n, p.requires_grad, p.dtype) for n, p in model.named_parameters()])


def _assert_unchanged(model: nn.Module, snap) -> None:
    state, modes, flags = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"
    assert [(m, m.training) for m in model.modules()] == modes
    assert [(n, p.requires_grad, p.dtype) for n, p in model.named_parameters()] == flags


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_users_model_is_unchanged_after_every_call(mode):
    model = bn_case()
    model.train()  # the user's own choice of mode must survive
    model[0].weight.requires_grad_(False)
    snap = _snapshot(model)
    x, y = mlp_case().x, mlp_case().y
    ob = Objective(model, "cross_entropy", (x, y), mode=mode, batch_size=8, params=None)
    ob.loss()
    ob.gradient()
    ob.hvp(torch.randn(ob.n_params, dtype=torch.float64))
    ob.evaluate_many(ob.theta0[None].repeat(3, 1), vectorize=False)
    from qlandscape import lanczos, random_direction, scan_1d
    lanczos(ob, k=1, progress=False)
    scan_1d(ob, random_direction(ob.space, ob.theta0), n_points=3, progress=False)
    _assert_unchanged(model, snap)


def test_batchnorm_eval_and_train_modes_give_different_declared_answers():
    model = bn_case()
    with torch.no_grad():  # make running stats differ from batch stats
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(2.0)
    case = mlp_case()
    ev = Objective(model, "cross_entropy", (case.x, case.y), mode="eval")
    tr = Objective(model, "cross_entropy", (case.x, case.y), mode="train")
    assert ev.provenance()["mode"] == "eval" and tr.provenance()["mode"] == "train"
    m64 = copy.deepcopy(model).double()
    m64.eval()
    assert ev.loss() == pytest.approx(F.cross_entropy(m64(case.x.double()), case.y).item(), rel=1e-12)
    m64.train()
    assert tr.loss() == pytest.approx(F.cross_entropy(m64(case.x.double()), case.y).item(), rel=1e-12)
    assert abs(ev.loss() - tr.loss()) > 1e-3
    # Train-mode Hessian (batch statistics). Reference: batch norm written out with plain ops,
    # differentiated by torch.func.hessian. (torch.func.hessian through nn.BatchNorm1d in train
    # mode is itself wrong on torch 2.13 -- asymmetric, off by ~0.2 here -- while our HVP
    # agrees with finite differences of exact gradients; see the second check.)
    eps = model[1].eps

    def ref(theta):
        p = tr.space.unflatten(theta)
        h = case.x.double() @ p["0.weight"].T + p["0.bias"]
        h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + eps) * p["1.weight"] + p["1.bias"]
        return F.cross_entropy(torch.tanh(h) @ p["3.weight"].T + p["3.bias"], case.y)

    assert torch.allclose(dense_hessian(tr), hessian(ref)(tr.theta0), rtol=1e-10, atol=1e-10)
    v = torch.randn(tr.n_params, dtype=torch.float64)
    fd = FiniteDifferenceOfGradients().prepare(tr._chunk_fn(0), tr.theta0)[0](v[None])[0]
    assert torch.allclose(tr.hvp(v), fd, atol=1e-7)


def test_train_mode_dropout_is_refused_by_default():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3))
    case = mlp_case()
    with pytest.raises(ValueError, match="Dropout"):
        Objective(model, "cross_entropy", (case.x, case.y), mode="train")
    # eval mode is deterministic and allowed
    Objective(model, "cross_entropy", (case.x, case.y), mode="eval").loss()


def test_fixed_dropout_masks_make_a_deterministic_symmetric_operator():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3))
    case = mlp_case()
    ob = Objective(model, "cross_entropy", (case.x, case.y), mode="train", dropout="fixed", batch_size=8,
                   second_order="reverse", cache_graph=False)
    assert ob.loss() == ob.loss()
    v = torch.randn(ob.n_params, dtype=torch.float64)
    assert torch.equal(ob.hvp(v), ob.hvp(v))
    H = dense_hessian(ob)
    assert torch.allclose(H, H.T, atol=1e-12)
    eval_loss = Objective(model, "cross_entropy", (case.x, case.y)).loss()
    assert ob.loss() != pytest.approx(eval_loss)  # masks are really applied


def test_nan_loss_raises_a_clear_error():
    case = mlp_case()
    x = case.x.clone()
    x[3, 1] = float("nan")
    ob = Objective(case.model, case.loss, (x, case.y))
    with pytest.raises(NonFiniteLossError, match="not finite"):
        ob.loss()
    with pytest.raises(NonFiniteLossError):
        ob.hvp(torch.ones(ob.n_params, dtype=torch.float64))


@pytest.mark.parametrize("kwargs, match", [
    (dict(reduction="avg"), "reduction"),
    (dict(mode="test"), "mode"),
    (dict(batch_size=0), "batch_size"),
    (dict(dtype=torch.int64), "floating"),
    (dict(second_order="magic"), "second-order"),
])
def test_bad_options_are_rejected(kwargs, match):
    case = mlp_case()
    with pytest.raises(ValueError, match=match):
        Objective(case.model, case.loss, (case.x, case.y), **kwargs)


def test_bad_data_is_rejected():
    case = mlp_case()
    with pytest.raises(ValueError, match="disagree"):
        Objective(case.model, case.loss, (case.x, case.y[:-1]))
    with pytest.raises(ValueError, match="empty"):
        Objective(case.model, case.loss, (case.x[:0], case.y[:0]))
    with pytest.raises(ValueError, match="unknown loss"):
        Objective(case.model, "hinge", (case.x, case.y))
    ob = Objective(case.model, case.loss, (case.x, case.y))
    with pytest.raises(ValueError, match="shape"):
        ob.hvp(torch.zeros(ob.n_params + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        ob.loss(torch.zeros(3))


def test_float32_objective_and_with_dtype_agree_with_float64():
    case = mlp_case()
    ob = Objective(case.model, case.loss, (case.x, case.y))
    ob32 = ob.with_dtype(torch.float32)
    assert ob32.theta0.dtype == torch.float32
    assert ob32.loss() == pytest.approx(ob.loss(), rel=1e-6)


def test_counters_count_hvps_and_passes():
    case = mlp_case()
    ob = Objective(case.model, case.loss, (case.x, case.y))
    ob.hvp(torch.zeros(4, ob.n_params, dtype=torch.float64))
    ob.loss()
    assert ob.counters.hvp == 4 and ob.counters.loss_passes == 1 and ob.counters.graph_builds == 1


def test_a_torch_dataloader_is_materialized_once_in_its_order():
    from torch.utils.data import DataLoader, TensorDataset
    case = mlp_case()
    loader = DataLoader(TensorDataset(case.x, case.y), batch_size=6, shuffle=False)  # 6, 6, 6, 5
    ob = Objective(case.model, case.loss, loader)
    ref = Objective(case.model, case.loss, (case.x, case.y))
    assert len(ob.chunks) == 4 and ob.n_samples == 23
    assert ob.loss() == pytest.approx(ref.loss(), rel=1e-13)
    v = torch.randn(ob.n_params, dtype=torch.float64)
    assert torch.allclose(ob.hvp(v), ref.hvp(v), rtol=TOL, atol=TOL)


def test_dtype_none_keeps_the_models_float32():
    case = mlp_case()
    ob = Objective(case.model, case.loss, (case.x, case.y), dtype=None)
    assert ob.dtype == torch.float32 and ob.theta0.dtype == torch.float32
    assert ob.hvp(torch.ones(ob.n_params)).dtype == torch.float32
    assert ob.provenance()["dtype"] == "float32"


def test_tied_weights_move_together_in_value_hvp_and_scans():
    """A tensor registered under two names (weight tying) is one parameter: the loss, its HVP and
    functional evaluation at other points must all move both uses together."""
    torch.manual_seed(0)
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Tanh(), nn.Linear(4, 4, bias=False)).double()
    tied[2].weight = tied[0].weight  # one Parameter, two names
    x = torch.randn(7, 4, dtype=torch.float64)
    y = torch.randn(7, 4, dtype=torch.float64)
    ob = Objective(tied, "mse", (x, y))
    assert ob.space.names == ("0.weight",)

    def ref(t: torch.Tensor) -> torch.Tensor:
        W = t.reshape(4, 4)
        return F.mse_loss(torch.tanh(x @ W.T) @ W.T, y)

    H = hessian(ref)(ob.theta0)
    v = torch.randn(ob.n_params, dtype=torch.float64)
    assert ob.loss() == pytest.approx(float(ref(ob.theta0)), rel=1e-12)
    assert torch.allclose(ob.hvp(v), H @ v, rtol=TOL, atol=TOL)
    far = ob.theta0 + 0.3 * v
    loss_far, _ = ob.evaluate_many(far[None], vectorize=False)
    assert float(loss_far[0]) == pytest.approx(float(ref(far)), rel=1e-12)
