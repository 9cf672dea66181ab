"""The job behind ``qlandscape robust``: standard vs adversarial training, measured through the landscape.

Prabhu et al. ask whether adversarial training (Madry et al. 2018) finds flatter minima; they found it does not.
:func:`run_robust` trains two models of the configured architecture that differ only in ``train.adversarial``
(same initialization, data and minibatch order): ``out/standard/`` trains on clean batches, ``out/adversarial/``
on the ``[adversarial]`` attack's batches. In each run directory it runs the job steps ``train``,
``hessian_eigs`` and ``hessian_trace`` (:func:`~qlandscape.jobs.run_hessian`), ``scan`` (always
filter-normalized random directions, Li et al. 2018; ``scan.dims``, ``n_points``, ``span`` as configured), and two
steps of its own:

* ``robustness`` (``robustness.{npz,json}``): clean and robust loss and accuracy on the TEST split under the
  evaluation attack (:func:`~qlandscape.jobs.build_attack` with ``evaluation=True``: ``eval_steps`` steps),
  with the training loss (cross-entropy);
* ``sharpness`` (``sharpness.{npz,json}``): epsilon-sharpness (Keskar et al. 2017) of the job's objective
  (:func:`~qlandscape.jobs.build_objective`, the loss the Hessian and the scan measure) in the
  filter-normalized ball of relative radius ``sharpness_epsilon``, ``sharpness_steps`` ascent steps, seed
  ``hessian.seed``.

Then ``out/robust.json`` (a summary per variant and which variant is larger by each flatness measure; reported,
not judged), ``out/robust_surfaces.png`` (both scans on one colour / loss scale) and ``out/robust_bars.png``.
Every step is stamped and reused while its configuration values, upstream steps and files are unchanged
(:mod:`qlandscape.rundir`): a rerun computes nothing (``computed_now`` in the summary says what ran).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..adversarial.attacks import RobustEvaluation, robust_evaluate
from ..adversarial.sharpness import SharpnessResult, epsilon_sharpness
from ..config import RunConfig
from ..landscape import LandscapeScan
from ..rundir import draw_figures, json_ready, open_rundir, write_json
from .build import build_attack, build_objective, model_info
from .hessian import run_hessian
from .scan import run_scan
from .steps import result_step
from .training import train_step

__all__ = ["run_robust", "summary_lines", "fast_overrides", "variant_configs", "RobustnessResult",
           "FAST_OVERRIDES", "VARIANTS", "FLATNESS_MEASURES"]

log = logging.getLogger("qlandscape")

VARIANTS: tuple[str, ...] = ("standard", "adversarial")
"""The two trained models: ``train.adversarial`` false / true, everything else the same."""

FLATNESS_MEASURES: tuple[str, ...] = ("lambda_max", "trace", "sharpness", "sharpness_relative")
"""The summary's measures compared between the variants in ``robust.json``'s ``flatter``."""

FAST_OVERRIDES: tuple[str, ...] = (
    "data.n_samples=300", "train.epochs=4", "hessian.top_k=1", "hessian.trace_probes=10", "scan.n_points=11",
    "scan.dims=1", "adversarial.eval_steps=5", "adversarial.sharpness_steps=5")
"""``--fast`` settings of ``qlandscape robust`` (applied before the user's ``--set``)."""

PLOTS: tuple[str, ...] = ("robust_surfaces.png", "robust_bars.png")


def fast_overrides(fast: bool) -> list[str]:
    """The ``section.key=value`` overrides ``qlandscape robust --fast`` applies before the user's own."""
    return list(FAST_OVERRIDES) if fast else []


@dataclass
class RobustnessResult(RobustEvaluation):
    """:class:`RobustEvaluation` of a job's model on its test split, with provenance (``config_digest``,
    ``model_info``, ``split``, ``wall_time_s``)."""

    provenance: dict = field(default_factory=dict)


def variant_configs(cfg: RunConfig) -> dict[str, RunConfig]:
    """The configuration of each variant: ``cfg`` with ``train.adversarial`` false ("standard") or true
    ("adversarial") and filter-normalized scan directions (``scan.span_mode`` "trajectory", which only PCA
    directions allow, becomes "auto"); every other value is shared.

    Raises
    ------
    ValueError
        A variant configuration is invalid.
    """
    scan = cfg.scan
    if scan.directions != "filter" or scan.span_mode == "trajectory":
        scan = dataclasses.replace(scan, directions="filter",
                                   span_mode="auto" if scan.span_mode == "trajectory" else scan.span_mode)
    return {v: dataclasses.replace(cfg, scan=scan, train=dataclasses.replace(cfg.train, adversarial=v == "adversarial"))
            for v in VARIANTS}


def _finite(x: Any) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _run_variant(cfg: RunConfig, out: Path, progress: bool, force: bool) -> dict[str, Any]:
    """Every step of one variant in its run directory ``out``; the results and what ran now."""
    with open_rundir(out) as rd:
        write_json(out / "config.json", cfg.to_dict())
        (model, tr, ds), trained = train_step(rd, cfg, progress, force)
        upstream = {"train": trained.identity}
        info = model_info(model)
        hess = run_hessian(cfg, out, progress, force, parts=("eigs", "trace"))
        scan = run_scan(cfg, out, progress, force)

        def robustness(c: RunConfig) -> RobustnessResult:
            start = time.perf_counter()
            attack = build_attack(c, ds, evaluation=True)
            x, y = ds.test
            ev = robust_evaluate(model, x, y, attack)
            fields = {f.name: getattr(ev, f.name) for f in dataclasses.fields(RobustEvaluation)}
            return RobustnessResult(**fields, provenance={"split": "test", "wall_time_s": time.perf_counter() - start})

        def sharpness(c: RunConfig) -> SharpnessResult:
            a = c.adversarial
            res = epsilon_sharpness(build_objective(c, model, ds), a.sharpness_epsilon,
                                    steps=a.sharpness_steps, seed=c.hessian.seed)
            res.provenance["objective_split"] = c.objective.split
            return res

        rob = result_step(rd, "robustness", RobustnessResult, cfg, upstream, force, info, robustness)
        sharp = result_step(rd, "sharpness", SharpnessResult, cfg, upstream, force, info, sharpness)
        computed = {s: s in rd.fresh for s in ("train", "hessian_eigs", "hessian_trace", "scan", "robustness",
                                               "sharpness")}
    return {"train": tr, "eigs": hess["eigs"], "trace": hess["trace"], "scan": scan, "robustness": rob,
            "sharpness": sharp, "computed_now": computed, "model_info": info}


def _variant_summary(name: str, out: Path, res: dict[str, Any]) -> dict[str, Any]:
    tr, rob, sharp, scan = res["train"], res["robustness"], res["sharpness"], res["scan"]
    eigs, trace = res["eigs"], res["trace"]
    i = tr.minimum
    loss = np.asarray(scan.loss, dtype=float)
    return {
        "dir": str(out / name),
        "adversarial_training": bool(tr.config.get("attack")),
        "train_attack": tr.config.get("attack"),
        "train_loss": _finite(tr.train_loss[i]), "train_accuracy": _finite(tr.train_metric[i]),
        "test_loss": _finite(tr.test_loss[i]), "test_accuracy": _finite(tr.test_metric[i]),
        "clean_accuracy": rob.clean_accuracy, "robust_accuracy": rob.robust_accuracy,
        "clean_loss": rob.clean_loss, "robust_loss": rob.robust_loss, "n_test": rob.n_samples,
        "eval_attack": rob.attack, "robust_loss_function": rob.loss,
        "lambda_max": float(eigs.eigenvalues[0]), "top_eigenvalues": eigs.eigenvalues,
        "eigenvalue_error_bounds": eigs.error_bounds, "eigs_converged": bool(eigs.converged),
        "trace": trace.estimate, "trace_stderr": trace.stderr, "trace_method": trace.method,
        "sharpness": sharp.sharpness, "sharpness_relative": sharp.relative, "sharpness_loss0": sharp.loss0,
        "sharpness_epsilon": sharp.epsilon, "sharpness_steps": sharp.steps,
        "sharpness_convention": sharp.convention,
        "scan": {"dims": int(loss.ndim), "shape": list(loss.shape), "directions": scan.info.get("directions"),
                 "span": [float(scan.alphas[0]), float(scan.alphas[-1])],
                 "center_loss": _finite(scan.center_loss), "min_loss": _finite(np.nanmin(loss)),
                 "max_loss": _finite(np.nanmax(loss))},
        "model_info": res["model_info"], "computed_now": res["computed_now"],
    }


def _flatter(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """For each flatness measure: both values, which variant has the larger (sharper by that measure) and the
    smaller one ("tie" when equal), and adversarial / standard."""
    out: dict[str, Any] = {}
    for m in FLATNESS_MEASURES:
        s, a = entries["standard"][m], entries["adversarial"][m]
        if s is None or a is None or not (math.isfinite(s) and math.isfinite(a)):
            larger = smaller = None
        elif s == a:
            larger = smaller = "tie"
        else:
            larger, smaller = ("standard", "adversarial") if s > a else ("adversarial", "standard")
        ratio = a / s if s not in (None, 0) and a is not None else None
        out[m] = {"standard": s, "adversarial": a, "larger": larger, "smaller": smaller,
                  "ratio_adversarial_to_standard": ratio}
    return out


def _surfaces_figure(scans: dict[str, LandscapeScan]) -> Any:
    """Both filter-normalized scans on one loss scale: 1D curves on one axis, or 2D contours side by side."""
    import matplotlib.pyplot as plt
    losses = [np.asarray(s.loss, dtype=float) for s in scans.values()]
    lo = float(min(np.nanmin(v) for v in losses))
    hi = float(max(np.nanmax(v) for v in losses))
    if hi <= lo:
        hi = lo + 1e-12
    if all(v.ndim == 1 for v in losses):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for k, (name, s) in enumerate(scans.items()):
            ax.plot(s.alphas, s.loss, "o-" if k == 0 else "s--", ms=3, color=f"C{k}", label=name)
        ax.set_xlabel("alpha (filter-normalized random direction)")
        ax.set_ylabel("loss")
        pad = 0.05 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title("loss along a filter-normalized direction")
        ax.legend()
        ax.grid(alpha=0.3)
        return fig
    fig, axes = plt.subplots(1, len(scans), figsize=(5.4 * len(scans) + 1, 4.4), squeeze=False)
    levels = np.linspace(lo, hi, 31)
    cs = None
    for ax, (name, s) in zip(axes[0], scans.items()):
        z = np.asarray(s.loss, dtype=float)
        if z.ndim == 1:  # mixed dims cannot happen with one config; drawn as a line for safety
            ax.plot(s.alphas, z)
            ax.set_title(name)
            continue
        A, B = np.meshgrid(s.alphas, s.betas, indexing="ij")
        cs = ax.contourf(A, B, z, levels=levels, cmap="viridis", extend="neither")
        ax.contour(A, B, z, levels=levels, colors="k", linewidths=0.3)
        ax.plot([0], [0], "r*", ms=10)
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta")
        ax.set_title(f"{name} (filter-normalized)")
        ax.set_aspect("equal")
    if cs is not None:
        fig.colorbar(cs, ax=axes[0][-1], label="loss (shared scale)")
    return fig


def _bars_figure(entries: dict[str, dict[str, Any]]) -> Any:
    """Clean vs robust test accuracy, lambda_max, trace and epsilon-sharpness of both variants."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    names = list(entries)
    colors = [f"C{k}" for k in range(len(names))]
    x = np.arange(len(names))
    ax = axes[0]
    w = 0.38
    ax.bar(x - w / 2, [entries[n]["clean_accuracy"] for n in names], w, label="clean", color="C2")
    ax.bar(x + w / 2, [entries[n]["robust_accuracy"] for n in names], w, label="robust", color="C3")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_title("clean vs robust accuracy")
    ax.legend(fontsize=8)
    for ax, key, title in ((axes[1], "lambda_max", "lambda_max (top Hessian eigenvalue)"),
                           (axes[2], "trace", "Hessian trace"),
                           (axes[3], "sharpness", "epsilon-sharpness")):
        vals = [np.nan if entries[n][key] is None else entries[n][key] for n in names]
        ax.bar(x, vals, 0.6, color=colors)
        if key == "trace":
            err = [np.nan if entries[n]["trace_stderr"] is None else entries[n]["trace_stderr"] for n in names]
            ax.errorbar(x, vals, yerr=err, fmt="none", ecolor="k", capsize=4)
        ax.set_xticks(x, names)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[3].set_xlabel(f"epsilon = {entries[names[0]]['sharpness_epsilon']}", fontsize=8)
    return fig


def _write_figures(out: Path, scans: dict[str, LandscapeScan], entries: dict[str, dict[str, Any]]) -> list[str]:
    drawers = {"robust_surfaces.png": lambda: _surfaces_figure(scans), "robust_bars.png": lambda: _bars_figure(entries)}
    return draw_figures(out, {name: drawers[name] for name in PLOTS})


def run_robust(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """The ``robust`` job: a standard and an adversarially trained model, their robustness and flatness.

    Parameters
    ----------
    cfg : RunConfig
        The model, data, training, ``[hessian]``, ``[scan]`` (directions forced to "filter") and
        ``[adversarial]`` settings shared by both variants.
    out : Path
        The report directory; each variant's steps live in ``out/standard/`` and ``out/adversarial/``.
    progress : bool
    force : bool
        Recompute every step of both variants, training included.

    Returns
    -------
    dict
        The summary written to ``out/robust.json`` (NaN as null): ``variants`` (per variant: clean / robust test
        accuracy and loss, ``lambda_max``, ``trace``, ``sharpness`` and ``sharpness_relative`` with their
        ``sharpness_convention``, ``scan`` centre / min / max loss, train and evaluation attacks, train accuracy,
        ``computed_now``), ``flatter`` (per measure: which variant is larger), ``adversarial`` (the settings),
        ``figures``, ``files``, ``wall_time_s``.

    Raises
    ------
    ValueError
        An invalid variant configuration (before any work) or a step's own errors.
    """
    start = time.perf_counter()
    out = Path(out)
    configs = variant_configs(cfg)
    if cfg.scan.directions != "filter":
        log.info("robust: scan.directions=%r replaced by 'filter' (filter-normalized surfaces)", cfg.scan.directions)
    results: dict[str, dict[str, Any]] = {}
    with open_rundir(out):
        for name, vcfg in configs.items():
            log.info("robust: %s -> %s", name, out / name)
            results[name] = _run_variant(vcfg, out / name, progress, force)
        entries = {name: _variant_summary(name, out, res) for name, res in results.items()}
        entries = json_ready(entries)
        figures = _write_figures(out, {n: r["scan"] for n, r in results.items()}, entries)
        summary = {
            "variants": entries,
            "flatter": _flatter(entries),
            "adversarial": dataclasses.asdict(cfg.adversarial),
            "scan_directions": "filter", "scan_directions_configured": cfg.scan.directions,
            "computed_now": any(any(e["computed_now"].values()) for e in entries.values()),
            "figures": figures,
            "files": {"robust.json": str(out / "robust.json"), **{f: str(out / f) for f in figures},
                      **{f"{n}_dir": str(out / n) for n in configs}},
            "config_digest": cfg.digest(),
            "wall_time_s": time.perf_counter() - start,
        }
        summary = json_ready(summary)
        write_json(out / "robust.json", summary)
    return summary


def _num(v: Any, fmt: str = ".4g") -> str:
    return "nan" if v is None else format(v, fmt)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few lines about ``robust.json``'s summary for the command line."""
    adv = summary["adversarial"]
    lines = [f"robust: {adv['kind']} {adv['norm']} epsilon={adv['epsilon']} (train {adv['steps']} steps, "
             f"evaluation {adv['eval_steps']} steps); epsilon-sharpness at {adv['sharpness_epsilon']}"]
    for name, e in summary["variants"].items():
        ran = [s for s, done in e["computed_now"].items() if done]
        lines.append(f"  {name:<11}: clean acc {_num(e['clean_accuracy'], '.3f')}, robust acc "
                     f"{_num(e['robust_accuracy'], '.3f')}, lambda_max {_num(e['lambda_max'])}, trace "
                     f"{_num(e['trace'])} +- {_num(e['trace_stderr'], '.2g')}, sharpness {_num(e['sharpness'])} "
                     f"(relative {_num(e['sharpness_relative'])})" + ("" if ran else " [reused]"))
    larger = {m: v["larger"] for m, v in summary["flatter"].items()}
    lines.append("  larger (sharper by that measure): " + ", ".join(f"{m} {w}" for m, w in larger.items()))
    lines += [f"{name}: {path}" for name, path in summary["files"].items()]
    return lines
