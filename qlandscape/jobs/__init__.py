"""The job layer: resumable, configured jobs built from stamped steps in a run directory.

Every command of the ``qlandscape`` CLI is a job here, and sweeps (:mod:`qlandscape.sweep`) call the
same functions; the library packages below this layer (models, curvature, landscape, ntk, adversarial,
merging, ...) never import it.

* The **step API** (:mod:`.steps`): :func:`step` reuses or computes one named step in an open
  :class:`~qlandscape.rundir.RunDir` (stamped by the configuration values it read, the steps it built on
  and its files' checksums); :func:`result_step` is :func:`step` for a
  :class:`~qlandscape.results.Result`; :func:`train_step` is the ``train`` step every measurement builds
  on (with the check that the trained model is at a minimum, :func:`fit_report`); :func:`built_once` shares
  one object (an objective, a model and its data) among steps, each keyed by what building it read.
* **Builders** (:mod:`.build`): the dataset, model, loss, objective and attack a
  :class:`~qlandscape.config.RunConfig` describes.
* **Jobs**: :func:`ensure_trained` (``train``), :func:`run_hessian` (``hessian``), :func:`run_scan`
  (``scan``), :func:`run_compare` (``compare``), :func:`run_ntk` (``ntk``), :func:`run_spawn_job`
  (``spawn``), :func:`run_robust` (``robust``), :func:`run_merge` (``merge``).

Writing a job of your own::

    from qlandscape import jobs
    from qlandscape.rundir import open_rundir

    def run_my_measure(cfg, out, progress=True, force=False):
        with open_rundir(out) as rd:
            (model, tr, ds), trained = jobs.train_step(rd, cfg, progress, force)
            return jobs.result_step(rd, "my_measure", MyResult, cfg, {"train": trained.identity}, force,
                                    jobs.model_info(model),
                                    lambda c: my_measure(jobs.build_objective(c, model, ds)))

A rerun then reuses ``my_measure`` while the configuration values ``my_measure`` read (through ``c``),
the training and the stored files are unchanged, and recomputes it (one log line saying why) otherwise.
"""

from __future__ import annotations

from .build import (
    DTYPES,
    build_attack,
    build_dataset,
    build_loss,
    build_model,
    build_objective,
    build_patch_qnn,
    load_weights,
    model_info,
    shape_only_dataset,
)
from .compare import run_compare
from .hessian import HESSIAN_PARTS, run_hessian
from .merge import run_merge
from .ntk import run_ntk, run_spawn_job
from .robust import run_robust
from .scan import run_scan, scan_directions
from .steps import built_once, result_step, step
from .training import FIT_LOSS, checked_fit, ensure_trained, fit_report, train_step

__all__ = [
    "DTYPES", "FIT_LOSS", "HESSIAN_PARTS",
    "step", "result_step", "train_step", "built_once",
    "build_attack", "build_dataset", "build_loss", "build_model", "build_objective", "build_patch_qnn",
    "load_weights", "model_info", "shape_only_dataset", "scan_directions",
    "ensure_trained", "fit_report", "checked_fit",
    "run_hessian", "run_scan", "run_compare", "run_ntk", "run_spawn_job", "run_robust", "run_merge",
]
