"""Issue 9 benchmark: permutation alignment (weight / activation matching) and the cost of adversarial training.

    OMP_NUM_THREADS=1 python benchmarks/bench_merge_adv.py          # writes benchmarks/results/merge_adv.{json,md}
    OMP_NUM_THREADS=1 python benchmarks/bench_merge_adv.py --fast   # smoke run: merge_adv_fast.{json,md}

Alignment. Two networks of each architecture trained on the digits from seeds 0 and 1 (``qlandscape.train``, SGD,
the same settings): the MLP 64-128-128-10 tanh (``MLP(64, (128, 128), 10)``) and the SmallCNN conv8-conv16-GAP-linear
on the 8x8 images. Rows, side by side in one process, 1 thread, median of ``--repeats`` runs after a warm-up:

* ``qlandscape weight``: ``qlandscape.align_weights(a, b, method="weight")`` (coordinate descent of linear
  assignment problems, Ainsworth et al. 2023, Algorithm 1; it stops when a full pass improves nothing);
* ``qlandscape activation``: ``align_weights(a, b, method="activation", data=x)`` on the 1,437 training inputs;
* ``rebasin`` (anchor, optional: ``pip install --no-deps rebasin torchview graphviz``, when it imports):
  ``rebasin.PermutationCoordinateDescent(a, b_copy, x[:1])`` (its graph tracing, timed as "setup") and
  ``.rebasin()`` (weight matching, in place; its only setting, ``max_iterations``, is left at 100: both
  implementations stop at convergence long before).
The quality of every alignment is measured the same way: the loss and 0-1 error barriers on the straight line
from ``a`` to the aligned ``b`` on the test split (``qlandscape.interpolate``, 21 points), next to the barrier
without alignment.

Adversarial training. Seconds per epoch of ``qlandscape.train`` on the digits (batches of 64, SGD) for the MLP and
the CNN: standard, FGSM (linf, epsilon 0.3) and PGD (linf, epsilon 0.3, 7 steps, random start), in the same
process, median over epochs; the ratio to the standard epoch is the cost of adversarial training.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("QLANDSCAPE_PROGRESS", "0")

import torch  # noqa: E402

torch.set_num_threads(1)

import qlandscape as ql  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = {"mlp": "MLP 64-128-128-10 tanh", "cnn": "SmallCNN conv8-conv16-GAP-linear tanh (8x8 images)"}


def _model(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = ql.MLP(64, (128, 128), 10) if name == "mlp" else ql.SmallCNN(1, (8, 16), 10)
    return m.double()


def _data(name: str) -> ql.Dataset:
    return ql.load_digits(images=(name == "cnn"))


def _trained(name: str, ds: ql.Dataset, seed: int, epochs: int) -> torch.nn.Module:
    x, y = ds.train
    model, _ = ql.train(_model(name, seed), (x.double(), y), epochs=epochs, lr=0.05, batch_size=64, seed=seed,
                        progress=False)
    return model


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def _barriers(a: torch.nn.Module, b: torch.nn.Module, ds: ql.Dataset) -> dict[str, float]:
    x, y = ds.test
    obj = ql.Objective(a, "cross_entropy", (x.double(), y), dtype=torch.float64)
    theta_b = obj.space.from_module_values(b, dtype=torch.float64)
    res = ql.interpolate(obj, obj.theta0, theta_b, n_points=21, progress=False)
    return dict(loss_barrier=float(res.barrier), error_barrier=float(res.error_barrier))


def _rebasin_available() -> Optional[str]:
    try:
        import rebasin  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: no anchor row
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def alignment_rows(name: str, epochs: int, repeats: int) -> list[dict[str, Any]]:
    ds = _data(name)
    a, b = _trained(name, ds, 0, epochs), _trained(name, ds, 1, epochs)
    x = ds.train[0].double()
    rows: list[dict[str, Any]] = [dict(model=name, method="no alignment", seconds=None, **_barriers(a, b, ds))]
    for method in ("weight", "activation"):
        med, times, res = _time(lambda: ql.align_weights(a, b, method=method, data=x if method == "activation"
                                                         else None), repeats)
        rows.append(dict(model=name, method=f"qlandscape {method}", seconds=med, times=times,
                         iterations=res.iterations, **_barriers(a, res.model, ds)))
    why = _rebasin_available()
    if why is not None:
        rows.append(dict(model=name, method="rebasin", skipped=f"rebasin does not import ({why})"))
        return rows
    from rebasin import PermutationCoordinateDescent

    def run() -> tuple[float, torch.nn.Module]:
        bb = copy.deepcopy(b)
        t0 = time.perf_counter()
        pcd = PermutationCoordinateDescent(a, bb, x[:1])
        setup = time.perf_counter() - t0
        pcd.rebasin()
        return setup, bb

    run()  # warm-up
    setups, solves, model = [], [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        setup, model = run()
        total = time.perf_counter() - t0
        setups.append(setup)
        solves.append(total - setup)
    assert model is not None
    same = bool(torch.allclose(model(x[:50]), b(x[:50]), atol=1e-9))
    rows.append(dict(model=name, method="rebasin (setup + weight matching)",
                     seconds=statistics.median([s + t for s, t in zip(setups, solves)]),
                     setup_seconds=statistics.median(setups), solve_seconds=statistics.median(solves),
                     function_unchanged=same, **_barriers(a, model, ds)))
    return rows


def adversarial_rows(name: str, epochs: int) -> list[dict[str, Any]]:
    ds = _data(name)
    x, y = ds.train[0].double(), ds.train[1]
    clamp = ql.valid_range(ds.x_train, ds.x_test)
    attacks: dict[str, Optional[ql.Attack]] = {
        "standard": None,
        "FGSM linf eps 0.3": ql.Attack("fgsm", "linf", epsilon=0.3, clamp=clamp),
        "PGD-7 linf eps 0.3": ql.Attack("pgd", "linf", epsilon=0.3, steps=7, clamp=clamp),
    }
    rows = []
    base = None
    for label, attack in attacks.items():
        per_epoch = []
        for e in range(epochs + 1):  # one epoch per call; the first is a warm-up
            t0 = time.perf_counter()
            ql.train(_model(name, 0), (x, y), epochs=1, lr=0.05, batch_size=64, seed=e, attack=attack, progress=False)
            if e:
                per_epoch.append(time.perf_counter() - t0)
        med = statistics.median(per_epoch)
        base = med if base is None else base
        rows.append(dict(model=name, training=label, seconds_per_epoch=med, times=per_epoch, ratio=med / base))
    return rows


def _git() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE).stdout.strip()
    except OSError:
        return "?"


def _f(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    L = [f"# Alignment and adversarial training benchmark{' (--fast)' if c['fast'] else ''}", "",
         f"Command: `{res['command']}` ({res['date']}; {res['wall_s'] / 60:.1f} min). {res['machine']}; 1 thread; "
         f"torch {torch.__version__}; git {res['git']}; load average at start {res['load_start']:.2f}, at end "
         f"{res['load_end']:.2f}. Models trained {c['epochs']} epochs (seeds 0 and 1); times: median of "
         f"{c['repeats']} runs after a warm-up.", "",
         "## Permutation alignment", "",
         "| model | method | time s | iterations | loss barrier | 0-1 error barrier | rebasin time / ours "
         "(total; its weight matching alone) |",
         "|---|---|---|---|---|---|---|"]
    reb = {r["model"]: r for r in res["alignment"] if r["method"].startswith("rebasin") and "seconds" in r}
    for r in res["alignment"]:
        if "skipped" in r:
            L.append(f"| {MODELS[r['model']]} | {r['method']} | skipped: {r['skipped']} | | | | |")
            continue
        cell = "—"
        if r["model"] in reb and r.get("seconds") and r["method"] == "qlandscape weight":
            rb = reb[r["model"]]
            cell = f"{rb['seconds'] / r['seconds']:.1f}x; {rb['solve_seconds'] / r['seconds']:.1f}x"
        method = r["method"]
        if "setup_seconds" in r:
            method += (f" (setup {r['setup_seconds']:.3g} s, solve {r['solve_seconds']:.3g} s; function unchanged: "
                       f"{r['function_unchanged']})")
        L.append(f"| {MODELS[r['model']]} | {method} | {_f(r.get('seconds'), '.3g')} | "
                 f"{_f(r.get('iterations'), 'd')} | {r['loss_barrier']:.4f} | {r['error_barrier']:.4f} | {cell} |")
    L += ["", "## Adversarial training: seconds per epoch", "",
          "| model | training | s / epoch | x standard |", "|---|---|---|---|"]
    for r in res["adversarial"]:
        L.append(f"| {MODELS[r['model']]} | {r['training']} | {r['seconds_per_epoch']:.3g} | {r['ratio']:.1f} |")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="smoke run: 2 training epochs, 1 repeat")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    epochs, repeats = (2, 1) if args.fast else (20, 5)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    alignment, adversarial = [], []
    for name in MODELS:
        alignment += alignment_rows(name, epochs, repeats)
        adversarial += adversarial_rows(name, 2 if args.fast else 5)
        print(json.dumps(alignment[-4:] + adversarial[-3:], default=str)[:2000], flush=True)
    res = dict(command=f"OMP_NUM_THREADS=1 python benchmarks/bench_merge_adv.py{' --fast' if args.fast else ''}",
               date=time.strftime("%Y-%m-%d %H:%M:%S"), machine=f"{platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores", git=_git(), load_start=load_start, load_end=os.getloadavg()[0],
               wall_s=time.perf_counter() - start, config=dict(fast=args.fast, epochs=epochs, repeats=repeats),
               alignment=alignment, adversarial=adversarial)
    stem = "merge_adv_fast" if args.fast else "merge_adv"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2, default=str))
    md = markdown(res)
    (args.out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
