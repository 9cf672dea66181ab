"""The job behind ``qlandscape merge``: two models trained from different seeds, the barriers on the straight
line between them before and after permutation alignment (Git Re-Basin), and their weight-averaged merges.

:func:`run_merge` trains model A and model B of the configured architecture, each in its own ordinary run
directory ``DIR/seed<s>/`` (``model.seed``, ``train.seed`` and, for the patch QNN, ``patch.seed`` set to ``s``;
every other setting equal), then measures in ``DIR`` one stamped, resumable step per alignment method,
``merge_<method>.{npz,json}`` (each a :class:`~qlandscape.merging.MergeResult`: the plain line ``a -> b`` and the
line ``a -> aligned b``), or ``merge_plain`` when no alignment is requested or the model has no supported
permutation symmetry. Each step builds on both trainings' identities, so retraining either model recomputes it.
The summary ``merge.json`` and the picture ``merge.png`` are rewritten from the stored results on every run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..config import RunConfig
from ..merging.merge import MergeResult, interpolation_barriers
from ..merging.permutation import permutation_spec
from ..rundir import draw_figures, json_ready, open_rundir, write_json
from .build import DTYPES, build_loss, model_info
from .steps import result_step
from .training import train_step

__all__ = ["run_merge", "summary_lines", "fast_overrides", "seed_config", "symmetry_note", "FAST_OVERRIDES"]

log = logging.getLogger("qlandscape")

FAST_OVERRIDES: tuple[str, ...] = ("data.n_samples=300", "train.epochs=10", "merge.n_points=11")
"""``--fast`` settings of the ``merge`` command (applied before the user's ``--set``)."""


def fast_overrides(fast: bool) -> list[str]:
    """The ``section.key=value`` overrides ``merge`` applies before the user's own (none unless ``fast``)."""
    return list(FAST_OVERRIDES) if fast else []


def seed_config(cfg: RunConfig, seed: int) -> RunConfig:
    """``cfg`` for the model of ``seed``: ``model.seed`` and ``train.seed`` (and ``patch.seed``, the circuit
    angles' initialization, for ``model.kind="patch_qnn"``) set to ``seed``; everything else unchanged."""
    changes: dict[str, Any] = {"model": dataclasses.replace(cfg.model, seed=seed),
                               "train": dataclasses.replace(cfg.train, seed=seed)}
    if cfg.model.kind == "patch_qnn":
        changes["patch"] = dataclasses.replace(cfg.patch, seed=seed)
    return dataclasses.replace(cfg, **changes)


_NOTES = {
    "patch_qnn": "no alignment: a patch QNN has no permutation symmetry to align. Each patch's circuit sees a "
                 "different input patch, so circuits cannot be exchanged, and relabelling qubits is not a symmetry "
                 "of a fixed circuit (the ansatz's entangling pattern and the encoding fix the wire order); the "
                 "barriers are reported without alignment.",
    "patch_mlp": "no alignment: the hidden units of each patch's MLP could be permuted (the patches themselves "
                 "cannot be exchanged: each sees a different input patch), but alignment of PatchMLP is not "
                 "implemented; the barriers are reported without alignment.",
}


def symmetry_note(kind: str, reason: str) -> str:
    """Why a model of ``kind`` is measured without alignment (``reason``: :func:`permutation_spec`'s error)."""
    return _NOTES.get(kind, f"no alignment: {reason}; the barriers are reported without alignment.")


def _check(cfg: RunConfig) -> None:
    if cfg.model.batchnorm:
        raise ValueError("qlandscape merge does not support model.batchnorm=true: the interpolation varies the "
                         "parameters only, so BatchNorm running statistics are not interpolated (every point would "
                         "use model A's); set model.batchnorm=false")


def _figure(results: dict[str, MergeResult], kind: str, split: str) -> Any:
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    first = next(iter(results.values()))
    t = np.asarray(first.t)
    for ax, curve, label in ((a, first.loss_plain, "loss"), (b, first.error_plain, "0-1 error")):
        ax.plot(t, curve, "o-", color="k", label="plain")
    for i, (method, res) in enumerate((m, r) for m, r in results.items() if r.align is not None):
        a.plot(t, res.loss_aligned, "s-", color=f"C{i}", label=f"{method} matching")
        b.plot(t, res.error_aligned, "s-", color=f"C{i}", label=f"{method} matching")
    a.set_ylabel(f"{split} loss")
    b.set_ylabel(f"{split} 0-1 error")
    b.set_ylim(-0.02, 1.02)
    for ax, what in ((a, "loss"), (b, "0-1 error")):
        ax.set_xlabel("t (model A -> model B)")
        ax.set_title(f"{kind}: {what} on the straight line")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def _curves(res: MergeResult, aligned: bool) -> dict[str, Any]:
    if not aligned:
        return {"loss": res.loss_plain, "error": res.error_plain, "loss_barrier": res.barrier_plain,
                "error_barrier": res.error_barrier_plain, "merged_loss": res.merged_loss_plain,
                "merged_accuracy": res.merged_accuracy_plain}
    return {"loss": res.loss_aligned, "error": res.error_aligned, "loss_barrier": res.barrier_aligned,
            "error_barrier": res.error_barrier_aligned, "merged_loss": res.merged_loss_aligned,
            "merged_accuracy": res.merged_accuracy_aligned, "iterations": res.iterations,
            "similarity_before": res.similarity_before, "similarity_after": res.similarity_after,
            "identity": res.identity, "all_identity": bool(res.identity is not None and all(res.identity)),
            "wall_time_s": res.wall_time_s}


def run_merge(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """The ``merge`` job: train two models (``merge.seeds``), then the barriers before and after alignment.

    Parameters
    ----------
    cfg : RunConfig
        ``[merge]`` and the model / training sections (``objective.loss`` and ``objective.dtype`` are the
        loss and arithmetic of the curves; the models are evaluated in eval mode).
    out : Path
        The run directory; model A and model B are trained (or reused) in ``out/seed<s>/``.
    progress : bool
    force : bool
        Retrain both models and recompute every step.

    Returns
    -------
    dict
        The summary written to ``out/merge.json`` (NaN as null).

    Raises
    ------
    ValueError
        ``model.batchnorm=true`` (checked before any training): the straight line interpolates the parameters
        only, so the models' differing BatchNorm running statistics are not interpolated and an eval-mode curve
        would be wrong.

    Notes
    -----
    Models without a supported permutation symmetry (the patch QNN and the patch MLP:
    :func:`~qlandscape.merging.permutation_spec` raises) are measured on the plain line only, and the summary's
    ``symmetry_note`` says why.
    """
    _check(cfg)
    start = time.perf_counter()
    out = Path(out)
    seeds = [int(s) for s in cfg.merge.seeds]
    kind = cfg.model.kind
    with open_rundir(out) as rd:
        trained: list[Any] = []
        training: dict[str, Any] = {}
        upstream: dict[str, str] = {}
        computed: dict[str, bool] = {}
        for label, seed in zip(("a", "b"), seeds):
            sub = out / f"seed{seed}"
            scfg = seed_config(cfg, seed)
            with open_rundir(sub) as srd:
                write_json(sub / "config.json", scfg.to_dict())
                (model, tr, ds), stamp = train_step(srd, scfg, progress, force)
                computed[f"train_seed{seed}"] = "train" in srd.fresh
            trained.append((model, ds))
            upstream[f"train_seed{seed}"] = stamp.identity
            i = tr.minimum
            training[label] = {"seed": seed, "dir": str(sub), "record": int(i),
                               "train_loss": tr.train_loss[i], "test_accuracy": tr.test_metric[i]}
        (model_a, ds), (model_b, _) = trained
        info = model_info(model_a)

        note: Optional[str] = None
        methods: list[Optional[str]] = list(cfg.merge.align) or [None]
        try:
            permutation_spec(model_a)
        except ValueError as exc:
            note = symmetry_note(kind, str(exc))
            methods = [None]
            log.warning("merge: %s", note)

        def measure(method: Optional[str]) -> Any:
            def compute(c: RunConfig) -> MergeResult:
                m, o = c.merge, c.objective
                data = ds.test if m.split == "test" else ds.train
                return interpolation_barriers(model_a, model_b, data, n_points=m.n_points,
                                              align=method,  # type: ignore[arg-type]
                                              loss=build_loss(o.loss), mode="eval",
                                              dtype=DTYPES[o.dtype])
            return compute

        results: dict[str, MergeResult] = {}
        for method in methods:
            name = f"merge_{method or 'plain'}"
            results[method or "plain"] = result_step(rd, name, MergeResult, cfg, upstream, force, info,
                                                     measure(method))
            computed[name] = name in rd.fresh
        first = next(iter(results.values()))
        figures = draw_figures(out, {"merge.png": lambda: _figure(results, kind, cfg.merge.split)}, dpi=120)
    aligned = {m: _curves(r, True) for m, r in results.items() if r.align is not None}
    summary = {
        "model_kind": kind, "n_params": info.get("n_params"), "model_info": info, "split": cfg.merge.split,
        "seeds": seeds, "n_points": len(first.t), "loss": cfg.objective.loss, "dtype": cfg.objective.dtype,
        "mode": first.mode, "t": first.t,
        "endpoints": {"a": {"seed": seeds[0], "loss": first.loss_a, "accuracy": first.accuracy_a},
                      "b": {"seed": seeds[1], "loss": first.loss_b, "accuracy": first.accuracy_b}},
        "training": training,
        "plain": _curves(first, False),
        "align_requested": list(cfg.merge.align), "align": list(aligned), "aligned": aligned,
        "symmetry_note": note,
        "computed_now": any(computed.values()), "computed_steps": computed,
        "wall_time_s": {"this_run": time.perf_counter() - start,
                        **{f"merge_{m}": r.wall_time_s for m, r in results.items()}},
        "files": {name: str(out / name) for name in ("merge.json", *figures, *(f"merge_{m}.npz" for m in results),
                                                      *(f"merge_{m}.json" for m in results))},
    }
    summary = json_ready(summary)
    write_json(out / "merge.json", summary)
    return summary


def _f(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few readable lines of a :func:`run_merge` summary."""
    a, b, p = summary["endpoints"]["a"], summary["endpoints"]["b"], summary["plain"]
    lines = [f"merge {summary['model_kind']} ({summary['n_params']} parameters), seeds {summary['seeds']}, "
             f"{summary['split']} split, {summary['n_points']} points",
             f"  endpoints: A loss {_f(a['loss'])} acc {_f(a['accuracy'])}; "
             f"B loss {_f(b['loss'])} acc {_f(b['accuracy'])}",
             f"  plain:  loss barrier {_f(p['loss_barrier'])}, error barrier {_f(p['error_barrier'])}, "
             f"merged accuracy {_f(p['merged_accuracy'])}"]
    for method, r in summary["aligned"].items():
        lines.append(f"  {method}: loss barrier {_f(r['loss_barrier'])}, error barrier {_f(r['error_barrier'])}, "
                     f"merged accuracy {_f(r['merged_accuracy'])}, similarity {_f(r['similarity_before'], 3)} -> "
                     f"{_f(r['similarity_after'], 3)}, {r['iterations']} iterations"
                     + (" (identity permutations)" if r["all_identity"] else ""))
    if summary.get("symmetry_note"):
        lines.append(f"  note: {summary['symmetry_note']}")
    lines.append(f"  computed now: {summary['computed_now']}; summary {summary['files']['merge.json']}, "
                 f"figure {summary['files'].get('merge.png', 'not drawn (see the log)')}")
    return lines
