"""The jobs behind ``qlandscape ntk`` and ``qlandscape spawn`` (Fort et al. 2020 as job steps).

* :func:`run_ntk`: train (or reuse) the configured model, then two stamped, resumable steps in the run
  directory: ``ntk_dynamics`` (the empirical NTK along the recorded trajectory: distance to the initial and
  final kernels, velocity; ``ntk_dynamics.{npz,json}`` and ``ntk_distance.png``) and ``kernel_learning``
  (kernel regression and linearized training with the kernel frozen at each checkpoint;
  ``kernel_learning.{npz,json}`` and ``ntk_learning.png``); then the summary ``ntk.json``.
* :func:`run_spawn_job`: parent-child spawning from the configured model's initialization: the parent and
  every child are stamped steps (``spawn_parent``, ``spawn_child_t{t}_k{k}``, files in ``DIR/spawn/``), so an
  interrupted run resumes with what finished; then the step ``spawn_barriers``
  (``spawn_barriers.{npz,json}``, ``spawn.png``) and the summary ``spawn.json``.

Like every job step (:mod:`qlandscape.jobs.steps`), a step is reused while the configuration values it
read, the steps it built on and its files are unchanged (:mod:`qlandscape.rundir`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar

import numpy as np

from ..adapter import CapabilityError
from ..config import RunConfig
from ..ntk.dynamics import KernelLearningResult, NTKDynamicsResult, kernel_learning_curve, ntk_dynamics
from ..ntk.linearized import LinearizedModel
from ..ntk.spawn import SpawnPlan, SpawnResult, load_theta, save_theta, spawn_result, train_child, train_parent
from ..progress import progress_bar
from ..results import ResultFileError
from ..rundir import Drawers, RunDir, json_ready, open_rundir, write_json
from ..train import TrainResult
from .build import build_dataset, build_model, model_info
from .scan import run_scan
from .steps import built_once, step
from .training import train_step

__all__ = ["run_ntk", "run_spawn_job", "fast_overrides", "checkpoint_indices", "spawn_plan", "FAST_OVERRIDES"]

log = logging.getLogger("qlandscape")

FAST_OVERRIDES: dict[str, tuple[str, ...]] = {
    "ntk": ("data.n_samples=300", "train.epochs=4", "ntk.n_inputs=40", "ntk.n_train=100", "ntk.n_test=60",
            "ntk.linearized_epochs=3", "scan.n_points=11"),
    "spawn": ("data.n_samples=300", "train.epochs=4", "spawn.times=[0,1,2]", "spawn.n_children=2"),
}
"""``--fast`` settings of the ``ntk`` and ``spawn`` commands (applied before the user's ``--set``)."""


def fast_overrides(command: str, fast: bool) -> list[str]:
    """The ``section.key=value`` overrides ``command`` ("ntk" or "spawn") applies before the user's own."""
    if command not in FAST_OVERRIDES:
        raise ValueError(f"no fast settings for command {command!r}; known: {sorted(FAST_OVERRIDES)}")
    return list(FAST_OVERRIDES[command]) if fast else []


def checkpoint_indices(n_records: int, every: int) -> list[int]:
    """Every ``every``-th of ``n_records`` trajectory records and the last (at least two when there are)."""
    idx = list(range(0, n_records, every))
    if idx[-1] != n_records - 1:
        idx.append(n_records - 1)
    return idx


R = TypeVar("R", NTKDynamicsResult, KernelLearningResult, SpawnResult)


def _info_step(rd: RunDir, name: str, cls: type[R], cfg: RunConfig, upstream: Mapping[str, str], force: bool,
               info: dict[str, Any], compute: Callable[[RunConfig], R],
               figures: Optional[Callable[[R, RunConfig], Drawers]] = None,
               figure_names: tuple[str, ...] = ()) -> R:
    """:func:`~qlandscape.jobs.step` for a result stored as ``<name>.{npz,json}`` whose provenance (the
    config digest, ``model_info`` and the compute wall time) goes into its ``info`` dict."""
    path = rd.path / name

    def timed(c: RunConfig) -> R:
        start = time.perf_counter()
        res = compute(c)
        res.info["wall_time_s"] = time.perf_counter() - start
        return res

    def save(res: R, key: str) -> None:
        res.info["config_digest"] = key
        res.info["model_info"] = dict(info)
        res.save(path)

    value, _ = step(rd, name, cfg, outputs=(f"{name}.npz", f"{name}.json"), upstream=upstream,
                    force=force, compute=timed, save=save, load=lambda: cls.load(path),
                    figures=figures, figure_names=figure_names)
    return value


# ---------------------------------------------------------------------------------------------------- ntk
def usable_methods(requested: tuple[str, ...], model: Any, example: Any) -> tuple[list[str], list[str]]:
    """The kernel-learning methods ``model`` supports among ``requested``, and a warning for each dropped one.

    "linearized" needs ``torch.func`` through the model (:class:`~qlandscape.ntk.LinearizedModel`); a model
    without it (e.g. a patch QNN on an adjoint lightning device) runs "regression" only.
    """
    methods, warnings = list(requested), []
    if "linearized" in methods:
        try:
            LinearizedModel(model, example_input=example)
        except CapabilityError as exc:
            methods.remove("linearized")
            warnings.append(f"ntk.methods: 'linearized' dropped for {type(model).__name__}: {exc}")
            if not methods:
                methods = ["regression"]
                warnings.append("ntk.methods: running 'regression' instead")
    for w in warnings:
        log.warning("%s", w)
    return methods, warnings


def _distance_figure(res: NTKDynamicsResult) -> Any:
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    t = res.times_epochs
    a.plot(t, res.kernel_to_initial, "o-", label="to initial kernel")
    a.plot(t, res.kernel_to_final, "s-", label="to final kernel")
    a.set_xlabel(f"training time ({res.info.get('time_unit', 'epochs')})")
    a.set_ylabel("kernel distance")
    a.set_ylim(-0.02, max(1e-3, float(np.nanmax(np.r_[res.kernel_to_initial, res.kernel_to_final]))) * 1.1)
    a.set_title(f"NTK ({res.kind}, {res.n_inputs} inputs)")
    a.legend()
    a.grid(alpha=0.3)
    v = np.asarray(res.velocity, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    b.plot(t[ok], v[ok], "o-", color="C2")
    if ok.any():
        b.set_yscale("log")
    b.set_xlabel(f"training time ({res.info.get('time_unit', 'epochs')})")
    b.set_ylabel("kernel velocity (distance per epoch)")
    b.set_title("kernel velocity")
    b.grid(alpha=0.3)
    return fig


def _learning_figure(res: KernelLearningResult) -> Any:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    t = res.times_epochs
    if "regression" in res.methods:
        ax.plot(t, res.regression_accuracy, "o-", label="kernel regression (K frozen at t)")
    if "linearized" in res.methods:
        ax.plot(t, res.linearized_accuracy, "s-", label="linearized model around t")
    ax.plot(t, res.checkpoint_accuracy, ":", color="gray", label="network at t")
    if math.isfinite(res.network_accuracy):
        ax.axhline(res.network_accuracy, color="k", ls="--", label="fully trained network")
    ax.set_xlabel(f"time t ({res.info.get('time_unit', 'epochs')})")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"kernel learning at time t ({res.info.get('n_train')} train, {res.info.get('n_test')} test)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def run_ntk(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """The ``ntk`` job: train (or reuse), NTK dynamics, kernel learning; writes ``out/ntk.json`` and PNGs.

    Parameters
    ----------
    cfg : RunConfig
        ``[ntk]`` and the model / training sections.
    out : Path
        The run directory (shared with ``train``, ``hessian``, ``scan``: the trained model is reused).
    progress : bool
    force : bool
        Recompute both steps and the training they depend on.

    Returns
    -------
    dict
        The summary written to ``ntk.json`` (NaN as null).
    """
    start = time.perf_counter()
    out = Path(out)
    with open_rundir(out) as rd:
        (model, tr, ds), trained = train_step(rd, cfg, progress, force)
        upstream = {"train": trained.identity}
        info = model_info(model)
        x_train, y_train = ds.train
        methods, warnings = usable_methods(cfg.ntk.methods, model, x_train[:1])
        n_records = int(np.asarray(tr.steps).shape[0])

        def dynamics(c: RunConfig) -> NTKDynamicsResult:
            n = c.ntk
            k = min(n.n_inputs, int(x_train.shape[0]))
            return ntk_dynamics(model, tr, x_train[:k], targets=y_train[:k], kind=n.kind,  # type: ignore[arg-type]
                                implementation=n.implementation, dtype=n.dtype,  # type: ignore[arg-type]
                                checkpoints=checkpoint_indices(n_records, n.checkpoints_every), progress=progress)

        def learning(c: RunConfig) -> KernelLearningResult:
            n = c.ntk
            _ = n.methods  # recorded: the methods run follow from the configured ones
            lin: dict[str, Any] = {}
            if "linearized" in methods:  # its settings matter only when it runs
                lin = dict(linearized_epochs=n.linearized_epochs, lr=n.linearized_lr,
                           batch_size=c.train.batch_size, seed=c.train.seed)
            return kernel_learning_curve(model, tr, ds, checkpoints=checkpoint_indices(n_records, n.checkpoints_every),
                                         methods=methods, kind=n.kind,  # type: ignore[arg-type]
                                         implementation=n.implementation, dtype=n.dtype,  # type: ignore[arg-type]
                                         n_train=n.n_train, n_test=n.n_test, progress=progress, **lin)

        dyn = _info_step(rd, "ntk_dynamics", NTKDynamicsResult, cfg, upstream, force, info, dynamics,
                         figures=lambda r, c: {"ntk_distance.png": lambda: _distance_figure(r)},
                         figure_names=("ntk_distance.png",))
        kl = _info_step(rd, "kernel_learning", KernelLearningResult, cfg, upstream, force, info, learning,
                        figures=lambda r, c: {"ntk_learning.png": lambda: _learning_figure(r)},
                        figure_names=("ntk_learning.png",))
        # the trajectory picture: the loss landscape in the PCA plane of the training trajectory, the path on it
        # (the engine's PCA directions and scan; scan.n_points, scan.margin apply)
        trajectory_scan = None
        try:
            pca_cfg = dataclasses.replace(cfg, scan=dataclasses.replace(cfg.scan, directions="pca", dims=2))
        except ValueError as exc:  # too few recorded checkpoints for a PCA plane
            warnings.append(f"no trajectory picture: {exc}")
            log.warning("no trajectory picture: %s", exc)
        else:
            trajectory_scan = run_scan(pca_cfg, out, progress, force=force, name="ntk_trajectory")
        computed = {s: s in rd.fresh for s in ("train", "ntk_dynamics", "kernel_learning", "ntk_trajectory")}
    summary = {
        "times_epochs": dyn.times_epochs, "steps": dyn.steps, "checkpoints": dyn.checkpoints,
        "time_unit": dyn.info.get("time_unit"),
        "kernel_to_initial": dyn.kernel_to_initial, "kernel_to_final": dyn.kernel_to_final,
        "kernel_to_previous": dyn.kernel_to_previous, "velocity": dyn.velocity,
        "param_to_initial": dyn.param_to_initial, "param_to_final": dyn.param_to_final,
        "function_to_final": dyn.function_to_final, "disagreement_to_final": dyn.disagreement_to_final,
        "accuracy_on_kernel_inputs": dyn.accuracy, "kernel_norms": dyn.kernel_norms,
        "kernel_learning": {
            "times_epochs": kl.times_epochs, "methods": kl.methods,
            "regression_accuracy": kl.regression_accuracy, "linearized_accuracy": kl.linearized_accuracy,
            "linearized_best_accuracy": kl.linearized_best_accuracy, "checkpoint_accuracy": kl.checkpoint_accuracy,
            "network_accuracy": kl.network_accuracy, "jitter": kl.regression_jitter,
            "relative_jitter": kl.regression_relative_jitter, "n_train": kl.info.get("n_train"),
            "n_test": kl.info.get("n_test"), "linearized": kl.info.get("linearized") if "linearized" in kl.methods
            else None},
        "network_accuracy": kl.network_accuracy,
        "kind": dyn.kind, "implementation": dyn.implementation, "dtype": dyn.info.get("dtype"),
        "n_inputs": dyn.n_inputs, "n_params": dyn.info.get("n_params"),
        "methods_requested": list(cfg.ntk.methods), "methods": list(kl.methods), "warnings": warnings,
        "model_info": info, "computed_now": computed,
        "wall_time_s": {"ntk_dynamics": dyn.info.get("wall_time_s"), "kernel_learning": kl.info.get("wall_time_s"),
                        "this_run": time.perf_counter() - start},
        "trajectory_scan": None if trajectory_scan is None else {
            "explained_variance_ratio": trajectory_scan.info.get("explained_variance_ratio"),
            "spans": trajectory_scan.info.get("spans"), "center_loss": trajectory_scan.center_loss,
            "max_loss": float(np.nanmax(trajectory_scan.loss))},
        "files": {name: str(out / name) for name in ("ntk.json", "ntk_dynamics.npz", "kernel_learning.npz",
                                                      "ntk_distance.png", "ntk_learning.png")
                  + (("ntk_trajectory.png",) if trajectory_scan is not None else ())},
    }
    summary = json_ready(summary)
    write_json(out / "ntk.json", summary)
    return summary


# -------------------------------------------------------------------------------------------------- spawn
def spawn_plan(cfg: RunConfig) -> SpawnPlan:
    """The :class:`SpawnPlan` of ``[spawn]`` with the training settings of ``[train]`` (parent seed:
    ``train.seed``; evaluation on the test split)."""
    t, s = cfg.train, cfg.spawn
    return SpawnPlan(spawn_times=tuple(s.times), n_children=s.n_children, epochs=t.epochs, lr=t.lr,
                     optimizer=t.optimizer, momentum=t.momentum, weight_decay=t.weight_decay,
                     batch_size=t.batch_size, parent_seed=t.seed, n_points=s.n_points, eval_split="test",
                     copy_optimizer=s.copy_optimizer)


def _spawn_figure(res: SpawnResult) -> Any:
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    t = np.asarray(res.spawn_times)
    a.plot(t, res.loss_barrier, "o-", color="C0", label="loss barrier")
    a.set_xlabel("spawn time (epochs)")
    a.set_ylabel("loss barrier (nats)", color="C0")
    a.grid(alpha=0.3)
    a2 = a.twinx()
    a2.plot(t, res.error_barrier, "s-", color="C1", label="0-1 error barrier")
    a2.plot(t, res.disagreement, "^--", color="C2", label="disagreement")
    a2.set_ylabel("error barrier / disagreement")
    a2.set_ylim(-0.02, max(0.1, float(np.nanmax(np.r_[res.error_barrier, res.disagreement])) * 1.1))
    lines = a.get_lines() + a2.get_lines()
    a.legend(lines, [ln.get_label() for ln in lines], fontsize=8)
    a.set_title(f"children barriers ({len(res.child_seeds)} children per time)")
    alpha = np.asarray(res.alpha)
    cmap = plt.get_cmap("viridis")
    for i, ti in enumerate(t):
        color = cmap(i / max(1, len(t) - 1))
        b.plot(alpha, res.loss_curves[i].mean(axis=0), "-", color=color, label=f"t={int(ti)} loss")
        b.plot(alpha, res.error_curves[i].mean(axis=0), ":", color=color)
    b.set_xlabel("alpha (child i -> child j)")
    b.set_ylabel("test loss (solid) / 0-1 error (dotted)")
    b.set_title("interpolation between children (mean over pairs)")
    b.legend(fontsize=7)
    b.grid(alpha=0.3)
    return fig


def run_spawn_job(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """The ``spawn`` job: parent-child spawning from the configured model's initialization.

    Every unit of the experiment is a stamped, resumable step of the run directory
    (:func:`~qlandscape.jobs.step`), so an interrupted run resumes with what finished: ``spawn_parent``
    (``spawn/parent.{npz,json}``, the parent's TrainResult with its optimizer states), one
    ``spawn_child_t{t}_k{k}`` per child (``spawn/child_t{t}_k{k}.npy``, built on the parent's identity),
    then ``spawn_barriers`` (built on every child's). Each is keyed by the configuration values it read
    (model, data, the spawn plan), so changing one recomputes exactly what depends on it. ``force``
    recomputes all of them.

    Raises
    ------
    ValueError
        :meth:`RunConfig.check_spawn` (spawn times after ``train.epochs``, a non-constant schedule).

    Returns
    -------
    dict
        The summary written to ``spawn.json`` (NaN as null).
    """
    cfg.check_spawn()
    start = time.perf_counter()
    out = Path(out)
    info: dict[str, Any] = {}
    with open_rundir(out) as rd:
        def make(c: RunConfig) -> tuple[Any, Any, SpawnPlan]:
            ds = build_dataset(c)
            model = build_model(c, ds)
            info.update(model_info(model))
            return model, ds, spawn_plan(c)

        # model, data and plan, built once; every step that uses them is keyed by what building them read
        built = built_once(cfg, make)

        parent_path = rd.path / "spawn" / "parent"
        parent_started = time.perf_counter()
        parent, parent_stamp = step(
            rd, "spawn_parent", cfg, outputs=("spawn/parent.npz", "spawn/parent.json"), upstream={}, force=force,
            compute=lambda c: train_parent(*built(c), progress=False), save=lambda tr, key: _save_result(tr, parent_path),
            load=lambda: TrainResult.load(parent_path))
        parent_wall = time.perf_counter() - parent_started
        plan = spawn_plan(cfg)
        children: dict[tuple[int, int], np.ndarray] = {}
        upstream: dict[str, str] = {}
        trained = 0
        bar = progress_bar(len(plan.spawn_times) * plan.n_children, "spawn children", progress)
        for t in plan.spawn_times:
            for k in range(plan.n_children):
                name, rel = f"spawn_child_t{t}_k{k}", f"spawn/child_t{t}_k{k}.npy"
                children[t, k], child_stamp = step(
                    rd, name, cfg, outputs=(rel,), upstream={"spawn_parent": parent_stamp.identity}, force=force,
                    compute=functools.partial(_train_child, built, parent, t, k),
                    save=functools.partial(_save_theta, rd.path / rel), load=functools.partial(_load_theta, rd.path / rel))
                upstream[name] = child_stamp.identity
                trained += name in rd.fresh
                bar.update(1)
        bar.close()
        children_wall = time.perf_counter() - parent_started - parent_wall

        def compute(c: RunConfig) -> SpawnResult:
            model, ds, plan = built(c)
            return spawn_result(model, ds, plan, parent, children, info=dict(
                parent_wall_s=parent_wall, children_wall_s=children_wall, children_trained=trained,
                children_cached=len(children) - trained, parent_trained="spawn_parent" in rd.fresh))

        res = _info_step(rd, "spawn_barriers", SpawnResult, cfg, upstream, force, info, compute,
                         figures=lambda r, c: {"spawn.png": lambda: _spawn_figure(r)}, figure_names=("spawn.png",))
        computed = "spawn_barriers" in rd.fresh
    summary = {
        "spawn_times": res.spawn_times, "loss_barrier": res.loss_barrier, "error_barrier": res.error_barrier,
        "disagreement": res.disagreement, "pair_loss_barrier": res.pair_loss_barrier,
        "pair_error_barrier": res.pair_error_barrier, "pair_disagreement": res.pair_disagreement,
        "pair_distance": res.pair_distance, "pairs": res.pairs, "child_loss": res.child_loss,
        "child_error": res.child_error, "parent_loss": res.parent_loss, "parent_error": res.parent_error,
        "child_seeds": res.child_seeds, "plan": res.plan,
        "model_info": res.info.get("model_info"), "computed_now": computed,
        "children_trained": trained, "children_cached": len(children) - trained,
        "training_state": res.info.get("training_state"), "deviations": res.info.get("deviations"),
        "barrier_definition": res.info.get("barrier_definition"),
        "wall_time_s": {"spawn": res.info.get("wall_time_s"), "parent": res.info.get("parent_wall_s"),
                        "children": res.info.get("children_wall_s"), "this_run": time.perf_counter() - start},
        "files": {name: str(out / name) for name in ("spawn.json", "spawn_barriers.npz", "spawn.png")},
    }
    summary = json_ready(summary)
    write_json(out / "spawn.json", summary)
    return summary

def _train_child(built: Callable[[RunConfig], tuple[Any, Any, SpawnPlan]], parent: TrainResult, t: int, k: int,
                 c: RunConfig) -> np.ndarray:
    model, ds, plan = built(c)
    return train_child(model, ds, plan, parent, t, k)


def _save_result(result: TrainResult, path: Path) -> None:
    result.save(path)


def _save_theta(path: Path, theta: np.ndarray, key: str) -> None:
    save_theta(path, theta)


def _load_theta(path: Path) -> np.ndarray:
    theta = load_theta(path)
    if theta.ndim != 1 or theta.dtype != np.float64:
        raise ResultFileError(f"{path} does not hold a flat float64 parameter vector")
    return theta
