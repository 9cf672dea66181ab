"""Measures the constants of ``qlandscape.quantum.costmodel`` (``bench_qsim.py --calibrate``).

1. Per qubit count n = 2..12 and Kronecker group size g: the time per state (row) of one layer of single-qubit
   gates on column states (the D basis states, as when a segment is folded), best of 5; the best g.
2. Per n: the time per row of a state times a D x D matrix (the folded segment's GEMM) over the time per row of
   one group application: ``GEMM_RATIO``.
3. At 8 qubits (the paper's circuits): whether the cost model's fold / gate-by-gate choice is the faster one, by
   timing both for a gradient plus an HVP at several depths and sample counts.

Writes ``qsim_calibration.json`` and ``qsim_calibration.md`` to the output folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

os.environ["OMP_NUM_THREADS"] = "1"


def _best(f: Callable[[], Any], reps: int = 5) -> float:
    f()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def kernel_table(dtype: Any) -> list[dict[str, Any]]:
    import torch

    from qlandscape.quantum.kernels import apply_cols, group_wires

    rows = []
    for n in range(2, 13):
        D = 2 ** n
        M = max(D, 64)
        s = torch.randn(1, D, M, dtype=dtype)
        per_g = {}
        for g in range(1, min(n, 6) + 1):
            groups = group_wires(n, g)
            ks = [torch.randn(1, 2 ** len(w), 2 ** len(w), dtype=dtype) for w in groups]

            def layer(groups: Any = groups, ks: Any = ks) -> Any:
                x = s
                for w, k in zip(groups, ks):
                    x = apply_cols(x, k, w, n)
                return x

            per_g[g] = _best(layer) / M
        best = min(per_g, key=per_g.get)  # type: ignore[arg-type]
        U = torch.randn(1, D, D, dtype=dtype)
        gemm = _best(lambda U=U: U @ s) / M
        op = per_g[best] / len(group_wires(n, best))
        rows.append(dict(n=n, layer_per_row_us={g: t * 1e6 for g, t in per_g.items()}, best_group=best,
                         gemm_per_row_us=gemm * 1e6, gemm_ratio=gemm / op))
    return rows


def fold_check() -> list[dict[str, Any]]:
    import torch

    from qlandscape.quantum.circuits import CircuitSpec
    from qlandscape.quantum.compiled import CompiledCircuit

    out = []
    for L in (2, 10, 50):
        spec = CircuitSpec(n_qubits=8, layers=L, n_features=64, n_outputs=10)
        for B in (32, 128, 256, 512, 1024):
            times = {}
            for fold in (True, False):
                sim = CompiledCircuit(spec.qfunc, 8, 64, spec.n_weights, fold=fold)
                g = torch.Generator().manual_seed(0)
                x = torch.rand(4, B, 64, generator=g, dtype=torch.float64)
                w = torch.rand(4, spec.n_weights, generator=g, dtype=torch.float64)
                gout = torch.randn(4, B, 10, generator=g, dtype=torch.float64)
                a = torch.randn_like(w)

                def work(sim: Any = sim) -> None:
                    sim.adjoint(x, w, gout, use_cache=True)
                    sim.adjoint_tangent(x, w, gout, a, None, need_x=False)

                times[fold] = _best(work, reps=2)
            auto = CompiledCircuit(spec.qfunc, 8, 64, spec.n_weights).plan(4, B, torch.float64, torch.device("cpu"))
            chose = "fold" in auto.modes
            out.append(dict(L=L, B=B, fold_s=times[True], gates_s=times[False], model_folds=chose,
                             model_right=chose == (times[True] < times[False]),
                             cost_of_a_wrong_choice=max(times.values()) / min(times.values())))
    return out


def calibrate(out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    result = dict(when=time.strftime("%Y-%m-%d"), complex128=kernel_table(torch.complex128),
                  complex64=kernel_table(torch.complex64), fold_check=fold_check())
    out.mkdir(parents=True, exist_ok=True)
    (out / "qsim_calibration.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Cost-model calibration ({result['when']}, one thread)", "",
             "Command: `python benchmarks/bench_qsim.py --calibrate`.", "",
             "| n | dtype | per-row layer time by group size (us) | best group | GEMM row (us) | GEMM ratio |",
             "|---|---|---|---|---|---|"]
    for dt in ("complex128", "complex64"):
        for r in result[dt]:  # type: ignore[attr-defined]
            per = ", ".join(f"{g}: {t:.2f}" for g, t in r["layer_per_row_us"].items())
            lines.append(f"| {r['n']} | {dt} | {per} | {r['best_group']} | {r['gemm_per_row_us']:.2f} | "
                         f"{r['gemm_ratio']:.1f} |")
    lines += ["", "Fold vs gate by gate at 8 qubits, 4 circuits, gradient + HVP (best of 2, s):", "",
              "| L | samples | fold | gate by gate | the model folds | right choice | cost of the other |",
              "|---|---|---|---|---|---|---|"]
    for r in result["fold_check"]:  # type: ignore[attr-defined]
        lines.append(f"| {r['L']} | {r['B']} | {r['fold_s']:.3f} | {r['gates_s']:.3f} | {r['model_folds']} | "
                     f"{r['model_right']} | {r['cost_of_a_wrong_choice']:.2f}x |")
    (out / "qsim_calibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
