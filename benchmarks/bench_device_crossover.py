"""Where does lightning.qubit (adjoint, one tape per sample) overtake default.qubit (backprop, one broadcast call)?

    python benchmarks/bench_device_crossover.py          # ~8 min on one thread; writes results/device_crossover.*
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

default.qubit backprop holds one batched state per gate on the autograd tape; cases whose estimated footprint
exceeds ``--mem-gib`` are skipped (reported as "mem"). A device whose warm-up exceeds ``--slow-s`` is not run at
larger sizes for that (layers, batch). The crossover per (layers, batch) is the smallest measured qubit count
from which lightning is at least as fast at every larger measured size; when it is not reached within the
measured sizes it is extrapolated from the log-linear trend of the ratio over the three largest sizes. The
numbers feed ``qlandscape/quantum/devices.py`` (CPU_CROSSOVER).
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
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pennylane as qml  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent
DEVICES = ("default.qubit", "lightning.qubit")


def make_qnode(device: str, n: int) -> Any:
    """The paper's circuit on ``device`` (backprop for default.qubit, adjoint for lightning)."""
    diff = "backprop" if device == "default.qubit" else "adjoint"
    dev = qml.device(device, wires=n)

    @qml.qnode(dev, interface="torch", diff_method=diff)
    def circuit(x: torch.Tensor, w: torch.Tensor) -> list[Any]:
        for q in range(n):
            qml.RX(x[..., q], wires=q)
        for layer in range(w.shape[0]):
            for q in range(n):
                qml.RX(w[layer, 0, q], wires=q)
            for q in range(n):
                qml.RY(w[layer, 1, q], wires=q)
            if n > 1:
                for q in range(n if n > 2 else 1):
                    qml.CZ(wires=[q, (q + 1) % n])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    return circuit


def backprop_bytes(n: int, batch: int, layers: int) -> int:
    """Estimated autograd footprint of default.qubit backprop: one batched complex128 state per gate."""
    return (n + 3 * n * layers) * batch * 2**n * 16


def time_case(device: str, n: int, layers: int, batch: int, budget_s: float, seed: int = 0) -> dict[str, Any]:
    """Warm-up plus median of repeats of forward+backward; returns seconds and the repeat count."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n, generator=gen, dtype=torch.float64) * math.pi
    w0 = torch.rand(layers, 2, n, generator=gen, dtype=torch.float64) * 2 * math.pi
    y = torch.arange(batch) % n
    circuit = make_qnode(device, n)

    def step() -> float:
        w = w0.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = circuit(x, w)
        logits = torch.stack(list(out), dim=-1).reshape(batch, n)
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


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Crossover per (layers, batch) from the timing rows."""
    summary = []
    for layers, batch in dict.fromkeys((r["layers"], r["batch"]) for r in rows):
        ratios: dict[int, float] = {}
        for r in rows:
            if (r["layers"], r["batch"]) != (layers, batch) or "seconds" not in r["lightning.qubit"]:
                continue
            if "seconds" in r["default.qubit"]:
                ratios[r["qubits"]] = r["lightning.qubit"]["seconds"] / r["default.qubit"]["seconds"]
            elif r["default.qubit"].get("skipped") == "mem":
                ratios[r["qubits"]] = 0.0  # default.qubit cannot run in the memory budget: lightning wins outright
        ns = sorted({r["qubits"] for r in rows})
        summary.append({"layers": layers, "batch": batch, **crossover(ns, ratios)})
    return summary


def write_outputs(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path, suffix: str) -> None:
    """Write device_crossover{suffix}.json and .md (timing rows, crossover summary, environment)."""
    summary = summarise(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"device_crossover{suffix}.json").write_text(
        json.dumps({"meta": meta, "noise_tolerance": NOISE, "rows": rows, "crossover": summary}, indent=2))

    def cell(r: dict[str, Any], d: str) -> str:
        v = r[d]
        return f"{v['seconds']:.4f}" if "seconds" in v else v["skipped"]

    lines = [
        "# Device crossover: default.qubit (backprop, broadcast) vs lightning.qubit (adjoint, per-sample tapes)",
        "",
        f"Generated by `benchmarks/bench_device_crossover.py{' --fast' if meta['fast'] else ''}`: "
        f"PennyLane {meta['pennylane']}, lightning {meta['pennylane_lightning']}, torch {meta['torch']}, "
        f"1 thread, float64, forward+backward of a cross-entropy of the expvals; median seconds per call. "
        f"Total {meta['total_s']:.0f} s. `mem`: default.qubit skipped (estimated backprop footprint > "
        f"{meta['mem_gib']} GiB); `slow`: not run past a warm-up > {meta['slow_s']} s.",
        "",
        "| qubits | layers | batch | default.qubit s | lightning.qubit s | lightning/default |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.get("ratio_lightning_over_default")
        lines.append(f"| {r['qubits']} | {r['layers']} | {r['batch']} | {cell(r, 'default.qubit')} | "
                     f"{cell(r, 'lightning.qubit')} | {'' if ratio is None else f'{ratio:.2f}'} |")
    lines += ["", "## Crossover (qubits from which lightning.qubit is at least as fast)", "",
              f"Smallest measured size with ratio <= 1 there and <= {NOISE} (timing noise) at every larger size.", "",
              "| layers | batch | crossover qubits | |", "|---:|---:|---:|---|"]
    for s in summary:
        q = "not in sight" if s["qubits"] is None else f"{s['qubits']:g}"
        lines.append(f"| {s['layers']} | {s['batch']} | {q} | {'extrapolated' if s['extrapolated'] else 'measured'} |")
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
    ap.add_argument("--mem-gib", type=float, default=6.0, help="skip default.qubit above this estimated footprint")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--resummarise", type=Path, default=None, metavar="JSON",
                    help="rebuild the .json/.md summary from an earlier run's JSON without timing anything")
    args = ap.parse_args(argv)
    if args.resummarise is not None:
        old = json.loads(args.resummarise.read_text())
        write_outputs(old["rows"], old["meta"], args.out, "_fast" if old["meta"]["fast"] else "")
        return 0

    qubits = args.qubits or ([4, 8, 12] if args.fast else [2, 4, 6, 8, 10, 12, 14, 16])
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
                for device in DEVICES:
                    if device in stopped:
                        row[device] = {"skipped": "slow"}
                        continue
                    if device == "default.qubit" and backprop_bytes(n, batch, layers) > args.mem_gib * 2**30:
                        row[device] = {"skipped": "mem"}
                        continue
                    res = time_case(device, n, layers, batch, budget)
                    row[device] = res
                    if res["warmup_s"] > slow:
                        stopped.add(device)
                a, b = row["default.qubit"].get("seconds"), row["lightning.qubit"].get("seconds")
                if a is not None and b is not None:
                    row["ratio_lightning_over_default"] = b / a
                rows.append(row)
                print(f"L={layers:2d} B={batch:3d} n={n:2d}  "
                      + "  ".join(f"{d}: {row[d].get('seconds', row[d].get('skipped'))!s:>22}" for d in DEVICES)
                      + f"  ratio={row.get('ratio_lightning_over_default', float('nan')):.2f}", flush=True)
    total = time.perf_counter() - t_start

    meta = {
        "pennylane": qml.__version__, "torch": torch.__version__,
        "pennylane_lightning": importlib.metadata.version("pennylane_lightning"),
        "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
        "threads": torch.get_num_threads(), "dtype": "float64", "fast": args.fast, "total_s": round(total, 1),
        "budget_s": budget, "slow_s": slow, "mem_gib": args.mem_gib,
    }
    write_outputs(rows, meta, args.out, "_fast" if args.fast else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
