"""Conformance suite every model adapter must pass (classical now, quantum patch networks next):
the same engine calls, the same invariants, whatever the model is."""

import json
import os

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


# ------------------------------------------------------------------ the command line (python -m qlandscape.testing)
_FACTORIES = '''
import torch
from torch import nn


def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


class Hidden(nn.Module):  # reads a weight from a plain dict: the functional path cannot swap it
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.w = nn.Parameter(torch.ones(2))
        self.stash = {"w": self.w}

    def forward(self, x):
        return self.lin(x) * self.stash["w"]


def make_hidden():
    torch.manual_seed(0)
    return Hidden()


def make_case():
    x = torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return {"model": make_mlp(), "loss": "cross_entropy", "data": (x, torch.arange(7) % 3)}


def not_a_model():
    return 3
'''


@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "user_models.py"
    path.write_text(_FACTORIES)
    return path


def test_cli_runs_the_suite_on_a_user_factory(factories, tmp_path, capsys):
    """A conforming model exits 0 with every check listed; one whose weight the functional path cannot reach
    exits 1 naming the failed checks; the JSON report holds every check."""
    from qlandscape.testing.__main__ import main

    out = tmp_path / "report.json"
    assert main([f"{factories}:make_mlp", "--input-shape", "6", "--classes", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "conformance of Sequential: PASSED" in text and "[ok] hvp_equals_finite_differences" in text
    report = json.loads(out.read_text())
    assert report["passed"] and {c["name"] for c in report["checks"]} >= {"gradient_equals_backward", "model_unchanged"}
    assert main([f"{factories}:make_hidden", "--input-shape", "3", "--classes", "2", "--no-train-check"]) == 1
    text = capsys.readouterr().out
    assert "FAILED" in text and "[FAIL] functional_equals_forward" in text
    assert main([f"{factories}:make_case", "--no-train-check"]) == 0  # the factory brings its own loss and data
    assert main([f"{factories}:make_mlp", "--input-shape", "6", "--loss", "mse", "--no-train-check"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["nonexistent_pkg_xyz:make"], "cannot import module 'nonexistent_pkg_xyz'"),
    (["no_colon"], "FACTORY must be 'module:function'"),
    (["{f}:missing"], "has no callable 'missing'"),
    (["{f}:not_a_model"], "the factory returned int"),
    (["{f}:make_mlp"], "give --input-shape"),
    (["{f}:make_mlp", "--input-shape", "6"], "--classes (>= 2) is needed"),
    (["{f}:make_mlp", "--input-shape", "6", "--classes", "3", "--samples", "0"], "--samples must be >= 1"),
])
def test_cli_bad_factories_and_arguments_are_one_line_and_exit_2(factories, capsys, argv, message):
    from qlandscape.testing.__main__ import main

    assert main([a.format(f=factories) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_a_factory_file_does_not_shadow_a_module_of_its_name(tmp_path):
    import json as stdlib_json
    import sys

    from qlandscape.testing.__main__ import load_factory

    (tmp_path / "json.py").write_text(_FACTORIES)
    assert callable(load_factory(f"{tmp_path / 'json.py'}:make_mlp"))
    assert sys.modules["json"] is stdlib_json


def test_cli_as_a_module_subprocess(factories):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "qlandscape.testing", f"{factories}:make_hidden", "--input-shape",
                           "3", "--classes", "2", "--no-train-check"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "[FAIL] every_parameter_moves_loss" in proc.stdout
