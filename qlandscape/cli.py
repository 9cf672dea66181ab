"""``qlandscape`` command line: a thin layer over the job layer, :mod:`qlandscape.jobs`.

Subcommands: ``train``, ``hessian``, ``scan``, ``demo`` (train + hessian + scan: the main job),
``compare`` (a patch QNN against its parameter-matched classical patch MLP, one report), ``ntk`` (the
empirical NTK along training and kernel learning at time t), ``spawn`` (parent-child spawning barriers;
both :mod:`qlandscape.jobs.ntk`), ``robust`` (standard vs adversarially trained: robustness and sharpness;
:mod:`qlandscape.jobs.robust`), ``merge`` (barriers between two trained models before and after
permutation alignment; :mod:`qlandscape.jobs.merge`) and ``sweep``
(``run``, ``status``, ``report``: patch-count sweeps, :mod:`qlandscape.sweep`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .config import RunConfig, load_config

FAST_OVERRIDES: tuple[str, ...] = ("data.n_samples=300", "train.epochs=5", "hessian.trace_probes=20",
                                   "hessian.density_probes=2", "hessian.density_steps=40", "scan.n_points=11")
"""``--fast`` of ``train``, ``hessian``, ``scan`` and ``demo``: a smoke-size run (the user's ``--set`` win)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qlandscape", description="Loss-landscape geometry of classical and "
                                "quantum neural networks.")
    sub = p.add_subparsers(dest="command", required=True)
    helps = {"train": "train the configured model (reused if already trained with this config)",
             "hessian": "top-k Hessian eigenvalues, trace and spectral density of the trained model",
             "scan": "1D/2D loss-landscape scan (writes scan.npz/json and PNGs)",
             "demo": "the main job: train, then hessian and scan, on sklearn's bundled digits",
             "compare": "train a patch QNN and its parameter-matched patch MLP on the same digits task; write "
                        "report.json, report.md and side-by-side PNGs",
             "ntk": "the empirical NTK along training (kernel distance, velocity) and kernel learning at time t "
                    "(Fort et al. 2020); writes ntk.json, ntk_distance.png, ntk_learning.png",
             "spawn": "parent-child spawning: loss and 0-1 error barriers between SGD-noise children vs spawn time "
                      "(Fort et al. 2020); writes spawn.json and spawn.png",
             "robust": "train a standard and an adversarially trained model ([adversarial] attack) of the same "
                       "architecture; clean and robust accuracy, lambda_max, trace, epsilon-sharpness and "
                       "filter-normalized surfaces of both; writes robust.json and PNGs",
             "merge": "train two models from different seeds; loss and 0-1 error barriers on the straight line "
                      "between them before and after permutation alignment (Git Re-Basin) and the weight-averaged "
                      "merges; writes merge.json and merge.png"}
    for name, text in helps.items():
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--config", type=Path, default=None, help="TOML config (default: bundled default.toml)")
        s.add_argument("--out", type=Path, default=Path("runs/default"), help="output directory (a run directory: one "
                       "qlandscape process at a time; a second one on it exits with an error naming the first's pid)")
        s.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value, e.g. --set hessian.top_k=3 (repeatable)")
        s.add_argument("--no-progress", action="store_true", help="disable progress bars")
        s.add_argument("--force", action="store_true", help="recompute every result the command "
                       "depends on, training included, even if present")
        if name == "compare":
            s.add_argument("--fast", action="store_true", help="small settings that finish in well under a minute on "
                           "2 CPU cores (digits subset, 11x11 scans, fewer probes)")
        if name in ("train", "hessian", "scan", "demo"):
            s.add_argument("--fast", action="store_true", help="small settings for a smoke run (300 digits, 5 epochs, "
                           "fewer probes, an 11-point scan grid); --set values win")
        if name in ("ntk", "spawn"):
            s.add_argument("--fast", action="store_true", help="small settings that finish in well under a minute on "
                           "2 CPU cores (300 digits, 4 epochs, " + ("40 kernel inputs, 100/60 kernel-learning points)"
                                                                    if name == "ntk" else "spawn times 0, 1, 2)")
                           + "; --set values win")
        if name in ("robust", "merge"):
            s.add_argument("--fast", action="store_true", help="small settings that finish in well under a minute on "
                           "2 CPU cores (a digits subset, few epochs, small scans); --set values win")
    _sweep_parser(sub)
    return p


def _sweep_parser(sub: Any) -> None:
    text = ("patch-count sweeps: a grid of patch QNNs and matched patch MLPs trained and measured at their minima, "
            "on a local process pool or a Dask cluster; resumable")
    sw = sub.add_parser("sweep", help=text, description=text)
    ssub = sw.add_subparsers(dest="sweep_command", required=True)
    run = ssub.add_parser("run", help="run every unfinished grid point of SPEC (finished runs are skipped)")
    run.add_argument("spec", help="a sweep spec TOML file, or a preset: digits-small, kawase2025")
    run.add_argument("--out", type=Path, required=True, help="the sweep directory (created; resumable)")
    run.add_argument("--workers", type=int, default=1, help="processes of the local pool (default 1)")
    run.add_argument("--executor", default="local", help="local (a spawn process pool, default), serial (in this "
                     "process) or dask://HOST:PORT (a Dask scheduler; pip install 'qlandscape[dask]')")
    run.add_argument("--threads", type=int, default=1, help="compute threads per run (default 1)")
    run.add_argument("--fast", action="store_true", help="shrink the spec to a smoke-size grid (first values of "
                     "each axis, two patch counts, one seed, 3 epochs, at most 300 samples, cheap measurements)")
    run.add_argument("--retry-failed", action="store_true", help="run the grid points that failed before again")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                     help="override a spec value, e.g. --set grid.seeds=[0,1,2] --set data.path=/data/mnist")
    run.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    for name, help_text in (("status", "done / failed / remaining runs and the time per run"),
                            ("report", "results.csv, summary.csv, report.md and PNG plots in DIR/report/")):
        s = ssub.add_parser(name, help=help_text, description=help_text)
        s.add_argument("out", type=Path, metavar="DIR", help="the sweep directory")
        if name == "report":
            s.add_argument("--all-runs", action="store_true", help="include runs of earlier specs in DIR")
            s.add_argument("--allow-missing", action="store_true", help="exit 0 even when runs of the spec are "
                           "missing or damaged (report.md lists them either way)")


def _sweep_main(args: argparse.Namespace) -> int:
    """``qlandscape sweep run|status|report``.

    Exit codes: 0 when everything asked for is done; 1 when runs are failed, damaged or unfinished
    (``run`` and ``report``: computed from the same records ``sweep status`` prints), another runner holds
    DIR, or the executor failed; 2 for a bad spec, arguments or an unusable DIR; 128 + the signal number
    when ``run`` was stopped by SIGINT/SIGTERM/SIGHUP (finished runs kept).
    """
    from .rundir import RunDirBusy, RunDirError
    from .sweep import IncompleteSweepError, load_spec, run_sweep, sweep_report, sweep_status
    from .sweep.lifecycle import ExecutorFailed, SweepInterrupted
    try:
        if args.sweep_command == "status":
            print(sweep_status(args.out).summary())
            return 0
        if args.sweep_command == "report":
            try:
                paths = sweep_report(args.out, all_runs=args.all_runs, allow_missing=args.allow_missing)
            except IncompleteSweepError as exc:
                print("\n".join(f"{k}: {v}" for k, v in exc.paths.items()))
                print(f"qlandscape: error: {exc}", file=sys.stderr)
                return 1
            print("\n".join(f"{k}: {v}" for k, v in paths.items()))
            if "effects" in paths:
                _print_effects(paths["effects"])
            return 0
        if args.workers < 1 or args.threads < 1:
            raise ValueError(f"--workers and --threads must be >= 1, got {args.workers} and {args.threads}")
        spec = load_spec(args.spec, args.overrides, fast=args.fast)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"qlandscape: error: {exc}", file=sys.stderr)
        return 2
    try:
        outcome = run_sweep(spec, args.out, workers=args.workers, executor=args.executor, threads=args.threads,
                            retry_failed=args.retry_failed, progress=not args.no_progress)
    except (ValueError, ImportError) as exc:
        print(f"qlandscape: error: {exc}", file=sys.stderr)
        return 2
    except RunDirBusy as exc:
        print(f"qlandscape: error: {exc}", file=sys.stderr)
        return 1
    except RunDirError as exc:
        print(f"qlandscape: error: --out: {exc}", file=sys.stderr)
        return 2
    except SweepInterrupted as exc:
        print(f"qlandscape: {exc}", file=sys.stderr)
        _print_status(args.out)
        return exc.exit_code
    except ExecutorFailed as exc:
        print(f"qlandscape: error: {exc}", file=sys.stderr)
        _print_status(args.out)
        return 1
    except RuntimeError as exc:  # any other runner error: one line, the records as they are
        print(f"qlandscape: error: {exc}", file=sys.stderr)
        _print_status(args.out)
        return 1
    busy = f", {len(outcome.busy)} being computed by another process" if outcome.busy else ""
    damaged = f", {len(outcome.damaged)} damaged (moved to damaged/) and computed again" if outcome.damaged else ""
    print(f"sweep {spec.name}: {len(outcome.done)} run(s) finished now, {len(outcome.skipped)} already done or "
          f"skipped, {len(outcome.failed)} failed{busy}{damaged}, in {outcome.wall_s:.1f} s -> {args.out}")
    st = _print_status(args.out)
    print(f"report: qlandscape sweep report {args.out}")
    return 0 if st is not None and st.complete else 1


def _print_effects(path: Path) -> None:
    """One line per series and axis of the sweep report's effects.csv: verdict, claim, ratio and interval."""
    import csv

    with open(path, newline="") as fh:
        effects = list(csv.DictReader(fh))
    from .sweep.report import series_label

    for e in effects:
        series = series_label(e, e["axis"])
        interval = f" [{float(e['ratio_lo']):.3g}, {float(e['ratio_hi']):.3g}]" if e.get("ratio_lo") else ""
        ratio = f"{float(e['ratio']):.3g}{interval}" if e.get("ratio") else "-"
        print(f"{e['verdict']:<12s} {e['claim']} ({series}): ratio {e['axis']} {e['to']} / {e['from']} = {ratio}"
              + (f" ({e['note']})" if e.get("note") else ""))


def _print_status(out: Path) -> Any:
    """Print ``sweep status`` of ``out`` (the records the exit code is computed from); returns it (None when
    ``out`` is not a sweep directory yet)."""
    from .sweep import sweep_status
    try:
        st = sweep_status(out)
    except FileNotFoundError:
        return None
    print(st.summary())
    return st


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "sweep":
        return _sweep_main(args)
    overrides = list(args.overrides)
    if args.command == "compare":
        from .jobs.compare import compare_overrides
        overrides = compare_overrides(args.fast) + overrides  # the user's --set win
    if args.command in ("ntk", "spawn"):
        from .jobs.ntk import fast_overrides
        overrides = fast_overrides(args.command, args.fast) + overrides  # the user's --set win
    if args.command == "robust":
        from .jobs.robust import fast_overrides as robust_fast
        overrides = robust_fast(args.fast) + overrides
    if args.command == "merge":
        from .jobs.merge import fast_overrides as merge_fast
        overrides = merge_fast(args.fast) + overrides
    if args.command in ("train", "hessian", "scan", "demo"):
        overrides = (list(FAST_OVERRIDES) if args.fast else []) + overrides
    kinds = [o for o in args.overrides if o.split("=", 1)[0].strip() == "model.kind"] if args.command == "compare" else []
    if kinds:
        print(f"qlandscape: configuration error: compare trains both kinds (patch_qnn and its matched patch_mlp) "
              f"and would ignore {kinds[0].strip()}; drop --set model.kind (train one kind with `qlandscape train`)",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, overrides)
        if args.command == "spawn":
            cfg.check_spawn()
        if args.command == "compare":  # both compared configurations are valid before any work
            from .jobs.compare import KINDS, model_config
            for kind in KINDS:
                model_config(cfg, kind)
    except (ValueError, FileNotFoundError) as exc:
        print(f"qlandscape: configuration error: {exc}", file=sys.stderr)
        return 2
    from .rundir import RunDirBusy, RunDirError, open_rundir, write_json
    out: Path = args.out
    try:
        with open_rundir(out):  # checked and locked before any work; held until the command is done
            write_json(out / "config.json", cfg.to_dict())
            return _run(args, cfg, out)
    except RunDirBusy as exc:
        print(f"qlandscape: error: {exc}", file=sys.stderr)
        return 1
    except RunDirError as exc:
        print(f"qlandscape: error: --out: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, cfg: RunConfig, out: Path) -> int:
    """The command's work, in the locked run directory ``out``."""
    from . import jobs
    from .adapter import CapabilityError
    from .quantum.devices import DeviceUnavailableError
    progress = not args.no_progress
    try:
        if args.command == "compare":
            from .jobs.compare import main_summary, run_compare
            report = run_compare(cfg, out, fast=args.fast, progress=progress, force=args.force)
            print("\n".join(main_summary(report, out)))
        if args.command == "train":
            _, tr, _ = jobs.ensure_trained(cfg, out, progress, force=args.force)
            i = tr.minimum
            print(f"train loss {tr.train_loss[i]:.6g}, test accuracy {tr.test_metric[i]:.4f} (record {i}) -> {out}")
        if args.command in ("hessian", "demo"):
            res = jobs.run_hessian(cfg, out, progress, force=args.force)
            for r in res.values():
                print(r.summary())  # type: ignore[attr-defined]
        if args.command == "ntk":
            from .jobs.ntk import run_ntk
            print("\n".join(_ntk_summary(run_ntk(cfg, out, progress, force=args.force))))
        if args.command == "spawn":
            from .jobs.ntk import run_spawn_job
            print("\n".join(_spawn_summary(run_spawn_job(cfg, out, progress, force=args.force))))
        if args.command == "robust":
            from .jobs.robust import run_robust, summary_lines
            print("\n".join(summary_lines(run_robust(cfg, out, progress, force=args.force))))
        if args.command == "merge":
            from .jobs.merge import run_merge
            from .jobs.merge import summary_lines as merge_lines
            print("\n".join(merge_lines(run_merge(cfg, out, progress, force=args.force))))
        if args.command in ("scan", "demo"):
            scan = jobs.run_scan(cfg, out, progress, force=args.force)
            print(f"scan {scan.loss.shape}: centre loss {scan.center_loss:.6g}, min {float(scan.loss.min()):.6g}, "
                  f"max {float(scan.loss.max()):.6g} -> {out / 'scan.png'}")
        fit = jobs.checked_fit(out) if args.command in ("train", "hessian", "scan", "demo") else None
        if fit is not None:  # the verdict on the trained weights everything above was measured at
            for message in fit.messages:
                print(f"warning: not at a minimum: {message}")
            if not fit.ok:
                print("warning: the results above describe the trained weights, which are not a minimum of the "
                      "training loss; lower train.lr or train longer before reading them as a minimum's geometry")
    except (ValueError, FloatingPointError, DeviceUnavailableError, CapabilityError) as exc:
        print(f"qlandscape: error: {exc}", file=sys.stderr)
        return 1
    print(f"results in {out}/")
    return 0


def _fmt(values: Any, digits: int = 3) -> str:
    return "[" + ", ".join("nan" if v is None else f"{v:.{digits}f}" for v in values) + "]"


def _ntk_summary(s: dict[str, Any]) -> list[str]:
    """A few lines about ``ntk.json``'s summary ``s``."""
    kl = s["kernel_learning"]
    lines = [f"NTK ({s['kind']}, {s['implementation']}, {s['n_inputs']} inputs, {s['n_params']} parameters) at "
             f"epochs {_fmt(s['times_epochs'], 2)}",
             f"  kernel distance to initial {_fmt(s['kernel_to_initial'])}, to final {_fmt(s['kernel_to_final'])}",
             f"  kernel velocity {_fmt(s['velocity'], 4)} per epoch"]
    if "regression" in kl["methods"]:
        lines.append(f"  kernel regression test accuracy {_fmt(kl['regression_accuracy'])}")
    if "linearized" in kl["methods"]:
        lines.append(f"  linearized-model test accuracy {_fmt(kl['linearized_accuracy'])}")
    net = kl["network_accuracy"]
    lines.append(f"  trained network test accuracy {'nan' if net is None else f'{net:.3f}'} "
                 f"({kl['n_train']} train / {kl['n_test']} test points)")
    lines += [f"  warning: {w}" for w in s["warnings"]]
    lines += [f"{name}: {path}" for name, path in s["files"].items()]
    return lines


def _spawn_summary(s: dict[str, Any]) -> list[str]:
    """A few lines about ``spawn.json``'s summary ``s``."""
    plan = s["plan"]
    lines = [f"spawn: {plan['n_children']} children per spawn time, trained to epoch {plan['epochs']} "
             f"({s['children_trained']} trained now, {s['children_cached']} cached)"]
    for i, t in enumerate(s["spawn_times"]):
        lines.append(f"  t={t}: loss barrier {s['loss_barrier'][i]:.4f}, 0-1 error barrier "
                     f"{s['error_barrier'][i]:.4f}, disagreement {s['disagreement'][i]:.4f}")
    lines += [f"{name}: {path}" for name, path in s["files"].items()]
    return lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
