"""Eigenpairs, trace and spectral density against closed-form spectra and dense Hessians."""

import math

import numpy as np
import pytest
import torch

from qlandscape import (
    DensityResult,
    EigResult,
    MatrixOperator,
    Objective,
    TraceResult,
    dense_hessian,
    hessian_eigs,
    hessian_trace,
    lanczos,
    spectral_density,
)
from qlandscape.curvature import estimator_generator

from .cases import least_squares, mlp_case, spectrum_matrix

SPECTRUM = torch.cat([torch.tensor([50.0, 20.0, 10.0, -5.0]), torch.linspace(-1, 1, 196)]).double()


def test_lanczos_top_eigenvalues_of_a_known_spectrum():
    A = spectrum_matrix(SPECTRUM)
    r = lanczos(A, k=3, tol=1e-10, progress=False)
    assert r.converged
    # the gap-based bound certifies |theta - lambda| <= tol * scale = 5e-9
    assert np.allclose(r.eigenvalues, [50, 20, 10], rtol=0, atol=5e-9)
    assert np.all(np.abs(r.eigenvalues - [50, 20, 10]) <= r.error_bounds + 1e-12)
    # eigenvectors: A y = lambda y to the reported residual
    Y = torch.as_tensor(r.eigenvectors)
    res = (Y @ A - torch.as_tensor(r.eigenvalues)[:, None] * Y).norm(dim=1).numpy()
    assert np.allclose(res, r.residuals, atol=1e-9)


def test_which_is_algebraic_not_magnitude():
    # largest magnitude is -50, largest algebraic is 3
    A = spectrum_matrix(torch.tensor([-50.0, 3.0, 2.0, 1.0, 0.5, -0.5, -1.0, -2.0]))
    assert lanczos(A, k=1, which="largest", tol=1e-12, progress=False).eigenvalues[0] == pytest.approx(3.0, abs=1e-9)
    assert lanczos(A, k=1, which="smallest", tol=1e-12, progress=False).eigenvalues[0] == pytest.approx(-50.0, abs=1e-9)
    both = lanczos(A, k=2, which="both", tol=1e-12, progress=False)
    assert np.allclose(both.eigenvalues, [3.0, 2.0, -2.0, -50.0], atol=1e-9)
    assert lanczos(A, k=1, which="LA", progress=False).which == "largest"


def test_repeated_eigenvalues_are_resolved():
    A = torch.diag(torch.tensor([3.0, 3.0, 3.0, 1.0, 1.0, 0.5], dtype=torch.float64))
    r = lanczos(A, k=3, progress=False)
    assert np.allclose(r.eigenvalues, [3.0, 3.0, 3.0], atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e-8, 1e8])
def test_stopping_is_scale_invariant(scale):
    A = spectrum_matrix(SPECTRUM)
    base = lanczos(A, k=2, tol=1e-6, progress=False)
    r = lanczos(A * scale, k=2, tol=1e-6, progress=False)
    assert r.n_iter == base.n_iter
    assert np.allclose(r.eigenvalues / scale, [50, 20], rtol=1e-6)


def _not_at_minimum():
    """A random (untrained) MLP: an indefinite Hessian with negative eigenvalues."""
    case = mlp_case()
    ob = Objective(case.model, case.loss, (case.x, case.y), batch_size=6)
    H = dense_hessian(ob)
    return case, ob, torch.linalg.eigvalsh(H).numpy()


def test_mlp_eigenpairs_match_dense_eigvalsh_including_negative_curvature():
    case, ob, evals = _not_at_minimum()
    assert evals[0] < -1e-3  # genuinely indefinite
    top = lanczos(ob, k=3, tol=1e-10, progress=False)
    bottom = lanczos(ob, k=2, which="smallest", tol=1e-10, max_iter=ob.n_params, progress=False)
    scale = np.abs(evals).max()
    assert np.allclose(top.eigenvalues, evals[::-1][:3], atol=1e-8 * scale)
    assert np.allclose(bottom.eigenvalues, evals[:2][::-1], atol=1e-8 * scale)
    dense = hessian_eigs(ob, k=3)  # auto -> dense path for 57 parameters
    assert dense.method == "dense" and np.allclose(dense.eigenvalues, evals[::-1][:3], atol=1e-12)


def test_to_scipy_gives_scipy_eigsh_the_hessian():
    """HessianOperator.to_scipy() is a float64 scipy LinearOperator of the objective's Hessian: its matvec and
    matmat equal dense-Hessian products, scipy's eigsh on it finds the dense spectrum's ends (ARPACK with tol
    1e-12: 1e-8 relative), and float32 objectives are viewed in float64."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    from qlandscape import HessianOperator

    case, ob, evals = _not_at_minimum()
    H = dense_hessian(ob).numpy()
    op = HessianOperator(ob).to_scipy()
    assert isinstance(op, LinearOperator) and op.shape == (ob.n_params, ob.n_params) and op.dtype == np.float64
    rng = np.random.default_rng(0)
    v, V = rng.normal(size=ob.n_params), rng.normal(size=(ob.n_params, 3))
    np.testing.assert_allclose(op @ v, H @ v, rtol=1e-10, atol=1e-12 * np.abs(H).max())
    np.testing.assert_allclose(op @ V, H @ V, rtol=1e-10, atol=1e-12 * np.abs(H).max())
    scale = np.abs(evals).max()
    top = np.sort(eigsh(op, k=3, which="LA", tol=1e-12, return_eigenvectors=False))[::-1]
    bottom = np.sort(eigsh(op, k=2, which="SA", tol=1e-12, return_eigenvectors=False))
    np.testing.assert_allclose(top, evals[::-1][:3], atol=1e-8 * scale)
    np.testing.assert_allclose(bottom, evals[:2], atol=1e-8 * scale)
    np.testing.assert_allclose(top, hessian_eigs(ob, k=3).eigenvalues, atol=1e-8 * scale)
    ob32 = Objective(case.model, case.loss, (case.x, case.y), dtype=torch.float32)
    op32 = HessianOperator(ob32).to_scipy()
    assert op32.dtype == np.float64 and (op32 @ v).dtype == np.float64
    np.testing.assert_allclose(op32 @ v, H @ v, rtol=1e-3, atol=1e-4 * np.abs(H).max())  # float32 HVPs


def test_negated_loss_flips_the_spectrum():
    case = mlp_case()

    def neg_ce(out, y):
        return -torch.nn.functional.cross_entropy(out, y, reduction="none")

    ob = Objective(case.model, case.loss, (case.x, case.y))
    neg = Objective(case.model, neg_ce, (case.x, case.y))
    top = lanczos(ob, k=1, tol=1e-10, progress=False).eigenvalues[0]
    bottom = lanczos(ob, k=1, which="smallest", tol=1e-10, max_iter=ob.n_params, progress=False).eigenvalues[0]
    neg_top = lanczos(neg, k=1, tol=1e-10, max_iter=ob.n_params, progress=False).eigenvalues[0]
    assert neg_top == pytest.approx(-bottom, rel=1e-8)
    assert neg_top != pytest.approx(-top, rel=1e-3)  # not the magnitude of the top one


def test_loss_scaled_by_1e_minus_8_keeps_relative_accuracy():
    case = mlp_case()

    def tiny_ce(out, y):
        return 1e-8 * torch.nn.functional.cross_entropy(out, y, reduction="none")

    ob = Objective(case.model, case.loss, (case.x, case.y))
    tiny = Objective(case.model, tiny_ce, (case.x, case.y))
    r, rt = lanczos(ob, k=2, tol=1e-8, progress=False), lanczos(tiny, k=2, tol=1e-8, progress=False)
    assert rt.n_iter == r.n_iter
    assert np.allclose(rt.eigenvalues, 1e-8 * r.eigenvalues, rtol=1e-7)
    t, tt = hessian_trace(ob, progress=False), hessian_trace(tiny, progress=False)
    assert tt.estimate == pytest.approx(1e-8 * t.estimate, rel=1e-10)
    d = spectral_density(tiny, n_probes=2, n_steps=20, progress=False)
    assert d.sigma > 0 and d.lambda_max == pytest.approx(1e-8 * r.eigenvalues[0], rel=1e-6)


def test_least_squares_objective_spectrum_is_closed_form():
    model, X, y, H = least_squares(dim=12)
    ob = Objective(model, "mse", (X, y), batch_size=9)
    expected = torch.linalg.eigvalsh(H).numpy()[::-1]
    r = lanczos(ob, k=4, tol=1e-12, progress=False)
    assert np.allclose(r.eigenvalues, expected[:4], rtol=1e-10)


def test_bad_eigen_requests_raise():
    A = spectrum_matrix(torch.arange(1.0, 6.0))
    with pytest.raises(ValueError, match="only 5 parameters"):
        lanczos(A, k=6, progress=False)
    with pytest.raises(ValueError, match="only 5"):
        lanczos(A, k=3, which="both", progress=False)
    with pytest.raises(ValueError, match="which"):
        lanczos(A, k=1, which="LM", progress=False)
    with pytest.raises(ValueError, match="positive"):
        lanczos(A, k=0, progress=False)
    with pytest.raises(ValueError, match="method"):
        hessian_eigs(A, k=1, method="arpack")
    with pytest.raises(ValueError, match="symmetric"):
        MatrixOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))


def test_trace_methods_against_exact_trace():
    A = spectrum_matrix(SPECTRUM, seed=1)
    exact = float(SPECTRUM.sum())
    ex = hessian_trace(A, method="exact", progress=False)
    assert ex.estimate == pytest.approx(exact, rel=1e-12) and ex.stderr == 0.0
    hut = hessian_trace(A, method="hutchinson", n_probes=400, progress=False)
    pp = hessian_trace(A, method="hutch++", n_probes=60, progress=False)
    # unbiased estimators: within 4 standard errors (a fixed seed makes this deterministic)
    assert abs(hut.estimate - exact) < 4 * hut.stderr
    assert abs(pp.estimate - exact) < 4 * pp.stderr + 1e-9
    # Hutch++ deflates the outliers: at an equal budget of 60 HVPs its stderr is far smaller
    hut60 = hessian_trace(A, method="hutchinson", n_probes=60, progress=False)
    assert pp.stderr < 0.5 * hut60.stderr
    assert hut.n_hvp == 400 and pp.n_hvp == 60


def test_trace_hutchinson_stderr_matches_its_theory():
    # Var[z^T A z] = 2 (||A||_F^2 - sum_i A_ii^2) for Rademacher z
    A = spectrum_matrix(SPECTRUM, seed=2)
    var = 2 * (float((A ** 2).sum()) - float((torch.diagonal(A) ** 2).sum()))
    r = hessian_trace(A, method="hutchinson", n_probes=2000, block_size=500, progress=False)
    assert r.stderr == pytest.approx(math.sqrt(var / 2000), rel=0.1)


def test_trace_of_mlp_hessian_equals_dense_diagonal_sum():
    case, ob, evals = _not_at_minimum()
    r = hessian_trace(ob, progress=False)  # auto -> exact for 57 parameters
    assert r.method == "exact" and r.estimate == pytest.approx(float(evals.sum()), rel=1e-10)


def test_trace_rtol_stops_early():
    A = spectrum_matrix(SPECTRUM, seed=3)
    r = hessian_trace(A, method="hutchinson", n_probes=1000, block_size=10, rtol=0.05, progress=False)
    assert r.n_probes < 1000 and r.stderr <= 0.05 * abs(r.estimate)


def test_slq_with_full_krylov_space_is_an_exact_quadrature():
    evals = torch.tensor([-2.0, -0.5, 0.1, 0.3, 1.0, 4.0, 7.0, 9.0]).double()
    A = spectrum_matrix(evals, seed=4)
    d = spectral_density(A, n_probes=50, n_steps=8, progress=False)
    # every node of a full-length probe is an eigenvalue; weights are a probability vector
    assert np.all(d.lengths == 8)
    for p in range(50):
        assert np.allclose(np.sort(d.nodes[p]), evals.numpy(), atol=1e-9)
    assert np.allclose(d.weights.sum(axis=1), 1.0, atol=1e-12)
    # per-probe quadrature of f = x^2 equals q0^T A^2 q0 exactly; the mean approximates tr(A^2)/n
    assert d.lambda_min == pytest.approx(-2.0, abs=1e-9) and d.lambda_max == pytest.approx(9.0, abs=1e-9)
    est = d.expectation(lambda x: x ** 2)
    assert est == pytest.approx(float((evals ** 2).mean()), rel=0.15)
    # smoothed density integrates to 1
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-3)


def test_slq_moments_match_exact_moments_of_the_spectrum():
    # For steps >= 2, Gauss quadrature is exact for polynomials of degree <= 2*steps-1, so
    # sum_j w_j theta_j^k == q0^T A^k q0 exactly for each probe (k <= 3 with 2 steps).
    A = spectrum_matrix(SPECTRUM, seed=5)
    d = spectral_density(A, n_probes=4, n_steps=2, progress=False)
    gen = estimator_generator(0, "slq")  # SLQ's own stream for seed=0
    Z = torch.randint(0, 2, (4, A.shape[0]), generator=gen).double() * 2 - 1
    q0 = Z / math.sqrt(A.shape[0])
    for k in (1, 2, 3):
        exact = (q0 @ torch.linalg.matrix_power(A, k) * q0).sum(dim=1).numpy()
        quad = np.sum(d.weights * d.nodes ** k, axis=1)
        assert np.allclose(quad, exact, rtol=1e-10)


def test_slq_on_mlp_brackets_the_dense_spectrum():
    case, ob, evals = _not_at_minimum()
    d = spectral_density(ob, n_probes=3, n_steps=ob.n_params, hvp_dtype=None, progress=False)  # exact: float64
    assert d.lambda_min == pytest.approx(evals[0], abs=1e-8)
    assert d.lambda_max == pytest.approx(evals[-1], abs=1e-8)
    assert d.n_hvp <= 3 * ob.n_params


def test_results_round_trip_through_npz_and_json(tmp_path):
    A = spectrum_matrix(SPECTRUM)
    for res, cls in [(lanczos(A, k=2, progress=False), EigResult),
                     (hessian_trace(A, method="hutchinson", n_probes=10, progress=False), TraceResult),
                     (spectral_density(A, n_probes=2, n_steps=10, progress=False), DensityResult)]:
        base = res.save(tmp_path / cls.__name__)
        back = cls.load(base)
        for f in res.__dataclass_fields__:
            a, b = getattr(res, f), getattr(back, f)
            if isinstance(a, np.ndarray):
                assert np.array_equal(a, b, equal_nan=True)
            else:
                assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
    with pytest.raises(ValueError, match="holds a"):
        TraceResult.load(tmp_path / "EigResult")


def test_result_plots_render(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from qlandscape.landscape.plot import save_figure
    A = spectrum_matrix(SPECTRUM)
    save_figure(lanczos(A, k=2, progress=False).plot(), str(tmp_path / "ritz.png"))
    save_figure(spectral_density(A, n_probes=2, n_steps=10, progress=False).plot(), str(tmp_path / "dos.png"))
    assert (tmp_path / "ritz.png").stat().st_size > 1000 and (tmp_path / "dos.png").stat().st_size > 1000


def test_invariant_subspace_at_the_iteration_limit_is_not_called_converged():
    # diag(3,3,1,1): from a random start the Krylov space is invariant after 2 steps, holding
    # one copy of each eigenvalue; with max_iter=2 the second 3 was never seen
    A = torch.diag(torch.tensor([3.0, 3.0, 1.0, 1.0], dtype=torch.float64))
    r = lanczos(A, k=2, max_iter=2, progress=False)
    assert not r.converged
    assert lanczos(A, k=2, progress=False).eigenvalues.tolist() == pytest.approx([3.0, 3.0])
