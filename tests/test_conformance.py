"""Conformance suite every model adapter must pass (classical now, quantum patch networks next):
the same engine calls, the same invariants, whatever the model is."""

import numpy as np
import pytest
import torch
from torch.func import hessian

from qlandscape import Objective, ParamSpace, dense_hessian, hessian_eigs, random_direction, scan_1d
from qlandscape.testing import check_model

from .cases import ALL_CASES, CONFORMANCE_CASES


@pytest.fixture(params=ALL_CASES, ids=lambda f: f.__name__)
def case(request):
    return request.param()


def test_flatten_unflatten_round_trip(case):
    space = ParamSpace.from_module(case.model)
    theta = space.from_module_values(case.model)
    assert torch.equal(space.flatten(space.unflatten(theta)), theta)


def test_hvp_equals_dense_reference_in_every_direction(case):
    ob = Objective(case.model, case.loss, (case.x, case.y), batch_size=4)
    H = hessian(lambda t: case.reference(t, ob.space))(ob.theta0)
    V = torch.randn(3, ob.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ob.hvp(V), V @ H, rtol=1e-10, atol=1e-10)


def test_hessian_is_symmetric_and_eigs_agree_with_eigvalsh(case):
    ob = Objective(case.model, case.loss, (case.x, case.y))
    H = dense_hessian(ob)
    assert torch.allclose(H, H.T, atol=1e-12)
    top = hessian_eigs(ob, k=2, method="lanczos", tol=1e-10, progress=False)
    assert np.allclose(top.eigenvalues, torch.linalg.eigvalsh(H).numpy()[::-1][:2], atol=1e-8)


def test_scan_centre_equals_loss(case):
    ob = Objective(case.model, case.loss, (case.x, case.y), batch_size=5)
    # "unit": the default filter normalization is all zeros for the patch QNN at initialization
    # (1-D circuit weights, zero positional bias), which scan_1d now refuses
    d = random_direction(ob.space, ob.theta0, normalization="unit", seed=0)
    s = scan_1d(ob, d, n_points=5, progress=False)
    assert s.loss[2] == ob.loss()


def test_model_unchanged(case):
    before = {k: v.clone() for k, v in case.model.state_dict().items()}
    ob = Objective(case.model, case.loss, (case.x, case.y))
    ob.hvp(torch.ones(ob.n_params, dtype=torch.float64))
    ob.gradient()
    assert all(torch.equal(v, before[k]) for k, v in case.model.state_dict().items())


# ------------------------------------------------------------------ the packaged conformance suite
@pytest.fixture(params=CONFORMANCE_CASES, ids=lambda f: f.__name__)
def any_case(request):
    return request.param()


def test_packaged_conformance_suite_passes(any_case):
    """qlandscape.testing.check_model on every registered model, against its independent reference."""
    c = any_case
    space = ParamSpace.from_module(c.model)
    report = check_model(c.model, c.loss, (c.x, c.y), reference=lambda t: c.reference(t, space))
    report.raise_if_failed()
    assert {ch.name for ch in report.checks} >= {
        "functional_equals_forward", "every_parameter_moves_loss", "gradient_equals_backward",
        "gradient_equals_finite_differences", "hvp_equals_reference", "hvp_symmetric_and_linear",
        "scan_centre_equals_loss", "auto_choices_run", "model_unchanged"}


def test_conformance_suite_catches_an_unreached_weight():
    """A module that reads a weight the functional path cannot swap fails the suite (the check can fail)."""

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)
            self.w = torch.nn.Parameter(torch.ones(2))
            self.stash = {"w": self.w}  # read from a plain dict, like TorchLayer.qnode_weights

        def forward(self, x):
            return self.lin(x) * self.stash["w"]

    torch.manual_seed(0)
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    report = check_model(Hidden(), "cross_entropy", (x, y), train_check=False)
    failed = {c.name for c in report.failures()}
    assert "functional_equals_forward" in failed and "every_parameter_moves_loss" in failed
