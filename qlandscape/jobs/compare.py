"""``qlandscape compare``: a patch quantum network and its parameter-matched classical patch MLP,
trained on the same digits task and measured with the same engine, in one report.

Each model runs the ordinary resumable job steps (:mod:`qlandscape.jobs`) in its own
subdirectory (``DIR/patch_qnn/``, ``DIR/patch_mlp/``), so a rerun reuses finished steps and an
interrupted job resumes. The report itself (``report.json``, ``report.md`` and side-by-side PNGs)
is cheap and always rewritten from the stored results.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..config import RunConfig
from ..curvature import DensityResult, EigResult, TraceResult
from ..landscape import LandscapeScan, pca_directions
from ..rundir import atomic_write_bytes, draw_figures, open_rundir, write_json
from ..train import TrainResult
from .hessian import run_hessian
from .scan import run_scan
from .training import ensure_trained

log = logging.getLogger("qlandscape")

KINDS: tuple[str, ...] = ("patch_qnn", "patch_mlp")
"""The compared models, in report order (their subdirectory names)."""

PLOTS: tuple[str, ...] = ("density.png", "landscape_pca.png", "landscape_random.png", "learning_curves.png")
"""Side-by-side figures written next to ``report.json``."""

# Settings layered on top of the config file (before the user's --set overrides).
# Both modes: Adam (the QNN's rotation angles train poorly with plain SGD at one learning rate shared with
# the MLP), Lanczos for the top eigenvalues and Hutchinson for the trace (a dense Hessian of a QNN costs
# n_params HVPs of a simulated circuit), scans in the trajectory-PCA plane and in random directions.
COMMON_OVERRIDES: tuple[str, ...] = (
    "train.optimizer='adam'", "train.lr=0.05", "train.batch_size=32", "train.record_every=1",
    "hessian.eig_method='lanczos'", "hessian.trace_method='hutchinson'", "scan.dims=2",
)
FAST_OVERRIDES: tuple[str, ...] = COMMON_OVERRIDES + (
    "data.n_samples=350", "train.epochs=12", "hessian.top_k=5", "hessian.tol=1e-3", "hessian.trace_probes=20",
    "hessian.density_probes=2", "hessian.density_steps=25", "scan.n_points=11",
)
FULL_OVERRIDES: tuple[str, ...] = COMMON_OVERRIDES + (
    "train.epochs=30", "hessian.top_k=5", "hessian.trace_probes=100", "hessian.density_probes=5",
    "hessian.density_steps=80", "scan.n_points=21",
)


def compare_overrides(fast: bool) -> list[str]:
    """The ``section.key=value`` overrides ``compare`` applies before the user's own."""
    return list(FAST_OVERRIDES if fast else FULL_OVERRIDES)


def model_config(cfg: RunConfig, kind: str) -> RunConfig:
    """``cfg`` with ``model.kind = kind`` (both compared models share every other setting)."""
    if kind not in KINDS:
        raise ValueError(f"compare model kind must be one of {list(KINDS)}, got {kind!r}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind=kind))


def scan_configs(cfg: RunConfig) -> dict[str, RunConfig]:
    """The two 2D scans of the report.

    ``landscape_pca``: the trajectory-PCA plane, each axis spanning the trajectory's extent plus
    ``scan.margin`` of it (as Kawase 2025's landscape pictures). ``landscape_random``: two
    filter-normalized Gaussian directions over ``[-scan.span, scan.span]``; 1-D parameter tensors (each
    patch circuit's angle vector, biases) are rescaled as a whole (``one_d="layer"``) so that the
    circuits' angles move too.
    """
    s = cfg.scan
    return {
        "landscape_pca": dataclasses.replace(cfg, scan=dataclasses.replace(s, dims=2, directions="pca",
                                                                            span_mode="trajectory")),
        "landscape_random": dataclasses.replace(cfg, scan=dataclasses.replace(s, dims=2, directions="filter",
                                                                               one_d="layer", span_mode="fixed")),
    }


def _finite(x: float) -> Optional[float]:
    """JSON-safe float (NaN/inf -> None)."""
    x = float(x)
    return x if math.isfinite(x) else None


def run_model(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Train one model and run its Hessian and both scans (each step cached in ``out``).

    Returns
    -------
    dict
        ``{"train": TrainResult, "eigs", "trace", "density", "landscape_pca", "landscape_random",
        "wall_s": seconds spent in this call}`` (results are reloaded from ``out`` when cached).
    """
    start = time.perf_counter()
    with open_rundir(out):  # one session: ``force`` retrains once, not once per step
        write_json(out / "config.json", cfg.to_dict())
        _, tr, _ = ensure_trained(cfg, out, progress, force=force)
        res: dict[str, Any] = {"train": tr}
        res.update(run_hessian(cfg, out, progress, force=force))
        for name, scfg in scan_configs(cfg).items():
            res[name] = run_scan(scfg, out, progress, force=force, name=name)
    res["wall_s"] = time.perf_counter() - start
    return res


def summarize(kind: str, res: dict[str, Any]) -> dict[str, Any]:
    """The report entry of one model (JSON-able).

    Keys: kind, class, n_params, device_choice (None for classical), matched (parameter matching, MLP
    only), grid, train/test loss and accuracy (final checkpoint), top_eigenvalues (largest first) with
    eigenvalue_error_bounds, trace with trace_stderr, density summary, scans (centre loss, loss range,
    spans), wall_time_s per step and wall_time_per_train_step_s.
    """
    tr: TrainResult = res["train"]
    eig: EigResult = res["eigs"]
    trace: TraceResult = res["trace"]
    dens: DensityResult = res["density"]
    info = dict(tr.config.get("model_info", {}))
    n_steps = int(tr.steps[-1]) if len(tr.steps) else 0
    scans = {}
    for name in ("landscape_pca", "landscape_random"):
        sc: LandscapeScan = res[name]
        scans[name] = {"shape": list(sc.loss.shape), "center_loss": _finite(sc.center_loss),
                       "min_loss": _finite(np.nanmin(sc.loss)), "max_loss": _finite(np.nanmax(sc.loss)),
                       "alphas": [_finite(sc.alphas[0]), _finite(sc.alphas[-1])],
                       "betas": [_finite(sc.betas[0]), _finite(sc.betas[-1])],
                       "directions": sc.info.get("directions"),
                       "explained_variance_ratio": sc.info.get("explained_variance_ratio"),
                       "wall_time_s": _finite(sc.wall_time_s)}
    return {
        "kind": kind,
        "class": info.get("class"),
        "n_params": info.get("n_params", int(tr.trajectory.shape[1])),
        "device_choice": info.get("device_choice"),
        "matched": info.get("matched"),
        "grid": info.get("grid"),
        "train_loss": _finite(tr.train_loss[tr.minimum]), "train_accuracy": _finite(tr.train_metric[tr.minimum]),
        "test_loss": _finite(tr.test_loss[tr.minimum]), "test_accuracy": _finite(tr.test_metric[tr.minimum]),
        "epochs": tr.config.get("epochs"), "optimizer_steps": n_steps,
        "top_eigenvalues": [float(v) for v in eig.eigenvalues],
        "eigenvalue_error_bounds": [float(v) for v in eig.error_bounds],
        "eigenvalue_method": eig.method, "eigenvalues_converged": bool(eig.converged),
        "trace": float(trace.estimate), "trace_stderr": float(trace.stderr), "trace_method": trace.method,
        "density": {"lambda_min": float(dens.lambda_min), "lambda_max": float(dens.lambda_max),
                    "n_probes": int(dens.nodes.shape[0]), "n_steps": int(dens.nodes.shape[1])},
        "scans": scans,
        "wall_time_s": {"train": float(tr.wall_time_s), "hessian_eigs": float(eig.wall_time_s),
                        "hessian_trace": float(trace.wall_time_s), "hessian_density": float(dens.wall_time_s),
                        **{name: scans[name]["wall_time_s"] for name in scans}},
        "wall_time_per_train_step_s": float(tr.wall_time_s) / max(n_steps, 1),
        "hessian_hvps": {"eigs": int(eig.n_hvp), "trace": int(trace.n_hvp), "density": int(dens.n_hvp)},
    }


# ------------------------------------------------------------------------------------------- figures
def _pair_axes(title: str) -> tuple[Any, list[Any]]:
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    fig.suptitle(title)
    return fig, list(axes)


def _label(kind: str, entry: dict[str, Any]) -> str:
    return f"{kind} ({entry['n_params']} params)"


def write_figures(out: Path, results: dict[str, dict[str, Any]], entries: dict[str, dict[str, Any]]) -> list[str]:
    """``density.png``, ``landscape_pca.png``, ``landscape_random.png`` and ``learning_curves.png``.

    Returns
    -------
    list of str
        The figures written. One that fails to draw is logged (one line), left out, and any older
        file of that name deleted, so the report never links a stale picture.
    """
    drawers = {"density.png": lambda: _density_figure(results, entries),
               "landscape_pca.png": lambda: _scan_figure("landscape_pca", results, entries),
               "landscape_random.png": lambda: _scan_figure("landscape_random", results, entries),
               "learning_curves.png": lambda: _learning_curves_figure(results)}
    return draw_figures(out, {name: drawers[name] for name in PLOTS})


def _density_figure(results: dict[str, dict[str, Any]], entries: dict[str, dict[str, Any]]) -> Any:
    from ..landscape.plot import plot_density
    fig, axes = _pair_axes("Hessian spectral density (SLQ, Gaussian-smoothed)")
    for ax, kind in zip(axes, KINDS):
        plot_density(results[kind]["density"], ax=ax)
        ax.set_title(_label(kind, entries[kind]))
    return fig


_SCAN_TITLES = {"landscape_pca": "training loss in the trajectory-PCA plane (path: white)",
                "landscape_random": "training loss in filter-normalized random directions"}


def _scan_figure(name: str, results: dict[str, dict[str, Any]], entries: dict[str, dict[str, Any]]) -> Any:
    from ..landscape.plot import plot_contour
    fig, axes = _pair_axes(_SCAN_TITLES[name])
    for ax, kind in zip(axes, KINDS):
        coords = None
        if name == "landscape_pca":
            tr = results[kind]["train"]
            coords = pca_directions(tr.trajectory, k=2, center=tr.minimum).coords
        plot_contour(results[kind][name], ax=ax, trajectory=coords)
        evr = entries[kind]["scans"][name].get("explained_variance_ratio")
        extra = f", PC var {evr[0]:.2f}/{evr[1]:.2f}" if evr else ""
        ax.set_title(_label(kind, entries[kind]) + extra)
        if name == "landscape_pca":
            ax.set_xlabel("PC1")
            ax.set_ylabel("PC2")
    return fig


def _learning_curves_figure(results: dict[str, dict[str, Any]]) -> Any:
    fig, axes = _pair_axes("learning curves (full-data loss / accuracy at each epoch)")
    for i, kind in enumerate(KINDS):
        tr: TrainResult = results[kind]["train"]
        times = tr.epochs_at_records()
        epochs = times if times is not None else np.arange(len(tr.train_loss)) * int(tr.config.get("record_every", 1))
        for ax, (train_y, test_y) in zip(axes, ((tr.train_loss, tr.test_loss), (tr.train_metric, tr.test_metric))):
            ax.plot(epochs, train_y, "-", color=f"C{i}", label=f"{kind} train")
            ax.plot(epochs, test_y, "--", color=f"C{i}", label=f"{kind} test")
    axes[0].set_ylabel("cross-entropy loss")
    axes[1].set_ylabel("accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
    return fig


# ------------------------------------------------------------------------------------------- report
def _fmt(x: Any, spec: str = ".4g") -> str:
    return "n/a" if x is None else format(x, spec)


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: a side-by-side table and short notes."""
    q, m = report["models"]["patch_qnn"], report["models"]["patch_mlp"]
    rows: list[tuple[str, str, str]] = [
        ("parameters", str(q["n_params"]), str(m["n_params"])),
        ("train loss / accuracy", f"{_fmt(q['train_loss'])} / {_fmt(q['train_accuracy'], '.3f')}",
         f"{_fmt(m['train_loss'])} / {_fmt(m['train_accuracy'], '.3f')}"),
        ("test loss / accuracy", f"{_fmt(q['test_loss'])} / {_fmt(q['test_accuracy'], '.3f')}",
         f"{_fmt(m['test_loss'])} / {_fmt(m['test_accuracy'], '.3f')}"),
        ("top-5 Hessian eigenvalues", ", ".join(_fmt(v) for v in q["top_eigenvalues"]),
         ", ".join(_fmt(v) for v in m["top_eigenvalues"])),
        ("eigensolver error bound on the top-5 (certified)", _fmt(max(q["eigenvalue_error_bounds"], default=None), ".2g"),
         _fmt(max(m["eigenvalue_error_bounds"], default=None), ".2g")),
        ("Hessian trace +- stderr", f"{_fmt(q['trace'])} +- {_fmt(q['trace_stderr'], '.2g')}",
         f"{_fmt(m['trace'])} +- {_fmt(m['trace_stderr'], '.2g')}"),
        ("SLQ spectrum range", f"[{_fmt(q['density']['lambda_min'])}, {_fmt(q['density']['lambda_max'])}]",
         f"[{_fmt(m['density']['lambda_min'])}, {_fmt(m['density']['lambda_max'])}]"),
        ("PCA-plane loss range", f"{_fmt(q['scans']['landscape_pca']['min_loss'])} - "
         f"{_fmt(q['scans']['landscape_pca']['max_loss'])}",
         f"{_fmt(m['scans']['landscape_pca']['min_loss'])} - {_fmt(m['scans']['landscape_pca']['max_loss'])}"),
        ("random-plane loss range", f"{_fmt(q['scans']['landscape_random']['min_loss'])} - "
         f"{_fmt(q['scans']['landscape_random']['max_loss'])}",
         f"{_fmt(m['scans']['landscape_random']['min_loss'])} - "
         f"{_fmt(m['scans']['landscape_random']['max_loss'])}"),
        ("wall time per training step", f"{q['wall_time_per_train_step_s'] * 1e3:.1f} ms",
         f"{m['wall_time_per_train_step_s'] * 1e3:.1f} ms"),
        ("wall time train / eigs / trace / density / scans (s)",
         " / ".join(_fmt(q["wall_time_s"][k], ".1f") for k in ("train", "hessian_eigs", "hessian_trace",
                                                               "hessian_density", "landscape_pca")) + " + "
         + _fmt(q["wall_time_s"]["landscape_random"], ".1f"),
         " / ".join(_fmt(m["wall_time_s"][k], ".1f") for k in ("train", "hessian_eigs", "hessian_trace",
                                                               "hessian_density", "landscape_pca")) + " + "
         + _fmt(m["wall_time_s"]["landscape_random"], ".1f")),
    ]
    d = report["data"]
    dev = q.get("device_choice") or {}
    matched = m.get("matched") or {}
    grid = q.get("grid") or {}
    evr_q = q["scans"]["landscape_pca"].get("explained_variance_ratio") or [float("nan")] * 2
    evr_m = m["scans"]["landscape_pca"].get("explained_variance_ratio") or [float("nan")] * 2
    lines = [
        "# Patch QNN vs parameter-matched patch MLP",
        "",
        f"Task: sklearn digits, {d['n_classes']} classes, {d['n_train']} train / {d['n_test']} test samples"
        f" ({'fast' if report['fast'] else 'full'} settings; {report['epochs']} epochs of "
        f"{report['optimizer']} at lr {report['lr']}, batch {report['batch_size']}).",
        "",
        "| | patch_qnn | patch_mlp |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "Notes",
        "",
        f"- Same patch structure: {grid.get('n_patches')} patches of {grid.get('patch_shape')} (stride "
        f"{grid.get('stride')}) on {grid.get('image_shape')} images, the same positional bias, aggregation and "
        "logit coefficient; only the per-patch function differs (circuit vs tanh MLP).",
        f"- Parameter matching: hidden width {matched.get('hidden')} gives {matched.get('mlp_n_params')} MLP "
        f"parameters for the QNN's {matched.get('qnn_n_params')} (one hidden unit = "
        f"{matched.get('params_per_hidden_unit')} parameters).",
        f"- Quantum simulator: {dev.get('name')} / {dev.get('diff_method')} ({dev.get('reason')}).",
        f"- Eigenvalues: {q['eigenvalue_method']} (converged: QNN {q['eigenvalues_converged']}, MLP "
        f"{m['eigenvalues_converged']}); trace: {q['trace_method']} with standard error. The error bound is "
        "numerical, one model's Hessian at one minimum: with converged=True each of the top-5 reported values is "
        "within it of the true eigenvalue, except with probability at most 1e-3 per verification run (its random start); it "
        "is one number for the five (from their joint residual), the largest is shown. It says nothing about "
        "other seeds: this is one training run per model (for intervals over seeds, run a sweep).",
        f"- PCA plane: explained variance QNN {_fmt(evr_q[0], '.2f')}/{_fmt(evr_q[1], '.2f')}, MLP "
        f"{_fmt(evr_m[0], '.2f')}/{_fmt(evr_m[1], '.2f')}; axes span the trajectory's extent plus "
        f"{report['scan_margin']:g} of it, in raw parameter units (all parameters, positional bias included).",
        "- Random plane: filter-normalized Gaussian directions, 1-D tensors (each circuit's angles) "
        "rescaled as a whole.",
        f"- Total wall time of this run: {report['wall_time_s']:.1f} s (cached steps cost ~0).",
        "",
        "Figures: " + ", ".join(f"[{p}]({p})" for p in report["figures"]),
        "",
    ]
    return "\n".join(lines)


def run_compare(cfg: RunConfig, out: Path, *, fast: bool = False, progress: bool = True,
                force: bool = False) -> dict[str, Any]:
    """Train and measure the patch QNN and its matched patch MLP; write the report into ``out``.

    Parameters
    ----------
    cfg : RunConfig
        Shared settings (``model.kind`` is replaced by each compared kind).
    out : Path
        Report directory; each model's steps are cached in ``out/<kind>/``.
    fast : bool
        Recorded in the report (the caller chose the settings, see :func:`compare_overrides`).

    Returns
    -------
    dict
        The content of ``report.json``: ``models`` (one :func:`summarize` entry per kind), ``data``,
        training settings, ``figures``, ``config_digest``, ``wall_time_s``.
    """
    start = time.perf_counter()
    with open_rundir(out):
        return _compare(cfg, out, fast, progress, force, start)


def _compare(cfg: RunConfig, out: Path, fast: bool, progress: bool, force: bool, start: float) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        log.info("compare: %s -> %s", kind, out / kind)
        results[kind] = run_model(model_config(cfg, kind), out / kind, progress, force)
    entries = {kind: summarize(kind, results[kind]) for kind in KINDS}
    figures = write_figures(out, results, entries)
    from .build import build_dataset
    ds = build_dataset(cfg)
    report: dict[str, Any] = {
        "fast": fast,
        "models": entries,
        "data": {"n_train": int(ds.x_train.shape[0]), "n_test": int(ds.x_test.shape[0]),
                 "n_classes": ds.n_classes, "image_shape": list(ds.image_shape)},
        "epochs": cfg.train.epochs, "optimizer": cfg.train.optimizer, "lr": cfg.train.lr,
        "batch_size": cfg.train.batch_size, "scan_margin": cfg.scan.margin,
        "figures": figures,
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "wall_time_s": time.perf_counter() - start,
    }
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "report.md", render_markdown(report).encode())
    log.info("compare report: %s", out / "report.md")
    return report


def main_summary(report: dict[str, Any], out: Path) -> Sequence[str]:
    """Short lines for the command line."""
    lines = []
    for kind, e in report["models"].items():
        lines.append(f"{kind}: {e['n_params']} params, test accuracy {_fmt(e['test_accuracy'], '.3f')}, "
                     f"lambda_max {_fmt(e['top_eigenvalues'][0] if e['top_eigenvalues'] else None)}, "
                     f"trace {_fmt(e['trace'])} +- {_fmt(e['trace_stderr'], '.2g')}")
    lines.append(f"report: {out / 'report.md'} ({report['wall_time_s']:.1f} s)")
    return lines
