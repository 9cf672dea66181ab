"""Sweep runner throughput and overhead (issue 7), measured side by side in one run.

Three ways to execute the same grid (the ``digits-small`` preset, or ``--fast`` its smoke version),
each into a fresh directory:

- ``direct``: a plain loop in this process calling the worker's training and measurement code
  (:func:`qlandscape.sweep.worker._measure`) for each grid point in a fresh run directory: what a user
  would write without the runner;
- ``local x1``: ``run_sweep(executor="local", workers=1)``: the spawn process pool, publication (fsync,
  rename), run records, progress;
- ``local x2``: the same with two workers (scaling efficiency = throughput(2) / (2 * throughput(1))).

Overhead of the runner = (wall(local x1) - wall(direct)) / wall(direct), per run and in total. Threads are
pinned to 1 everywhere. Writes ``benchmarks/results/sweep.{json,md}`` and copies the 2-worker sweep's report
(``benchmarks/results/sweep_report.md``, ``sweep_lambda_vs_patches.png``, ``sweep_lambda_vs_params.png``).

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py            # digits-small, 60 runs x 3 (~40 min)
    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py --fast     # 4 runs x 3 (~1 min)
    python benchmarks/bench_sweep.py --report-only DIR            # copy DIR's report only (no timing)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("QLANDSCAPE_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

RESULTS = Path(__file__).parent / "results"


def direct(spec, out: Path) -> dict:  # type: ignore[no-untyped-def]
    """Each grid point through the worker's own training + measurement code, in this process."""
    from qlandscape.sweep.worker import _measure, pin_threads
    pin_threads(1)
    walls = {}
    start = time.perf_counter()
    for p in spec.runs():
        t0 = time.perf_counter()
        _measure(p, out / p.dirname)
        walls[p.dirname] = time.perf_counter() - t0
    return {"wall_s": time.perf_counter() - start, "run_wall_s": walls}


def runner(spec, out: Path, workers: int) -> dict:  # type: ignore[no-untyped-def]
    from qlandscape.sweep import run_sweep
    start = time.perf_counter()
    outcome = run_sweep(spec, out, executor="local", workers=workers, progress=False)
    if outcome.failed:
        raise RuntimeError(f"runs failed: {outcome.failed}")
    return {"wall_s": time.perf_counter() - start, "run_wall_s": outcome.run_wall_s}


def copy_report(sweep_dir: Path, suffix: str, written_by: str) -> None:
    """Write ``sweep_dir``'s report (``sweep_report``) and copy it to ``benchmarks/results/sweep{suffix}_*``."""
    from qlandscape.sweep import sweep_report
    paths = sweep_report(sweep_dir)
    RESULTS.mkdir(exist_ok=True)
    for name in ("lambda_vs_patches", "lambda_vs_params"):
        shutil.copy(paths[name], RESULTS / f"sweep{suffix}_{name}.png")
    report_md = paths["report"].read_text().replace("](lambda_vs_", f"](sweep{suffix}_lambda_vs_")
    for table in ("results", "summary", "effects"):
        report_md = report_md.replace(f"[{table}.csv]({table}.csv)", f"`{table}.csv`")
    (RESULTS / f"sweep{suffix}_report.md").write_text(f"<!-- written by `{written_by}` -->\n" + report_md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="the preset's smoke-size grid (4 runs)")
    ap.add_argument("--spec", default="digits-small")
    ap.add_argument("--report-only", metavar="DIR", type=Path,
                    help="no timing: write the report of the finished sweep DIR and copy it to benchmarks/results/")
    args = ap.parse_args()
    if args.report_only is not None:
        copy_report(args.report_only, "", f"python benchmarks/bench_sweep.py --report-only {args.report_only}")
        return
    from qlandscape.sweep import load_spec
    from qlandscape.sweep.worker import package_versions
    spec = load_spec(args.spec, fast=args.fast)
    n = len(spec.runs())
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    results: dict = {"spec": spec.name, "n_runs": n, "machine": platform.platform(), "cpus": os.cpu_count(),
                     "versions": package_versions(), "command": "python benchmarks/bench_sweep.py"
                     + (" --fast" if args.fast else "")}
    try:
        print(f"{spec.name}: {n} runs")
        results["direct"] = direct(spec, tmp / "direct")
        print(f"direct   {results['direct']['wall_s']:.1f} s")
        results["local_x1"] = runner(spec, tmp / "x1", 1)
        print(f"local x1 {results['local_x1']['wall_s']:.1f} s")
        results["local_x2"] = runner(spec, tmp / "x2", 2)
        print(f"local x2 {results['local_x2']['wall_s']:.1f} s")
        d, w1, w2 = (results[k]["wall_s"] for k in ("direct", "local_x1", "local_x2"))
        run_direct = sum(results["direct"]["run_wall_s"].values())
        run_x1 = sum(results["local_x1"]["run_wall_s"].values())
        results["summary"] = {
            "overhead_total": (w1 - d) / d,
            "overhead_per_run_s": (w1 - d) / n,
            "per_run_overhead": (run_x1 - run_direct) / run_direct,
            "fixed_cost_s": w1 - run_x1,
            "throughput_runs_per_min": {"direct": 60 * n / d, "x1": 60 * n / w1, "x2": 60 * n / w2},
            "speedup_x2": w1 / w2,
            "scaling_efficiency_x2": w1 / (2 * w2),
        }
        copy_report(tmp / "x2", "_fast" if args.fast else "", results["command"] + " (the 2-worker sweep's report)")
        suffix = "_fast" if args.fast else ""
        (RESULTS / f"sweep{suffix}.json").write_text(json.dumps(results, indent=2, sort_keys=True))
        (RESULTS / f"sweep{suffix}.md").write_text(markdown(results))
        print(markdown(results))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def markdown(r: dict) -> str:
    s = r["summary"]
    lines = [f"# Sweep runner: {r['spec']} ({r['n_runs']} runs), one run of `{r['command']}`", "",
             f"Machine: {r['machine']}, {r['cpus']} CPUs, one compute thread per run.", "",
             "| execution | wall (s) | runs / min | vs direct |", "|---|---|---|---|"]
    for key, name in (("direct", "direct loop, this process"), ("local_x1", "run_sweep, local pool, 1 worker"),
                      ("local_x2", "run_sweep, local pool, 2 workers")):
        w = r[key]["wall_s"]
        lines.append(f"| {name} | {w:.1f} | {60 * r['n_runs'] / w:.2f} | {w / r['direct']['wall_s']:.3f}x |")
    lines += ["", f"- Per-run overhead of the runner (a run's wall time in a worker, publication and records "
              f"included, vs the same code called directly): {100 * s['per_run_overhead']:+.1f}% (target: under 5%).",
              f"- Fixed cost per sweep (spawning the pool, importing torch/PennyLane in the worker, scheduling): "
              f"{s['fixed_cost_s']:.1f} s; with it, 1 worker vs the direct loop: {100 * s['overhead_total']:+.1f}% "
              f"of the total ({s['overhead_per_run_s']:+.2f} s per run).",
              f"- 2 workers: speedup {s['speedup_x2']:.2f}x, scaling efficiency {100 * s['scaling_efficiency_x2']:.0f}%"
              " (on a shared 2-core machine; other jobs compete for the second core)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
