"""The compiled patch-circuit simulator against the arithmetic limit and its peers, side by side.

    .venv/bin/python benchmarks/bench_qsim.py                 # the grid below; results/qsim.{json,md}
    .venv/bin/python benchmarks/bench_qsim.py --fast          # P=4, L=1/10, B=30 smoke run (to /tmp unless --out)
    .venv/bin/python benchmarks/bench_qsim.py --only 4,50,300 # one row
    .venv/bin/python benchmarks/bench_qsim.py --calibrate     # the cost model's constants: results/qsim_calibration.*

Workload: the Kawase 2025 patch QNN (8-qubit circuits: block A, encoding, block B, encoding, block C of L layers of
RX/RY on every qubit and a CZ ring; 64 features per patch re-uploaded with two trainable angles around each data
rotation; readout <X_0..4>, <Z_0..4>; logits 100 x the mean over patches; positional bias), P = 4 / 16 patches of
8x8 pixels on 14x14 images in [0, pi/4], L = 1 / 10 / 50 / 200, B = 30 / 300 / 1000 samples, float64, mean
cross-entropy. Every route is timed through the public API on the same model and data:
``Objective(model, "cross_entropy", (x, y))`` -> ``loss()`` (forward), ``gradient()`` (forward+backward),
``hvp(v)`` first (the first-order graph is built) and steady (median of the next two). Forward and gradient are
timed three ways: the first call in the process, a second call at the same point, and a call at a new point
(``forward_new_s``, ``grad_new_s``: what a training step or scan point pays); the markdown shows the new-point
times and the same-point forward.

Routes (each (row, route) in a fresh process, so peak RSS is its own; one thread):
* ``compiled``: qlandscape's torch.statevector, compiled (``PatchQNN(simulator="compiled")``, the default here);
* ``tape``: the same circuit as a plain autograd tape (``simulator="tape"``, the route before the compiled one);
* ``reference``: the independent folded-unitary reference (``qlandscape.quantum.reference.FoldedReference``,
  autograd; its two unitary builds, ``kron`` and ``gates``, both run and the faster is reported);
* ``default.qubit``: PennyLane, one broadcast call over patches x samples, backprop;
* ``lightning.qubit``: PennyLane's C++ simulator, adjoint gradients (one tape per sample); its HVPs are the
  engine's central differences of adjoint gradients (it has no second derivatives).
A route is skipped where its estimated memory exceeds 20 GiB or where its time, predicted from its smallest
finished row (linear in samples x patches x gates), exceeds 1.5 x ``--timeout``; a run is stopped after
``--timeout`` seconds. Rows run from the smallest work up.

The bound: the gate-by-gate arithmetic of one forward pass, ``P * B * n_ops * 2 * 2**n`` complex multiply-adds (8
flops each; ``n_ops`` = single-qubit fused-gate applications per circuit: 8 per layer and encoding), at the
machine's complex128 GEMM rate (1024 x 1024 matrices, best of 5) measured in each row's own process right
before its timings (a rate taken once per run was once halved by a test suite starting on the other core). Each
row states time / bound for the forward and the HVP (an HVP in forward-over-reverse form cannot cost less than about 8 forward passes of
arithmetic: value and tangent forward (3), cotangent and its tangent backward (3), the gradient contractions (2)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("QLANDSCAPE_PROGRESS", "0")

HERE = Path(__file__).resolve().parent
ROUTES = ("compiled", "tape", "reference", "default.qubit", "lightning.qubit")
GRID = [(P, L, B) for P in (4, 16) for L in (1, 10, 50, 200) for B in (30, 300, 1000)]
FAST_GRID = [(4, 1, 30), (4, 10, 30)]
MEMORY_CAP_GIB = 20.0


# ============================================================================ one measurement (child process)
def _model(route: str, P: int, L: int, build: str = "kron") -> Any:
    import torch

    import qlandscape as ql
    from qlandscape.patches import PatchNetwork
    from qlandscape.quantum.reference import FoldedReference

    if route in ("compiled", "tape"):
        return ql.PatchQNN("kawase2025", n_patches=P, layers=L, device="torch.statevector", simulator=route,
                           torch_device="cpu").double()
    if route in ("default.qubit", "lightning.qubit"):
        return ql.PatchQNN("kawase2025", n_patches=P, layers=L, device=route, order=1).double()
    base = ql.PatchQNN("kawase2025", n_patches=P, layers=L, device="torch.statevector", simulator="tape",
                       torch_device="cpu").double()

    class ReferencePatchModel(PatchNetwork):
        """The same patch network with the independent folded-unitary reference as its circuits."""

        def __init__(self) -> None:
            super().__init__()
            self.grid, self.input_scale, self.aggregation = base.grid, base.input_scale, base.aggregation
            self.coefficient, self.head = base.coefficient, None
            self.pos_bias = torch.nn.Parameter(base.pos_bias.detach().clone())
            self.weights = torch.nn.Parameter(torch.stack([c.weights.detach() for c in base.circuits]))
            self.ref = FoldedReference(base.spec, build=build)

        def patch_outputs(self, patches: torch.Tensor) -> torch.Tensor:
            return self.ref(patches.transpose(0, 1), self.weights).transpose(0, 1)

    return ReferencePatchModel()


def _estimate_gib(route: str, P: int, L: int, B: int, build: str = "kron") -> float:
    """Rough peak memory of a first HVP (GiB), fitted to measured peaks at P=4, L=10, B=30 (tape 0.9 GiB,
    default.qubit 3.5, reference 1.1 over the baseline) and P=4, L=50, B=300 (reference, kron: 6 GiB; gates: 20)."""
    state = 4096.0  # 2**8 complex128
    gates = 24 * L + 16
    if route == "compiled":
        return 1.0
    if route == "lightning.qubit":
        return 0.5 + P * B * 3e-5
    if route == "reference":  # the folded unitaries' tapes (2 blocks of L layers on 256 columns) + data part
        per_layer = (25 if build == "kron" else 100) * 2 ** 20
        return 0.5 + (P * L * per_layer + 8 * 60 * P * B * state) / 2 ** 30
    factor = 8.0 if route == "tape" else 30.0  # states kept per gate, first-order graph + double backward
    return 0.5 + factor * gates * P * B * state / 2 ** 30


def measure(route: str, P: int, L: int, B: int, build: str = "kron") -> dict[str, Any]:
    """Forward, gradient, first and steady HVP of one route at one size (runs in its own process)."""
    import torch

    torch.set_num_threads(1)
    import qlandscape as ql

    sys.path.insert(0, str(HERE))
    from _memory import reset_peak_rss, status_kb

    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 14, 14, generator=g, dtype=torch.float64) * (math.pi / 4)
    y = torch.randint(0, 10, (B,), generator=g)
    model = _model(route, P, L, build)
    out: dict[str, Any] = dict(route=route, P=P, L=L, B=B, build=build if route == "reference" else None)
    out["gemm_gflops"] = gemm_rate()  # in this process, right before its timings: the row's own bound
    rss0 = reset_peak_rss()
    obj = ql.Objective(model, "cross_entropy", (x, y))
    out["second_order"] = obj.provider.name
    out["device"] = getattr(model, "device_choice", None) and model.device_choice.name
    for key in ("forward_first_s", "forward_s"):  # first call (allocations, folded unitaries built), then steady
        t = time.perf_counter()
        out["loss"] = obj.loss()
        out[key] = time.perf_counter() - t
    for key in ("grad_first_s", "grad_s"):
        t = time.perf_counter()
        grad = obj.gradient()
        out[key] = time.perf_counter() - t
    # a new point in a warm process: what a training step or a scan point pays (nothing cached at this theta)
    theta = obj.as_theta(None)
    for key, call in (("forward_new_s", obj.loss), ("grad_new_s", obj.gradient)):
        theta = theta + 1e-3 * torch.randn(theta.shape, generator=g, dtype=theta.dtype)
        t = time.perf_counter()
        call(theta)
        out[key] = time.perf_counter() - t
    v = torch.randn(obj.n_params, generator=g, dtype=torch.float64)
    t = time.perf_counter()
    hv = obj.hvp(v)
    out["hvp_first_s"] = time.perf_counter() - t
    steady = []
    for _ in range(2):
        t = time.perf_counter()
        obj.hvp(v)
        steady.append(time.perf_counter() - t)
    out["hvp_steady_s"] = statistics.median(steady)
    out["peak_rss_gib"] = status_kb("VmHWM") / 2 ** 20
    out["rss_growth_gib"] = (status_kb("VmHWM") - rss0) / 2 ** 20
    out["grad_norm"] = float(grad.norm())
    out["hvp_head"] = [float(t) for t in hv[:8]]
    out["vhv"] = float(v @ hv)
    out["n_params"] = obj.n_params
    return out


# ============================================================================ driver
def gemm_rate() -> float:
    """Complex128 GEMM GFLOP/s on one thread (1024 x 1024, best of 5)."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(1024, 1024, dtype=torch.complex128)
    b = torch.randn(1024, 1024, dtype=torch.complex128)
    a @ b
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 8 * 1024 ** 3 / best / 1e9


def forward_flops(P: int, L: int, B: int) -> float:
    """Gate-by-gate arithmetic of one forward pass (see the module docstring): 8 fused single-qubit gates per layer
    (3 blocks of L) and per encoding (2), each 2 * 256 complex multiply-adds of 8 flops per sample and patch."""
    n_ops = 8 * (3 * L + 2)
    return P * B * n_ops * 2 * 256 * 8.0


def work(route: str, P: int, L: int, B: int) -> float:
    """Relative work of a row for a route, to predict its time from a smaller measured row: samples x patches x
    gates, and for the folded reference the unitaries' builds (256 columns) as well."""
    gates = 24 * L + 16
    if route == "reference":
        return P * gates * (B + 256 * 4)
    return P * B * gates


def run_child(route: str, P: int, L: int, B: int, timeout: float, build: str = "kron") -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", route, str(P), str(L), str(B), build]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return dict(route=route, P=P, L=L, B=B, status=f"timeout (> {timeout:.0f} s)", wall_s=time.perf_counter() - t)
    if done.returncode < 0:
        return dict(route=route, P=P, L=L, B=B, status=f"failed: killed by signal {-done.returncode} (out of memory?)",
                    wall_s=time.perf_counter() - t)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return dict(route=route, P=P, L=L, B=B, status=f"failed: {tail[0][:200]}", wall_s=time.perf_counter() - t)
    res = json.loads(done.stdout.strip().splitlines()[-1])
    res["status"] = "ok"
    res["wall_s"] = time.perf_counter() - t
    return res


def best_reference(P: int, L: int, B: int, timeout: float) -> dict[str, Any]:
    """The reference at its best build: both builds, the faster steady HVP."""
    runs = []
    for build in ("kron", "gates"):
        est = _estimate_gib("reference", P, L, B, build)
        runs.append(dict(route="reference", P=P, L=L, B=B, build=build, status=f"skipped: needs ~{est:.0f} GiB")
                    if est > MEMORY_CAP_GIB else run_child("reference", P, L, B, timeout, build))
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        return runs[0] | dict(other_builds=runs[1:])
    best = min(ok, key=lambda r: r["hvp_steady_s"])
    best["other_builds"] = [dict(build=r.get("build"), status=r.get("status"), hvp_steady_s=r.get("hvp_steady_s"))
                            for r in runs if r is not best]
    return best


def _fmt(r: dict[str, Any] | None, key: str) -> str:
    if r is None:
        return "-"
    if r.get("status") != "ok":
        return str(r.get("status", "-")).split(":")[0]
    v = r.get(key)
    return "-" if v is None else (f"{v:.3g}" if v < 100 else f"{v:.0f}")


def write(results: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "qsim.json").write_text(json.dumps(dict(meta=meta, rows=results), indent=1))
    runs = [meta] + list(meta.get("earlier_runs", []))
    made = "; ".join(f"`{m['command']}` ({m['when']}, complex128 GEMM {m['gemm_gflops']:.1f} GFLOP/s)" for m in runs)
    lines = [f"# Compiled patch-circuit simulator vs the FLOP bound and peers ({meta['when']})", "",
             f"Made by {made}; rows of a later command replace those (row, route) pairs of an earlier one. "
             f"{meta['machine']}; one thread; float64 (complex128 states). Times in seconds through `ql.Objective`; "
             "each row's bound uses the GEMM rate measured in its own process (else in the run that made it). "
             "forward / gradient = at a new point in a warm process (nothing cached at that theta; `*`: the "
             "first call in the process, set-up included, where the run predates the new-point measurement); "
             "forward again = the same point (folded segments cached, so it can beat the gate-by-gate bound); "
             "first HVP includes building the first-order graph; steady = median of the next two. "
             "bound = gate-by-gate forward arithmetic at the GEMM rate; an HVP needs about 8 forwards of it "
             "(module docstring).", ""]
    rows = sorted({(r["P"], r["L"], r["B"]) for r in results})
    lines += ["| P | L | B | forward bound (s) | route | forward | x bound | forward again | gradient | HVP first "
              "| HVP steady | HVP / (8 x bound) | peak RSS (GiB) | steady HVP vs compiled |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in rows:
        P, L, B = key
        here = {r["route"]: r for r in results if (r["P"], r["L"], r["B"]) == key}
        comp = here.get("compiled")
        for route in ROUTES:
            r = here.get(route)
            if r is None:
                continue
            bound = forward_flops(P, L, B) / (float(r.get("gemm_gflops", meta["gemm_gflops"])) * 1e9)
            ok = r.get("status") == "ok"
            old = "forward_new_s" not in r  # a run before the new-point timings: first-call times instead
            fkey, gkey = ("forward_first_s", "grad_s") if old else ("forward_new_s", "grad_new_s")
            star = "*" if old and ok else ""
            xf = f"{r[fkey] / bound:.1f}" if ok else "-"
            xh = f"{r['hvp_steady_s'] / (8 * bound):.1f}" if ok else "-"
            rel = "-"
            if ok and comp is not None and comp.get("status") == "ok" and route != "compiled":
                rel = f"{r['hvp_steady_s'] / comp['hvp_steady_s']:.1f}x slower" if r["hvp_steady_s"] >= comp[
                    "hvp_steady_s"] else f"{comp['hvp_steady_s'] / r['hvp_steady_s']:.1f}x faster"
            elif r.get("note"):
                rel = str(r["note"])
            elif not ok and route != "compiled" and comp is not None and comp.get("status") == "ok":
                rel = "did not finish" if "timeout" in str(r.get("status")) else str(r.get("status"))[:40]
            name = route + (f" ({r.get('build')})" if route == "reference" and ok else "")
            lines.append(f"| {P} | {L} | {B} | {bound:.3g} | {name} | {_fmt(r, fkey)}{star} | {xf}{star} | "
                         f"{_fmt(r, 'forward_s')} | {_fmt(r, gkey)}{star} | "
                         f"{_fmt(r, 'hvp_first_s')} | {_fmt(r, 'hvp_steady_s')} | {xh} | "
                         f"{_fmt(r, 'peak_rss_gib')} | {rel} |")
    (out / "qsim.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--only", help="P,L,B[;P,L,B...]: just these rows")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per (row, route)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--merge", action="store_true", help="add to (replace rows of) an existing qsim.json in --out")
    ap.add_argument("--child", nargs=5, metavar=("ROUTE", "P", "L", "B", "BUILD"), help=argparse.SUPPRESS)
    ap.add_argument("--calibrate", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        route, P, L, B, build = args.child
        print(json.dumps(measure(route, int(P), int(L), int(B), build)))
        return
    if args.calibrate:
        from qsim_calibration import calibrate
        calibrate(args.out or HERE / "results")
        return
    grid = FAST_GRID if args.fast else GRID
    if args.only:
        grid = [tuple(int(v) for v in part.split(",")) for part in args.only.split(";")]  # type: ignore[misc]
    routes = [r for r in args.routes.split(",") if r]
    out = args.out or (Path("/tmp/qsim_fast") if args.fast else HERE / "results")
    results: list[dict[str, Any]] = []
    rate = gemm_rate()
    meta: dict[str, Any] = dict(
        when=time.strftime("%Y-%m-%d"), command="python benchmarks/bench_qsim.py " + " ".join(argv or sys.argv[1:]),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", gemm_gflops=rate,
        memory_cap_gib=MEMORY_CAP_GIB, timeout_s=args.timeout)
    if args.merge and (out / "qsim.json").exists():  # replace only the (row, route) pairs run now
        earlier = json.loads((out / "qsim.json").read_text())
        rerun = {(P, L, B, route) for P, L, B in grid for route in routes}
        for r in earlier["rows"]:
            r.setdefault("gemm_gflops", earlier["meta"]["gemm_gflops"])
        results = [r for r in earlier["rows"] if (r["P"], r["L"], r["B"], r["route"]) not in rerun]
        meta["earlier_runs"] = [{k: v for k, v in earlier["meta"].items() if k != "earlier_runs"}] + earlier[
            "meta"].get("earlier_runs", [])
    seen: dict[str, tuple[float, float]] = {}  # route -> (work, seconds) of its smallest finished row
    for P, L, B in sorted(grid, key=lambda k: work("compiled", *k)):
        for route in routes:
            est = _estimate_gib(route, P, L, B)
            predicted = (seen[route][1] * work(route, P, L, B) / seen[route][0]) if route in seen else 0.0
            if est > MEMORY_CAP_GIB:
                res = dict(route=route, P=P, L=L, B=B, status=f"skipped: needs ~{est:.0f} GiB")
            elif route != "compiled" and predicted > 1.5 * args.timeout:
                res = dict(route=route, P=P, L=L, B=B, predicted_s=predicted,
                           status=f"skipped: ~{predicted:.0f} s predicted (> {args.timeout:.0f} s)")
            elif route == "reference":
                res = best_reference(P, L, B, args.timeout)
            else:
                res = run_child(route, P, L, B, args.timeout)
            if res.get("status") == "ok" and route not in seen:
                total = sum(res[k] for k in ("forward_first_s", "forward_s", "grad_first_s", "grad_s", "hvp_first_s")
                            ) + 2 * res["hvp_steady_s"]
                seen[route] = (work(route, P, L, B), total)
            res.setdefault("gemm_gflops", rate)
            results.append(res)
            print(f"P={P} L={L} B={B} {route}: {res.get('status')} forward {res.get('forward_s')} grad "
                  f"{res.get('grad_s')} hvp {res.get('hvp_first_s')}/{res.get('hvp_steady_s')} rss "
                  f"{res.get('peak_rss_gib')}", flush=True)
            write(results, meta, out)
    write(results, meta, out)
    print(f"wrote {out / 'qsim.md'}")


if __name__ == "__main__":
    main()
