"""Directions, scans and interpolation."""

import numpy as np
import pytest
import torch

from qlandscape import (
    InterpolationResult,
    LandscapeScan,
    Objective,
    ParamSpace,
    interpolate,
    normalize_direction,
    orthogonalize,
    pca_directions,
    random_direction,
    scan_1d,
    scan_2d,
    symmetric_grid,
)

from .cases import cnn_case, least_squares, mlp_case


def _cnn_space():
    case = cnn_case()
    space = ParamSpace.from_module(case.model)
    return case, space, space.from_module_values(case.model, torch.float64)


def test_filter_normalization_gives_each_filter_its_weights_norm():
    case, space, theta = _cnn_space()
    d = random_direction(space, theta, normalization="filter", one_d="zero", seed=3)
    for name, sl, shape in space.slices():
        dp, tp = d[sl], theta[sl]
        if len(shape) >= 2:
            df, tf = dp.reshape(shape[0], -1), tp.reshape(shape[0], -1)
            assert torch.allclose(df.norm(dim=1), tf.norm(dim=1), rtol=1e-12)
        else:
            assert torch.all(dp == 0), f"{name}: 1-D parameters are not moved under one_d='zero'"


@pytest.mark.parametrize("one_d", ["filter", "layer", "keep"])
def test_one_dimensional_parameter_policies(one_d):
    case, space, theta = _cnn_space()
    raw = random_direction(space, theta, normalization="none", seed=4)
    d = normalize_direction(raw, theta, space, "filter", one_d)
    for _, sl, shape in space.slices():
        if len(shape) == 1:
            if one_d == "filter":
                assert torch.allclose(d[sl].abs(), theta[sl].abs())
            elif one_d == "layer":
                assert torch.allclose(d[sl].norm(), theta[sl].norm())
            else:
                assert torch.equal(d[sl], raw[sl])


def test_layer_model_and_unit_normalizations():
    case, space, theta = _cnn_space()
    raw = random_direction(space, theta, normalization="none", seed=5)
    layer = normalize_direction(raw, theta, space, "layer")
    for _, sl, _ in space.slices():
        assert torch.allclose(layer[sl].norm(), theta[sl].norm())
    assert torch.allclose(normalize_direction(raw, theta, space, "model").norm(), theta.norm())
    assert torch.allclose(normalize_direction(raw, theta, space, "unit").norm(), torch.tensor(1.0).double())
    with pytest.raises(ValueError, match="normalization"):
        normalize_direction(raw, theta, space, "batch")


def test_random_directions_are_deterministic_given_a_seed():
    case, space, theta = _cnn_space()
    assert torch.equal(random_direction(space, theta, seed=7), random_direction(space, theta, seed=7))
    assert not torch.equal(random_direction(space, theta, seed=7), random_direction(space, theta, seed=8))


def test_orthogonalize_removes_the_component_and_keeps_the_norm():
    a, b = torch.randn(50).double(), torch.randn(50).double()
    c = orthogonalize(b, a)
    assert abs(float(torch.dot(c, a))) < 1e-12 and torch.allclose(c.norm(), b.norm())


def test_symmetric_grid_has_an_exact_zero_centre():
    for n in (3, 25, 51, 101):
        g = symmetric_grid(-0.7, 0.7, n)
        assert g[n // 2] == 0.0 and g[0] == pytest.approx(-0.7) and g[-1] == pytest.approx(0.7)
        assert np.allclose(np.diff(g), 1.4 / (n - 1))
    with pytest.raises(ValueError):
        symmetric_grid(1.0, -1.0, 5)


def _objective():
    case = mlp_case()
    return Objective(case.model, case.loss, (case.x, case.y), batch_size=10)


def test_scan_centre_equals_the_loss_exactly():
    ob = _objective()
    d1 = random_direction(ob.space, ob.theta0, seed=1)
    d2 = random_direction(ob.space, ob.theta0, seed=2)
    s2 = scan_2d(ob, d1, d2, n_points=7, progress=False)
    s1 = scan_1d(ob, d1, n_points=9, progress=False)
    assert s2.loss[3, 3] == ob.loss() == s2.center_loss
    assert s1.loss[4] == ob.loss()
    assert s2.loss.shape == (7, 7) and s1.loss.shape == (9,)


def test_vectorized_scan_equals_the_naive_loop():
    ob = _objective()
    d1 = random_direction(ob.space, ob.theta0, seed=1)
    d2 = random_direction(ob.space, ob.theta0, seed=2)
    fast = scan_2d(ob, d1, d2, n_points=(5, 4), span=((-1, 1), (-0.5, 2)), vectorize=True, progress=False)
    slow = scan_2d(ob, d1, d2, n_points=(5, 4), span=((-1, 1), (-0.5, 2)), vectorize=False, progress=False)
    naive = np.array([[ob.loss(ob.theta0 + a * d1 + b * d2) for b in slow.betas] for a in slow.alphas])
    assert np.allclose(fast.loss, naive, rtol=1e-12)
    assert np.allclose(slow.loss, naive, rtol=1e-12)
    assert np.allclose(fast.metric, slow.metric)


def test_scan_grid_is_not_sheared():
    # least squares: L(theta0 + a d1 + b d2) is an exact quadratic in (a, b)
    model, X, y, H = least_squares(dim=5)
    ob = Objective(model, "mse", (X, y))
    g = torch.Generator().manual_seed(0)
    d1, d2 = torch.randn(5, generator=g).double(), torch.randn(5, generator=g).double()
    s = scan_2d(ob, d1, d2, span=((-2, 2), (-1, 1)), n_points=(5, 3), progress=False)
    grad = ob.gradient()
    L0 = ob.loss()
    for i, a in enumerate(s.alphas):
        for j, b in enumerate(s.betas):
            v = a * d1 + b * d2
            expect = L0 + float(grad @ v) + 0.5 * float(v @ H @ v)
            assert s.loss[i, j] == pytest.approx(expect, rel=1e-10)


def test_float32_fast_path_is_close_to_float64():
    ob = _objective()
    d1 = random_direction(ob.space, ob.theta0, seed=1)
    s64 = scan_1d(ob, d1, n_points=5, progress=False)
    s32 = scan_1d(ob, d1, n_points=5, float32=True, progress=False)
    assert np.allclose(s32.loss, s64.loss, rtol=1e-5)
    assert s32.provenance["dtype"] == "float32"


def test_scan_rejects_bad_directions():
    ob = _objective()
    with pytest.raises(ValueError, match="shape"):
        scan_1d(ob, torch.zeros(3), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        scan_1d(ob, torch.full((ob.n_params,), float("nan")), progress=False)


def test_interpolation_endpoints_and_barrier():
    case = mlp_case()
    ob = Objective(case.model, case.loss, (case.x, case.y))
    a = ob.theta0
    b = a + 0.8 * random_direction(ob.space, a, seed=9, normalization="model")
    res = interpolate(ob, a, b, n_points=11, extend=0.2, progress=False)
    assert res.loss_a == ob.loss(a) and res.loss_b == ob.loss(b)
    assert res.t[0] == pytest.approx(-0.2) and res.t[-1] == pytest.approx(1.2)
    inside = (res.t >= 0) & (res.t <= 1)
    excess = res.loss[inside] - ((1 - res.t[inside]) * res.loss_a + res.t[inside] * res.loss_b)
    assert res.barrier == pytest.approx(excess.max())
    assert 0 <= res.barrier_t <= 1


def test_interpolation_barrier_of_a_quadratic_is_closed_form():
    # L(t) on a line through a convex quadratic lies below the chord: barrier = 0 at endpoints
    model, X, y, H = least_squares(dim=4)
    ob = Objective(model, "mse", (X, y))
    a = torch.zeros(4, dtype=torch.float64)
    b = torch.ones(4, dtype=torch.float64)
    res = interpolate(ob, a, b, n_points=5, progress=False)
    # L(t) - chord = -0.5 t (1 - t) (b - a)^T H (b - a): max over the grid is 0 (endpoints)
    assert res.barrier == pytest.approx(0.0, abs=1e-12)
    curv = float((b - a) @ H @ (b - a))
    assert res.loss[2] - 0.5 * (res.loss_a + res.loss_b) == pytest.approx(-0.5 * 0.25 * curv, rel=1e-10)


def test_pca_directions_recover_a_planar_trajectory():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(30, 2, generator=g, dtype=torch.float64))
    t = torch.linspace(0, 1, 20, dtype=torch.float64)
    coeffs = torch.stack([3 * (1 - t), 0.5 * torch.sin(6 * t)], dim=1)
    traj = coeffs @ basis.T + 1.0
    pca = pca_directions(traj, k=2)
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)
    # the principal plane equals the generating plane
    P = torch.as_tensor(pca.directions)
    assert torch.allclose(P @ P.T, torch.eye(2, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.matrix_norm(basis - P.T @ (P @ basis)) < 1e-10
    assert np.allclose(pca.coords[-1], 0.0)  # centred at the final checkpoint
    with pytest.raises(ValueError, match="checkpoints"):
        pca_directions(traj[:2], k=2)


def test_scan_results_round_trip_and_plot(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from qlandscape.landscape.plot import save_figure
    ob = _objective()
    d1 = random_direction(ob.space, ob.theta0, seed=1)
    d2 = random_direction(ob.space, ob.theta0, seed=2)
    s = scan_2d(ob, d1, d2, n_points=5, info={"kind": "filter"}, progress=False)
    back = LandscapeScan.load(s.save(tmp_path / "scan"))
    assert np.array_equal(back.loss, s.loss) and back.info == {"kind": "filter"}
    save_figure(s.plot(), str(tmp_path / "contour.png"))
    save_figure(s.plot_surface(), str(tmp_path / "surface.png"))
    save_figure(scan_1d(ob, d1, n_points=5, progress=False).plot(), str(tmp_path / "line.png"))
    res = interpolate(ob, ob.theta0, ob.theta0 + d1, n_points=5, progress=False)
    assert InterpolationResult.load(res.save(tmp_path / "interp")).barrier == res.barrier
    save_figure(res.plot(), str(tmp_path / "interp.png"))
    for f in ("contour", "surface", "line", "interp"):
        assert (tmp_path / f"{f}.png").stat().st_size > 1000


def test_pca_spans_cover_the_trajectory_and_the_centre_with_the_margin():
    rng = np.random.default_rng(0)
    traj = np.cumsum(rng.standard_normal((12, 30)), axis=0)
    pca = pca_directions(traj, k=2)
    spans = pca.spans(margin=0.25)
    for (lo, hi), c in zip(spans, pca.coords.T):
        inner_lo, inner_hi = min(c.min(), 0.0), max(c.max(), 0.0)
        extent = inner_hi - inner_lo
        assert lo == pytest.approx(inner_lo - 0.25 * extent, rel=1e-12)
        assert hi == pytest.approx(inner_hi + 0.25 * extent, rel=1e-12)
    assert pca.spans(margin=0.0)[0] == (min(pca.coords[:, 0].min(), 0.0), max(pca.coords[:, 0].max(), 0.0))
    with pytest.raises(ValueError, match="margin"):
        pca.spans(margin=-0.1)


def test_pca_plane_centred_at_a_chosen_checkpoint():
    """center=i (the lowest-train-loss checkpoint) makes checkpoint i the plane's origin: its coordinates
    are 0, the others are their offsets from it projected on the directions; bad indices raise."""
    rng = np.random.default_rng(0)
    traj = rng.normal(size=(7, 12))
    pca = pca_directions(traj, k=2, center=3)
    np.testing.assert_array_equal(pca.center, traj[3])
    np.testing.assert_allclose(pca.coords[3], 0.0, atol=1e-12)
    np.testing.assert_allclose(pca.coords, (traj - traj[3]) @ pca.directions.T, atol=1e-12)
    assert pca.centering == "checkpoint 3"
    last = pca_directions(traj, k=2, center=-1)
    np.testing.assert_array_equal(last.coords, pca_directions(traj, k=2).coords)
    for bad in (7, -8, True, 2.0):
        with pytest.raises(ValueError, match="center"):
            pca_directions(traj, k=2, center=bad)
