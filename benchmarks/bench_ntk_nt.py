"""Optional NTK anchor (issue 8): neural-tangents' ``empirical_ntk_fn`` against ``qlandscape.empirical_ntk``.

neural-tangents needs old pins (jax/jaxlib 0.4.24, numpy 1.26, TensorFlow 2.15 for its import), so it lives in a
separate environment and is never a dependency; this driver runs in qlandscape's environment and calls it::

    python3 -m venv /tmp/ntenv
    /tmp/ntenv/bin/pip install "jax==0.4.24" "jaxlib==0.4.24" "numpy==1.26.4" "scipy<1.13" frozendict absl-py \\
        flatbuffers "tensorflow-cpu==2.15.1" "tf2jax==0.3.6" && /tmp/ntenv/bin/pip install --no-deps neural-tangents==0.6.5
    OMP_NUM_THREADS=1 python benchmarks/bench_ntk_nt.py --nt-python /tmp/ntenv/bin/python
        # writes benchmarks/results/ntk_nt.{json,md}

Workload: the MLP 64-128-128-10 tanh of ``bench_ntk.py`` (``torch.manual_seed(0)``), the first ``--n`` (500) digits
training inputs, float32 and float64 (jax x64), full and output-traced kernels. The same weights and inputs go to
both sides through an npz file; the neural-tangents model is ``stax.serial(Dense(128), Tanh, Dense(128), Tanh,
Dense(10))`` with ``parameterization="standard"`` (``x W + b``, the torch layers' function; checked: the logits agree
to 1e-12 in float64). neural-tangents' traced kernel is the mean over outputs (``trace_axes=(-1,)``); it is
multiplied by C = 10 to compare with qlandscape's sum. Its settings are swept: ``implementation`` 1 (Jacobian
contraction), 2 (NTK-vector products), 3 (structured derivatives), each jitted, timed after a compile-and-run
warm-up (median of ``--repeats``); the fastest is its row. qlandscape's ``auto`` row runs in this process, 1 thread
(``OMP_NUM_THREADS=1``; XLA is pinned to one thread with ``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

NT_CHILD = r'''
import json, os, statistics, sys, time
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
src, dst, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = np.load(src)
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import neural_tangents as nt
from neural_tangents import stax
out = {}
for dtype in ("float64", "float32"):
    dt = jnp.float64 if dtype == "float64" else jnp.float32
    params = [(jnp.asarray(data[f"w{i}"].T, dt), jnp.asarray(data[f"b{i}"], dt)) for i in range(3)]
    x = jnp.asarray(data["x"], dt)
    _, apply_fn, _ = stax.serial(stax.Dense(128, parameterization="standard"), stax.Elementwise(fn=jnp.tanh),
                                 stax.Dense(128, parameterization="standard"), stax.Elementwise(fn=jnp.tanh),
                                 stax.Dense(10, parameterization="standard"))
    params_nt = [params[0], (), params[1], (), params[2]]
    logits = np.asarray(apply_fn(params_nt, x), dtype=np.float64)
    out[f"{dtype}_logits_max_abs_diff"] = float(np.abs(logits - data["logits"]).max())
    for kind, axes in (("full", ()), ("trace", (-1,))):
        best = None
        for impl in (1, 2, 3):
            fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=axes, vmap_axes=0, implementation=impl))
            try:
                t0 = time.perf_counter(); K = fn(x, None, params_nt).block_until_ready(); warm = time.perf_counter() - t0
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter(); K = fn(x, None, params_nt).block_until_ready(); times.append(time.perf_counter() - t0)
            except Exception as exc:
                out[f"{dtype}_{kind}_impl{impl}"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                continue
            med = statistics.median(times)
            out[f"{dtype}_{kind}_impl{impl}"] = {"seconds": med, "times": times, "warmup_s": warm}
            if best is None or med < best[0]:
                Kn = np.asarray(K, dtype=np.float64)
                if kind == "full":  # (N, N, C, C) -> sample-major (N*C, N*C)
                    N, _, C, _ = Kn.shape
                    Kn = Kn.transpose(0, 2, 1, 3).reshape(N * C, N * C)
                else:
                    Kn = Kn * 10.0  # neural-tangents' trace is the mean over the C = 10 outputs
                best = (med, impl)
                np.save(f"{dst}_{dtype}_{kind}.npy", Kn)
        out[f"{dtype}_{kind}_best"] = None if best is None else {"seconds": best[0], "implementation": best[1]}
out["versions"] = {"jax": jax.__version__, "neural_tangents": nt.__version__, "numpy": np.__version__}
json.dump(out, open(f"{dst}.json", "w"))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nt-python", required=True, help="python of the environment with neural-tangents")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("QLANDSCAPE_PROGRESS", "0")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import qlandscape as ql

    torch.manual_seed(0)
    model = ql.MLP(64, (128, 128), 10, "tanh").double().eval()
    x = ql.load_digits().train[0][: args.n].double()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_ntk_nt_"))
    with torch.no_grad():
        np.savez(tmp / "in.npz", x=x.numpy(), logits=model(x).numpy(),
                 **{f"w{i}": m.weight.numpy() for i, m in enumerate(linears)},
                 **{f"b{i}": m.bias.numpy() for i, m in enumerate(linears)})
    start = time.perf_counter()
    rows = []
    ours = {}
    for dtype in ("float64", "float32"):
        for kind in ("full", "trace"):
            fn = lambda: ql.empirical_ntk(model, x, kind=kind, dtype=dtype, progress=False)  # noqa: E731
            K = fn()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                K = fn()
                times.append(time.perf_counter() - t0)
            ours[(dtype, kind)] = (statistics.median(times), K.double())
    (tmp / "child.py").write_text(NT_CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([args.nt_python, str(tmp / "child.py"), str(tmp / "in.npz"), str(tmp / "nt"),
                           str(args.repeats)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"neural-tangents run failed:\n{proc.stderr[-3000:]}")
    nt = json.loads((tmp / "nt.json").read_text())
    for dtype in ("float64", "float32"):
        for kind in ("full", "trace"):
            ours_s, K = ours[(dtype, kind)]
            best = nt.get(f"{dtype}_{kind}_best")
            row = dict(dtype=dtype, kind=kind, qlandscape_auto_s=ours_s,
                       nt_sweep={f"implementation {i}": nt.get(f"{dtype}_{kind}_impl{i}") for i in (1, 2, 3)})
            if best:
                Knt = torch.from_numpy(np.load(tmp / f"nt_{dtype}_{kind}.npy"))
                row.update(nt_best_s=best["seconds"], nt_best_implementation=best["implementation"],
                           speedup=best["seconds"] / ours_s,
                           max_rel_diff=float((Knt - K).abs().max() / K.abs().max()))
            rows.append(row)
    res = dict(command=f"OMP_NUM_THREADS=1 python benchmarks/bench_ntk_nt.py --nt-python {args.nt_python}",
               date=time.strftime("%Y-%m-%d %H:%M:%S"), n=args.n, repeats=args.repeats, wall_s=time.perf_counter() - start,
               load_avg=os.getloadavg(), versions=nt["versions"], torch=torch.__version__,
               logits_max_abs_diff={d: nt[f"{d}_logits_max_abs_diff"] for d in ("float64", "float32")}, rows=rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ntk_nt.json").write_text(json.dumps(res, indent=2))
    L = ["# Empirical NTK: qlandscape vs neural-tangents (optional anchor)", "",
         f"Command: `{res['command']}` ({res['date']}); MLP 64-128-128-10 tanh, N = {args.n} digits inputs, 1 thread; "
         f"neural-tangents {res['versions']['neural_tangents']}, jax {res['versions']['jax']}; torch {res['torch']}; "
         f"load average {res['load_avg'][0]:.2f}. Logits agree to {res['logits_max_abs_diff']['float64']:.1e} "
         "(float64). neural-tangents: fastest of implementations 1/2/3 (jitted, after a compile-and-run warm-up); "
         "its traced kernel x 10 (it averages over outputs).", "",
         "| kind | dtype | qlandscape auto s | neural-tangents best s (impl.) | qlandscape speedup | max rel diff |",
         "|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['kind']} | {r['dtype']} | {r['qlandscape_auto_s']:.3g} | "
                 f"{r.get('nt_best_s', float('nan')):.3g} ({r.get('nt_best_implementation', '—')}) | "
                 f"{r.get('speedup', float('nan')):.1f}x | {r.get('max_rel_diff', float('nan')):.1e} |")
    (args.out / "ntk_nt.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    sys.exit(main())
