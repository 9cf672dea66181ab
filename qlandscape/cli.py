"""``qlandscape`` command line: a thin layer over :mod:`qlandscape.pipeline`.

Subcommands: ``train``, ``hessian``, ``scan``, ``demo`` (train + hessian + scan: the main job) and
``compare`` (a patch QNN against its parameter-matched classical patch MLP, one report).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import RunConfig, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qlandscape", description="Loss-landscape geometry of classical and "
                                "quantum neural networks.")
    sub = p.add_subparsers(dest="command", required=True)
    helps = {"train": "train the configured model (reused if already trained with this config)",
             "hessian": "top-k Hessian eigenvalues, trace and spectral density of the trained model",
             "scan": "1D/2D loss-landscape scan (writes scan.npz/json and PNGs)",
             "demo": "the main job: train, then hessian and scan, on sklearn's bundled digits",
             "compare": "train a patch QNN and its parameter-matched patch MLP on the same digits task; write "
                        "report.json, report.md and side-by-side PNGs"}
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
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.command == "compare":
        from .report import compare_overrides
        overrides = compare_overrides(args.fast) + overrides  # the user's --set win
    try:
        cfg = load_config(args.config, overrides)
        if args.command == "compare":  # both compared configurations are valid before any work
            from .report import KINDS, model_config
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
    from . import pipeline
    from .quantum.devices import DeviceUnavailableError
    progress = not args.no_progress
    try:
        if args.command == "compare":
            from .report import main_summary, run_compare
            report = run_compare(cfg, out, fast=args.fast, progress=progress, force=args.force)
            print("\n".join(main_summary(report, out)))
        if args.command == "train":
            _, tr, _ = pipeline.ensure_trained(cfg, out, progress, force=args.force)
            print(f"train loss {tr.train_loss[-1]:.6g}, test accuracy {tr.test_metric[-1]:.4f} -> {out}")
        if args.command in ("hessian", "demo"):
            res = pipeline.run_hessian(cfg, out, progress, force=args.force)
            for r in res.values():
                print(r.summary())  # type: ignore[attr-defined]
        if args.command in ("scan", "demo"):
            scan = pipeline.run_scan(cfg, out, progress, force=args.force)
            print(f"scan {scan.loss.shape}: centre loss {scan.center_loss:.6g}, min {float(scan.loss.min()):.6g}, "
                  f"max {float(scan.loss.max()):.6g} -> {out / 'scan.png'}")
    except (ValueError, FloatingPointError, DeviceUnavailableError) as exc:
        print(f"qlandscape: error: {exc}", file=sys.stderr)
        return 1
    print(f"results in {out}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
