"""Where does lightning.qubit (adjoint, one tape per sample) overtake the broadcasting backprop simulators?

    python benchmarks/bench_device_crossover.py          # ~3 min on one thread (2-14 qubits); writes results/device_crossover.*
    python benchmarks/bench_device_crossover.py --fast   # ~1 min smoke run (writes *_fast.* files)

Circuit family of the paper: data encoded with RX(x_q) on every qubit, then per layer RX(w) on every qubit, RY(w)
on every qubit and a CZ ring; readout <Z_q> on every qubit. Work timed: forward of a batch of B samples, a
cross-entropy of the expvals (as logits) against fixed labels, then ``.backward()`` to the weights. float64, one
thread. Each case: one warm-up call, then the median of up to 5 repeats, fewer when a call is slow (each case
is capped at a few seconds of repeats).

* (a) ``default.qubit``, torch interface, ``diff_method="backprop"``, ONE call with inputs of shape (B, n)
  (parameter broadcasting).
* (b) ``lightning.qubit``, ``diff_method="adjoint"``, one call with inputs (B, n): PennyLane splits the batch
  into B tapes.
* (c) ``torch.statevector`` (:class:`qlandscape.quantum.statevector.TorchStatevector`, torch autograd), ONE call
  with inputs (P=1, B, n) and weights (1, n_weights): the simulator ``select_device("auto")`` uses below the
  crossover.

All three run the same quantum function (angles indexed as single entries ``x[..., q]`` / ``w[..., k]`` of a flat
weight vector, as the torch simulator's compiler requires). The backprop simulators hold batched states on the
autograd tape (default.qubit: one per gate; torch.statevector: one per fused single-qubit einsum plus the readout);
cases whose estimated footprint exceeds ``--mem-gib`` are skipped (reported as "mem"). A device whose warm-up
exceeds ``--slow-s`` is not run at larger sizes for that (layers, batch). The crossover per (layers, batch) and
baseline is the smallest measured qubit count from which lightning is at least as fast at every larger measured
size; when it is not reached within the measured sizes it is extrapolated from the log-linear trend of the ratio
over the three largest sizes. The lightning-vs-torch.statevector numbers feed ``CPU_CROSSOVER`` in
``qlandscape/quantum/devices.py`` (the decision ``auto`` makes); the lightning-vs-default.qubit numbers feed
``DEFAULT_QUBIT_CROSSOVER``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pennylane as qml  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from qlandscape.quantum.statevector import TorchStatevector  # noqa: E402

torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent
DEVICES = ("torch.statevector", "default.qubit", "lightning.qubit")
BASELINES = ("torch.statevector", "default.qubit")  # broadcasting backprop simulators lightning is compared with


def make_qfunc(n: int, layers: int) -> Callable[[torch.Tensor, torch.Tensor], list[Any]]:
    """The paper's circuit as a quantum function of inputs ``x[..., n]`` and FLAT weights ``w[..., 2 * n * layers]``
    (weight ``layer * 2n + q`` is the RX angle, ``layer * 2n + n + q`` the RY angle of qubit q)."""

    def circuit(x: torch.Tensor, w: torch.Tensor) -> list[Any]:
        for q in range(n):
            qml.RX(x[..., q], wires=q)
        for layer in range(layers):
            for q in range(n):
                qml.RX(w[..., 2 * n * layer + q], wires=q)
            for q in range(n):
                qml.RY(w[..., 2 * n * layer + n + q], wires=q)
            if n > 1:
                for q in range(n if n > 2 else 1):
                    qml.CZ(wires=[q, (q + 1) % n])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    return circuit


def make_runner(device: str, n: int, layers: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``f(x (B, n), w (2 n layers,)) -> logits (B, n)`` on ``device`` (backprop for the broadcasting simulators,
    adjoint for lightning)."""
    qfunc = make_qfunc(n, layers)
    if device == "torch.statevector":
        sim = TorchStatevector(qfunc, n_qubits=n, n_features=n, n_weights=2 * n * layers)
        return lambda x, w: sim(x[None], w[None])[0]
    diff = "backprop" if device == "default.qubit" else "adjoint"
    qnode = qml.QNode(qfunc, qml.device(device, wires=n), interface="torch", diff_method=diff)
    return lambda x, w: torch.stack(list(qnode(x, w)), dim=-1).reshape(x.shape[0], n)


def backprop_bytes(n: int, batch: int, layers: int) -> int:
    """Estimated autograd footprint of default.qubit backprop: one batched complex128 state per gate."""
    return (n + 3 * n * layers) * batch * 2**n * 16


def torch_sv_bytes(n: int, batch: int, layers: int) -> int:
    """Estimated autograd footprint of torch.statevector: one batched complex128 state per fused single-qubit einsum
    (encoding fuses into the first layer: n per layer), plus the readout's n flipped copies and a few temporaries.

    A lower bound: measured peak RSS growth is ~2.5x this (14 qubits, 8 layers, batch 64: 5.0 GiB for 2.0 GiB
    estimated; 16 qubits, 2 layers, batch 64: 7.1 GiB for 3.3 GiB), as einsum copies its operands into contiguous
    layouts; so ``--mem-gib 6`` lets torch.statevector reach ~15 GiB. Kept as is: the committed results used it."""
    return (n * (layers + 1) + 4) * batch * 2**n * 16


MEM_ESTIMATE = {"default.qubit": backprop_bytes, "torch.statevector": torch_sv_bytes}


def time_case(device: str, n: int, layers: int, batch: int, budget_s: float, seed: int = 0) -> dict[str, Any]:
    """Warm-up plus median of repeats of forward+backward; returns seconds and the repeat count."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n, generator=gen, dtype=torch.float64) * math.pi
    w0 = torch.rand(2 * n * layers, generator=gen, dtype=torch.float64) * 2 * math.pi
    y = torch.arange(batch) % n
    circuit = make_runner(device, n, layers)

    def step() -> float:
        w = w0.clone().requires_grad_(True)
        t0 = time.perf_counter()
        logits = circuit(x, w)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        dt = time.perf_counter() - t0
        assert w.grad is not None and torch.isfinite(w.grad).all()
        return dt

    warm = step()
    reps = int(max(1, min(5, budget_s // max(warm, 1e-9))))
    times = [step() for _ in range(reps)]
    return {"seconds": statistics.median(times), "warmup_s": warm, "repeats": reps}


NOISE = 1.10  # a ratio up to 10 % above 1 counts as a tie (the VM's speed drifts by tens of percent over minutes)


def crossover(ns: list[int], ratios: dict[int, float]) -> dict[str, Any]:
    """Smallest measured n with ratio <= 1 there and <= NOISE at every larger measured n.

    When no measured size qualifies, the log-linear trend of the ratio over the three largest sizes is extrapolated
    to ratio 1 (``qubits`` None when lightning is not gaining).
    """
    measured = [n for n in ns if n in ratios]
    for i, n in enumerate(measured):
        if ratios[n] <= 1.0 and all(ratios[m] <= NOISE for m in measured[i:]):
            return {"qubits": float(n), "extrapolated": False}
    tail = [m for m in measured[-3:] if ratios[m] > 0]
    if len(tail) < 2:
        return {"qubits": None, "extrapolated": True}
    slope, icpt = np.polyfit(tail, [math.log(ratios[m]) for m in tail], 1)
    if slope >= 0:  # lightning not gaining: no crossover in sight
        return {"qubits": None, "extrapolated": True}
    return {"qubits": round(float(-icpt / slope), 1), "extrapolated": True}


RATIO_KEYS = {"torch.statevector": "ratio_lightning_over_torch", "default.qubit": "ratio_lightning_over_default"}


def summarise(rows: list[dict[str, Any]], baseline: str = "torch.statevector") -> list[dict[str, Any]]:
    """Crossover of lightning.qubit against ``baseline`` per (layers, batch) from the timing rows."""
    summary = []
    for layers, batch in dict.fromkeys((r["layers"], r["batch"]) for r in rows):
        ratios: dict[int, float] = {}
        for r in rows:
            if (r["layers"], r["batch"]) != (layers, batch) or "seconds" not in r["lightning.qubit"]:
                continue
            base = r.get(baseline, {})
            if "seconds" in base:
                ratios[r["qubits"]] = r["lightning.qubit"]["seconds"] / base["seconds"]
            elif base.get("skipped") == "mem":
                ratios[r["qubits"]] = 0.0  # the baseline cannot run in the memory budget: lightning wins outright
        ns = sorted({r["qubits"] for r in rows})
        found = crossover(ns, ratios)
        # a crossover at a size where the baseline was skipped for memory: lightning wins by running at all
        by_memory = not found["extrapolated"] and ratios.get(int(found["qubits"] or 0)) == 0.0
        summary.append({"layers": layers, "batch": batch, **found, "by_memory": by_memory})
    return summary


def write_outputs(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path, suffix: str) -> None:
    """Write device_crossover{suffix}.json and .md (timing rows, crossover summaries, environment)."""
    baselines = [b for b in BASELINES if any(b in r for r in rows)]
    summaries = {b: summarise(rows, b) for b in baselines}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"device_crossover{suffix}.json").write_text(json.dumps(
        {"meta": meta, "noise_tolerance": NOISE, "rows": rows,
         "crossover": summaries.get("torch.statevector", summaries.get("default.qubit")),
         "crossover_by_baseline": summaries}, indent=2))

    def cell(r: dict[str, Any], d: str) -> str:
        v = r.get(d)
        if v is None:
            return ""
        return f"{v['seconds']:.4f}" if "seconds" in v else v["skipped"]

    def ratio(r: dict[str, Any], b: str) -> str:
        v = r.get(RATIO_KEYS[b])
        return "" if v is None else f"{v:.2f}"

    short = {"torch.statevector": "torch", "default.qubit": "default"}
    lines = [
        "# Device crossover: lightning.qubit (adjoint, per-sample tapes) vs the broadcasting backprop simulators "
        "(torch.statevector, default.qubit)",
        "",
        f"Generated by `benchmarks/bench_device_crossover.py{' --fast' if meta['fast'] else ''}`: "
        f"PennyLane {meta['pennylane']}, lightning {meta['pennylane_lightning']}, torch {meta['torch']}, "
        f"1 thread, float64, forward+backward of a cross-entropy of the expvals; median seconds per call. "
        f"Total {meta['total_s']:.0f} s. `mem`: skipped (estimated backprop footprint > "
        f"{meta['mem_gib']} GiB); `slow`: not run past a warm-up > {meta['slow_s']} s.",
        "",
        "| qubits | layers | batch | " + " | ".join(f"{d} s" for d in DEVICES if d in baselines or d not in BASELINES)
        + " | " + " | ".join(f"lightning/{short[b]}" for b in baselines) + " |",
        "|---:|---:|---:|" + "---:|" * (len(baselines) + 1 + len(baselines)),
    ]
    for r in rows:
        cells = [cell(r, d) for d in DEVICES if d in baselines or d not in BASELINES]
        lines.append(f"| {r['qubits']} | {r['layers']} | {r['batch']} | " + " | ".join(cells) + " | "
                     + " | ".join(ratio(r, b) for b in baselines) + " |")
    for b in baselines:
        use = {"torch.statevector": " (`CPU_CROSSOVER`: what `select_device('auto')` decides)",
               "default.qubit": " (`DEFAULT_QUBIT_CROSSOVER`, for reference)"}[b]
        lines += ["", f"## Crossover vs {b}{use}", "",
                  f"Qubits from which lightning.qubit is at least as fast as {b}: smallest measured size with "
                  f"ratio <= 1 there and <= {NOISE} (timing noise) at every larger size.", "",
                  "| layers | batch | crossover qubits | |", "|---:|---:|---:|---|"]
        for s_ in summaries[b]:
            q = "not in sight" if s_["qubits"] is None else f"{s_['qubits']:g}"
            how = "extrapolated" if s_["extrapolated"] else "measured"
            if s_.get("by_memory"):
                how += f" ({b} over the {meta['mem_gib']:g} GiB budget there)"
            lines.append(f"| {s_['layers']} | {s_['batch']} | {q} | {how} |")
    (out / f"device_crossover{suffix}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / f'device_crossover{suffix}.json'} and .md")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="1-minute smoke run (fewer sizes), writes *_fast files")
    ap.add_argument("--qubits", type=int, nargs="+", default=None)
    ap.add_argument("--layers", type=int, nargs="+", default=None)
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--budget-s", type=float, default=None, help="seconds of repeats per case (after warm-up)")
    ap.add_argument("--slow-s", type=float, default=None, help="stop growing a device past this warm-up time")
    ap.add_argument("--mem-gib", type=float, default=6.0,
                    help="skip a backprop simulator above this estimated autograd footprint")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--devices", nargs="+", default=list(DEVICES), choices=DEVICES,
                    help="devices to time (lightning.qubit is always timed: the ratios are against it)")
    ap.add_argument("--tag", default=None,
                    help="output file suffix (default: '_fast' with --fast, else none), e.g. _16q for a supplement")
    ap.add_argument("--resummarise", type=Path, nargs="+", default=None, metavar="JSON",
                    help="rebuild the .json/.md summary from earlier runs' JSON without timing anything; several "
                         "files (e.g. a main run and a larger-size supplement) are merged, later rows replacing "
                         "earlier ones of the same (layers, batch, qubits)")
    args = ap.parse_args(argv)
    if args.resummarise is not None:
        runs = [json.loads(f.read_text()) for f in args.resummarise]
        merged: dict[tuple[int, int, int], dict[str, Any]] = {}
        for run in runs:
            for r in run["rows"]:
                merged[(r["layers"], r["batch"], r["qubits"])] = r
        rows = sorted(merged.values(), key=lambda r: (r["layers"], r["batch"], r["qubits"]))
        meta = dict(runs[0]["meta"])
        if len(runs) > 1:
            meta["total_s"] = round(sum(run["meta"]["total_s"] for run in runs), 1)
            meta["merged_from"] = [str(f.name) for f in args.resummarise]
        suffix = args.tag if args.tag is not None else ("_fast" if meta["fast"] else "")
        write_outputs(rows, meta, args.out, suffix)
        return 0
    timed = [d for d in DEVICES if d in args.devices or d == "lightning.qubit"]

    qubits = args.qubits or ([4, 8, 12] if args.fast else [2, 4, 6, 8, 10, 12, 14])
    layers_list = args.layers or ([2] if args.fast else [2, 8])
    batches = args.batches or ([1, 16] if args.fast else [1, 4, 16, 64])
    budget = args.budget_s if args.budget_s is not None else (0.5 if args.fast else 2.0)
    slow = args.slow_s if args.slow_s is not None else (3.0 if args.fast else 12.0)

    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for layers in layers_list:
        for batch in batches:
            stopped: set[str] = set()
            for n in qubits:
                row: dict[str, Any] = {"qubits": n, "layers": layers, "batch": batch}
                for device in timed:
                    if device in stopped:
                        row[device] = {"skipped": "slow"}
                        continue
                    if device in MEM_ESTIMATE and MEM_ESTIMATE[device](n, batch, layers) > args.mem_gib * 2**30:
                        row[device] = {"skipped": "mem"}
                        continue
                    res = time_case(device, n, layers, batch, budget)
                    row[device] = res
                    if res["warmup_s"] > slow:
                        stopped.add(device)
                light = row["lightning.qubit"].get("seconds")
                for base in BASELINES:
                    t_base = row.get(base, {}).get("seconds")
                    if t_base is not None and light is not None:
                        row[RATIO_KEYS[base]] = light / t_base
                rows.append(row)
                print(f"L={layers:2d} B={batch:3d} n={n:2d}  "
                      + "  ".join(f"{d}: {row[d].get('seconds', row[d].get('skipped'))!s:>22}" for d in timed)
                      + "".join(f"  l/{b[:5]}={row.get(RATIO_KEYS[b], float('nan')):.2f}" for b in BASELINES),
                      flush=True)
    total = time.perf_counter() - t_start

    meta = {
        "pennylane": qml.__version__, "torch": torch.__version__,
        "pennylane_lightning": importlib.metadata.version("pennylane_lightning"),
        "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
        "threads": torch.get_num_threads(), "dtype": "float64", "fast": args.fast, "total_s": round(total, 1),
        "budget_s": budget, "slow_s": slow, "mem_gib": args.mem_gib, "devices": timed,
    }
    write_outputs(rows, meta, args.out, args.tag if args.tag is not None else ("_fast" if args.fast else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
