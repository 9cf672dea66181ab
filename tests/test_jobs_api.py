"""A job of the user's own, written only with the public step API (``qlandscape.jobs``): computed once,
reused on a rerun, recomputed when a configuration value it read changes, and the documented example runs."""

import dataclasses
import logging
from typing import Any

import numpy as np
import pytest
import torch

from qlandscape import jobs
from qlandscape.config import load_config
from qlandscape.results import Result
from qlandscape.rundir import open_rundir

TINY = ["data.n_samples=120", "train.epochs=2", "model.hidden=[8]", "objective.batch_size=60"]


@dataclasses.dataclass
class GradientNorm(Result):
    value: float
    gradient: np.ndarray
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_gradient_norm(cfg, out, calls, force=False):
    """The user's job: the full-data gradient norm of the trained model's objective."""
    with open_rundir(out) as rd:
        (model, tr, ds), trained = jobs.train_step(rd, cfg, False, force)

        def compute(c):
            calls.append(1)
            g = jobs.build_objective(c, model, ds).gradient()
            return GradientNorm(value=float(g.norm()), gradient=g.detach().numpy())

        return jobs.result_step(rd, "gradient_norm", GradientNorm, cfg, {"train": trained.identity}, force,
                                jobs.model_info(model), compute)


def test_a_user_job_is_computed_once_reused_and_recomputed_when_what_it_read_changes(tmp_path, caplog):
    cfg = load_config(None, TINY)
    calls: list[int] = []
    first = run_gradient_norm(cfg, tmp_path / "run", calls)
    assert first.value > 0 and first.provenance["config_digest"] and first.provenance["model_info"]["n_params"]
    with caplog.at_level(logging.INFO, logger="qlandscape"):
        again = run_gradient_norm(cfg, tmp_path / "run", calls)
    assert len(calls) == 1 and again.value == first.value  # reused from the run directory, bit for bit
    assert "reusing gradient_norm" in caplog.text
    changed = load_config(None, TINY + ["objective.dtype=float32"])  # a value build_objective reads
    run_gradient_norm(changed, tmp_path / "run", calls)
    assert len(calls) == 2
    run_gradient_norm(changed, tmp_path / "run", calls, force=True)  # force recomputes (and retrains)
    assert len(calls) == 3


def test_the_gradient_the_user_job_stores_is_the_autograd_gradient(tmp_path):
    cfg = load_config(None, TINY)
    res = run_gradient_norm(cfg, tmp_path / "run", [])
    model, _, ds = jobs.ensure_trained(cfg, tmp_path / "run", progress=False)
    x, y = ds.train
    model = model.double()
    loss = torch.nn.functional.cross_entropy(model(x.double()), y)  # the objective: mean cross-entropy, float64
    g = torch.cat([p.reshape(-1) for p in torch.autograd.grad(loss, list(model.parameters()))])
    np.testing.assert_allclose(res.gradient, g.detach().numpy(), rtol=1e-10, atol=1e-12)  # float64 both ways


def test_a_result_step_that_cannot_load_its_files_recomputes_them(tmp_path):
    cfg = load_config(None, TINY)
    calls: list[int] = []
    run_gradient_norm(cfg, tmp_path / "run", calls)
    (tmp_path / "run" / "gradient_norm.npz").write_bytes(b"not an archive")
    again = run_gradient_norm(cfg, tmp_path / "run", calls)
    assert len(calls) == 2 and again.value > 0


def test_the_step_api_is_public_and_documented():
    for name in ("step", "result_step", "train_step", "ensure_trained", "build_objective", "model_info"):
        obj = getattr(jobs, name)
        assert obj.__doc__ and not name.startswith("_")
    with pytest.raises(AttributeError):
        jobs._step  # noqa: B018 - the old private name is gone
