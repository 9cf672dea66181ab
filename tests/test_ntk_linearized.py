"""Kernel distance (stable form), the linearized model and kernel regression (qlandscape.ntk)."""

from __future__ import annotations

import copy
import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch
from torch import nn

from qlandscape.adapter import Capabilities, CapabilityError, ModuleInfo, copy_module
from qlandscape.models import MLP
from qlandscape.ntk.distance import (
    KernelDistanceTrace,
    KernelDistanceTracker,
    distances_to,
    kernel_distance,
    kernel_distance_matrix,
)
from qlandscape.ntk.linearized import KernelRegressionResult, LinearizedModel, kernel_regression
from qlandscape.objective import Objective
from qlandscape.train import train


def _psd(rng: np.random.Generator, n: int = 6, rank: int | None = None) -> np.ndarray:
    A = rng.standard_normal((n, rank or n))
    return A @ A.T


def _naive64(K1: np.ndarray, K2: np.ndarray) -> float:
    K1, K2 = np.asarray(K1, np.float64), np.asarray(K2, np.float64)
    return 1.0 - float(np.sum(K1 * K2)) / (np.linalg.norm(K1) * np.linalg.norm(K2))


def _exact(K1: np.ndarray, K2: np.ndarray) -> float:
    """1 - cos in 60-digit decimal arithmetic (float entries convert to Decimal exactly)."""
    getcontext().prec = 60
    a = [Decimal(float(v)) for v in np.ravel(K1)]
    b = [Decimal(float(v)) for v in np.ravel(K2)]
    ab = sum(x * y for x, y in zip(a, b))
    aa = sum(x * x for x in a)
    bb = sum(y * y for y in b)
    return float(1 - ab / (aa * bb).sqrt())


# ---------------------------------------------------------------------- kernel distance
def test_distance_identity_and_scale_invariance():
    rng = np.random.default_rng(0)
    K = _psd(rng)
    assert kernel_distance(K, K) == 0.0
    for c in (1e-3, 0.5, 7.0, 1e4):
        assert abs(kernel_distance(K, c * K)) <= 1e-15
    assert abs(kernel_distance(torch.tensor(K), torch.tensor(3.0 * K, dtype=torch.float32))) <= 1e-7


def test_distance_range_and_equals_naive_float64():
    rng = np.random.default_rng(1)
    for _ in range(20):
        K1, K2 = _psd(rng, 7), _psd(rng, 7, rank=3)
        s = kernel_distance(K1, K2)
        assert 0.0 <= s <= 1.0
        assert abs(s - _naive64(K1, K2)) <= 1e-12
    K = _psd(rng)
    assert kernel_distance(K, -K) == pytest.approx(2.0, abs=1e-15)  # general matrices: [0, 2]


def test_distance_stable_for_close_float32_kernels():
    rng = np.random.default_rng(2)
    n = 12
    K1 = _psd(rng, n).astype(np.float32)
    v = rng.standard_normal((n, 1))
    K2 = (K1 + 3e-2 * (v @ v.T)).astype(np.float32)  # small PSD perturbation, S ~ 1e-4
    exact = _exact(K1, K2)
    assert 1e-5 < exact < 1e-3
    stable = kernel_distance(torch.from_numpy(K1), torch.from_numpy(K2))
    assert abs(stable - exact) <= 1e-10 * exact
    # the naive form in float32 is far off (relative error of order eps32 / S)
    t1, t2 = torch.from_numpy(K1), torch.from_numpy(K2)
    naive32 = float(1 - (t1 * t2).sum() / (t1.norm() * t2.norm()))
    assert abs(naive32 - exact) > 1e-5 * exact  # measured 0.2% here (eps32 / S ~ 4e-3)


def test_distance_matrix_and_distances_to():
    rng = np.random.default_rng(3)
    Ks = [_psd(rng, 5) for _ in range(4)]
    D = kernel_distance_matrix(Ks)
    assert D.shape == (4, 4)
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    for i in range(4):
        for j in range(4):
            assert D[i, j] == pytest.approx(kernel_distance(Ks[i], Ks[j]), abs=1e-15)
    np.testing.assert_allclose(distances_to(Ks[-1], Ks), D[:, -1], atol=1e-15)


def test_tracker_matches_direct_calls(tmp_path):
    rng = np.random.default_rng(4)
    Ks = [_psd(rng, 5) for _ in range(5)]
    times = [0.0, 1.0, 2.0, 4.0, 7.0]
    tr = KernelDistanceTracker()
    for K, t in zip(Ks, times):
        tr.update(torch.tensor(K), t)
    assert len(tr) == 5
    np.testing.assert_allclose(tr.to_initial, [kernel_distance(Ks[0], K) for K in Ks], atol=1e-15)
    assert math.isnan(tr.to_previous[0]) and math.isnan(tr.velocity[0])
    for k in range(1, 5):
        s = kernel_distance(Ks[k - 1], Ks[k])
        assert tr.to_previous[k] == pytest.approx(s, abs=1e-15)
        assert tr.velocity[k] == pytest.approx(s / (times[k] - times[k - 1]), abs=1e-15)
    assert np.all(np.isnan(tr.to_reference))
    # second pass against the final kernel
    tr2 = KernelDistanceTracker(reference=Ks[-1])
    for K, t in zip(Ks, times):
        tr2.update(K, t)
    np.testing.assert_allclose(tr2.to_reference, distances_to(Ks[-1], Ks), atol=1e-15)
    trace = tr2.result()
    loaded = KernelDistanceTrace.load(trace.save(tmp_path / "trace"))
    np.testing.assert_array_equal(loaded.to_reference, trace.to_reference)
    with pytest.raises(ValueError, match="increase"):
        tr.update(Ks[0], 7.0)
    with pytest.raises(ValueError, match="shape"):
        tr.update(np.eye(3), 8.0)


@pytest.mark.parametrize("K1, K2, match", [
    (np.eye(3), np.eye(4), "shape"),
    (np.ones((3, 4)), np.ones((3, 4)), "square"),
    (np.ones(3), np.ones(3), "2-D"),
    (np.zeros((3, 3)), np.eye(3), "norm"),
    (np.full((2, 2), np.nan), np.eye(2), "non-finite"),
    (np.eye(2), np.diag([1.0, np.inf]), "non-finite"),
])
def test_distance_bad_inputs(K1, K2, match):
    with pytest.raises(ValueError, match=match):
        kernel_distance(K1, K2)


def test_distance_matrix_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        kernel_distance_matrix([])
    with pytest.raises(ValueError, match=r"kernels\[1\]"):
        kernel_distance_matrix([np.eye(3), np.eye(2)])


# ---------------------------------------------------------------------- linearized model
def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MLP(4, (8, 8), 3).double()


def _data(seed: int = 0, n: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_linearized_equals_network_at_delta_zero():
    m = _mlp()
    x, _ = _data()
    before = copy.deepcopy(m.state_dict())
    lin = LinearizedModel(m)
    assert [n for n, _ in lin.named_parameters()] == ["delta"]
    assert lin.delta.shape == (lin.n_params,) == (sum(p.numel() for p in m.parameters()),)
    assert torch.allclose(lin(x), m(x), rtol=0, atol=1e-14)
    torch.testing.assert_close(lin.theta, _flat(m), rtol=0, atol=0)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_linearized_equals_explicit_jacobian_and_is_second_order():
    m = _mlp(1)
    x, _ = _data(1, n=5)
    lin = LinearizedModel(m)
    theta_t = lin.theta_t.clone()
    J = torch.autograd.functional.jacobian(lambda th: lin.network_output(x, th), theta_t)  # (B, C, P)
    g = torch.Generator().manual_seed(7)
    d = torch.randn(lin.n_params, generator=g, dtype=torch.float64)
    d /= d.norm()
    with torch.no_grad():
        lin.delta.copy_(0.3 * d)
    expected = m(x) + torch.einsum("bcp,p->bc", J, 0.3 * d)
    assert torch.allclose(lin(x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(lin.theta, theta_t + 0.3 * d, rtol=0, atol=1e-15)
    errs = []
    for h in (1e-1, 5e-2, 2.5e-2):
        with torch.no_grad():
            lin.delta.copy_(h * d)
            errs.append(float((lin.network_output(x, theta_t + h * d) - lin(x)).abs().max()))
    for a, b in zip(errs, errs[1:]):
        assert 0.2 <= b / a <= 0.3  # O(h^2)


def test_linearized_trains_with_train_and_leaves_original_alone():
    m = _mlp(2)
    x, y = _data(2)
    before = _flat(m).clone()
    lin = LinearizedModel(m)
    trained, res = train(lin, (x, y), epochs=3, lr=0.1, batch_size=8, progress=False)
    assert isinstance(trained, LinearizedModel) and trained is not lin
    assert res.train_loss[-1] < res.train_loss[0]
    assert res.param_names == ["delta"] and res.trajectory.shape == (4, lin.n_params)
    assert float(trained.delta.detach().norm()) > 0
    assert float(lin.delta.detach().abs().max()) == 0.0  # train() works on a copy
    torch.testing.assert_close(_flat(m), before, rtol=0, atol=0)
    torch.testing.assert_close(trained.theta_t, before, rtol=0, atol=0)
    # the engine's Objective sees one parameter; its gradient equals autograd through the module
    obj = Objective(trained, "cross_entropy", (x, y))
    grad = obj.gradient(obj.theta0)
    trained.zero_grad()
    nn.functional.cross_entropy(trained(x), y).backward()
    torch.testing.assert_close(grad, trained.delta.grad, rtol=1e-10, atol=1e-12)
    assert copy_module(trained).adapter.model is not trained.adapter.model


def test_linearized_float32_model_in_float64_objective():
    torch.manual_seed(3)
    m = MLP(4, (6,), 3)
    x, y = _data(3)
    lin = LinearizedModel(m)
    out = lin(x.float())
    assert out.dtype == torch.float32
    assert torch.allclose(out, m(x.float()), atol=1e-6)
    loss64, _ = Objective(lin, "cross_entropy", (x, y), dtype=torch.float64).evaluate()
    m64 = copy.deepcopy(m).double()
    assert loss64 == pytest.approx(float(nn.functional.cross_entropy(m64(x), y).detach()), rel=1e-12)


def test_linearized_batchnorm_uses_frozen_statistics():
    torch.manual_seed(4)
    m = MLP(4, (8,), 3, batchnorm=True).double()
    x, _ = _data(4)
    m.train()
    m(x)  # move running statistics away from their init
    m.eval()
    lin = LinearizedModel(m)
    lin.train()
    assert torch.allclose(lin(x), m(x), rtol=0, atol=1e-14)
    assert torch.allclose(lin(x[:3]), m(x[:3]), rtol=0, atol=1e-14)  # per-sample: eval-mode BatchNorm


def test_linearized_hessian_is_gauss_newton():
    """The loss Hessian of a linearized model is J^T H_out J exactly, by both engine HVP routes."""
    m = _mlp(5)
    x, y = _data(5, n=6)
    lin = LinearizedModel(m)
    J = torch.autograd.functional.jacobian(lambda th: lin.network_output(x, th), lin.theta_t.clone())  # (B, C, P)
    out = m(x).detach()
    H_out = torch.autograd.functional.hessian(lambda o: nn.functional.cross_entropy(o, y), out)  # (B, C, B, C)
    v = torch.randn(lin.n_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.einsum("bcp,bcBC,BCq,q->p", J, H_out, J, v)
    for route in ("reverse", "forward"):
        hv = Objective(lin, "cross_entropy", (x, y), second_order=route).hvp(v)
        torch.testing.assert_close(hv, expected, rtol=1e-10, atol=1e-12)


class _NoTorchFunc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x)

    def qlandscape_module_info(self) -> ModuleInfo:
        return ModuleInfo(Capabilities(autograd_order=1, torch_func=False, notes=("fake adjoint layer",)))


def test_linearized_requires_torch_func():
    with pytest.raises(CapabilityError, match="fake adjoint layer"):
        LinearizedModel(nn.Sequential(nn.Linear(2, 2), _NoTorchFunc()))


# ---------------------------------------------------------------------- kernel regression
def _linear_problem(seed: int = 0, N: int = 12, M: int = 5, d: int = 20, C: int = 3):
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((N, d)), rng.standard_normal((M, d))
    y, yt = rng.integers(0, C, N), rng.integers(0, C, M)
    return X, Xt, y, yt


def test_kernel_regression_linear_kernel_matches_least_squares(tmp_path):
    X, Xt, y, yt = _linear_problem()
    N, C = X.shape[0], 3
    Y = np.eye(C)[y]
    K, Kx = X @ X.T, Xt @ X.T
    res = kernel_regression(K, y, Kx, targets="one_hot", jitter=0.0, y_test=yt)
    # N < d: min-norm least squares W = pinv(X) Y, predictions Xt W
    W = np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(res.predictions, Xt @ W, rtol=0, atol=1e-9)
    assert res.jitter == 0.0 and res.form == "traced" and res.n_classes == C
    assert res.accuracy == pytest.approx(np.mean(np.argmax(Xt @ W, 1) == yt))
    # ridge by hand with the same jitter
    lam = 0.37
    res = kernel_regression(torch.tensor(K), torch.tensor(y), torch.tensor(Kx), targets="one_hot", jitter=lam)
    np.testing.assert_allclose(res.predictions, Kx @ np.linalg.solve(K + lam * np.eye(N), Y), rtol=0, atol=1e-9)
    assert res.relative_jitter == pytest.approx(lam / np.mean(np.diag(K)))
    # centered targets shift each prediction row by a constant: argmax unchanged
    cen = kernel_regression(K, y, Kx, jitter=lam)
    np.testing.assert_allclose(cen.predictions, Kx @ np.linalg.solve(K + lam * np.eye(N), Y - 1 / C), atol=1e-9)
    loaded = KernelRegressionResult.load(cen.save(tmp_path / "kr"))
    np.testing.assert_array_equal(loaded.predictions, cen.predictions)
    assert loaded.jitter == cen.jitter


def test_kernel_regression_full_form_equals_traced():
    X, Xt, y, yt = _linear_problem(1)
    C = 3
    K, Kx = X @ X.T, Xt @ X.T
    for targets in ("one_hot", "one_hot_centered"):
        traced = kernel_regression(K, y, Kx, targets=targets, jitter=1e-3, y_test=yt)
        full = kernel_regression(np.kron(K, np.eye(C)), y, np.kron(Kx, np.eye(C)), targets=targets,
                                 jitter=1e-3, y_test=yt)
        assert full.form == "full" and full.n_classes == C
        np.testing.assert_allclose(full.predictions, traced.predictions, rtol=0, atol=1e-10)
        assert full.accuracy == traced.accuracy


def test_kernel_regression_auto_jitter_on_singular_kernel():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((15, 4)) @ rng.standard_normal((4, 10))  # rank 4 < N = 15
    Xt = rng.standard_normal((6, 10))
    y = rng.integers(0, 3, 15)
    res = kernel_regression(X @ X.T, y, Xt @ X.T)
    assert res.jitter > 0 and res.relative_jitter > 0
    assert res.jitter == pytest.approx(res.relative_jitter * np.mean(np.diag(X @ X.T)))
    assert np.all(np.isfinite(res.predictions))
    # close to min-norm least squares (the jitter -> 0 limit), up to rounding amplified by 1 / jitter
    W = np.linalg.lstsq(X, np.eye(3)[y] - 1 / 3, rcond=None)[0]
    np.testing.assert_allclose(res.predictions, Xt @ W, rtol=0, atol=1e-2)
    # well-conditioned kernels get no jitter
    X2 = rng.standard_normal((8, 20))
    assert kernel_regression(X2 @ X2.T, y[:8], rng.standard_normal((2, 8)), n_classes=3).jitter == 0.0
    # an indefinite matrix fails even at the largest jitter tried, which the message names
    with pytest.raises(np.linalg.LinAlgError, match="jitter up to"):
        kernel_regression(np.diag([1.0, 1.0, 1.0, -2.0]), [0, 1, 0, 1], np.ones((1, 4)))


def test_kernel_regression_bad_inputs():
    K, Kx, y = np.eye(4), np.ones((2, 4)), np.array([0, 1, 2, 1])
    with pytest.raises(ValueError, match="neither"):
        kernel_regression(np.eye(5), y, np.ones((2, 5)))
    with pytest.raises(ValueError, match="columns"):
        kernel_regression(K, y, np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        kernel_regression(np.diag([1.0, np.nan, 1, 1]), y, Kx)
    with pytest.raises(ValueError, match="outside"):
        kernel_regression(K, y, Kx, n_classes=2)
    with pytest.raises(ValueError, match="outside"):
        kernel_regression(K, np.array([0, -1, 1, 1]), Kx)
    with pytest.raises(ValueError, match="y_test"):
        kernel_regression(K, y, Kx, y_test=[0, 1, 2])
    with pytest.raises(ValueError, match="symmetric"):
        kernel_regression(K + np.triu(np.ones((4, 4)), 1), y, Kx)
    with pytest.raises(ValueError, match="n_classes"):
        kernel_regression(np.eye(8), np.array([0, 1, 1, 0]), np.ones((2, 8)), n_classes=3)
    with pytest.raises(ValueError, match="jitter"):
        kernel_regression(K, y, Kx, jitter=-1.0)
    with pytest.raises(ValueError, match="integer"):
        kernel_regression(K, np.array([0.5, 1, 2, 1]), Kx)
