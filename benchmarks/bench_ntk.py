"""Empirical NTK benchmark (issue 8): ``qlandscape.ntk.empirical_ntk`` against a naive per-sample Jacobian
loop and the torch.func tutorial's Jacobian contraction, side by side in one run, one thread.

    OMP_NUM_THREADS=1 python benchmarks/bench_ntk.py          # full run; writes benchmarks/results/ntk.{json,md}
    OMP_NUM_THREADS=1 python benchmarks/bench_ntk.py --fast   # smoke run (a few minutes); writes ntk_fast.{json,md}

Workloads (seeded initial weights, ``torch.manual_seed(0)``; the kernel's cost does not depend on training):
the first ``N`` training inputs of ``qlandscape.load_digits()`` (N = 500; --fast: 100) for

* MLP 64-128-128-10 tanh (``qlandscape.models.MLP(64, (128, 128), 10, "tanh")``, 26,122 parameters),
* MLP 64-512-512-10 tanh (301,066 parameters; not in --fast),
* SmallCNN conv8-conv16-GAP-linear tanh on the 8x8 images (``load_digits(images=True)``, 1,418 parameters),

each in float64 and float32, full kernel ``(N*C, N*C)`` (sample-major) and output-traced kernel ``(N, N)``
(sum over the C = 10 outputs); and the patch QNN ``PatchQNN("digits", n_patches=4, layers=2)`` (384
parameters) on the first 200 inputs (--fast: 50), float64.

Methods (rows)
--------------
* ``qlandscape <impl>``: ``empirical_ntk(model, x, kind=..., implementation=impl, dtype=...)`` for ``auto``,
  ``structured`` (Linear and Conv2d layers), ``jacobian`` and ``autograd``, default block sizes. Quantum: ``auto`` on the
  default.qubit model and on the ``device="torch.statevector"`` model (same weights).
* ``naive loop`` (anchor a): per sample one forward and, per output, ``torch.autograd.grad`` with
  ``retain_graph``; the gradients fill a preallocated ``J (N*C, P)`` (preallocating instead of stacking halves
  its memory), then ``J @ J.T`` (traced: ``J.view(N, C*P) @ J.view(N, C*P).T``, the sum over outputs).
  Quantum: the same loop on the ``device="lightning.qubit"`` model (adjoint differentiation, same state_dict).
* ``tutorial`` (anchor b): https://pytorch.org/tutorials/intermediate/neural_tangent_kernel.html —
  ``empirical_ntk_jacobian_contraction``: ``vmap(jacrev(fnet_single), (None, 0))`` over the points, then per
  parameter tensor ``einsum('Naf,Mbf->NMab')`` (traced: ``'Naf,Maf->NM'``), summed (in place: the tutorial
  stacks, then sums; same arithmetic, less memory). Chunked over points to fit memory: the kernel is assembled
  chunk pair by chunk pair, every pair ``(a, b)`` as the tutorial's ``ntk(x1=chunk a, x2=chunk b)``, except that
  a chunk's Jacobian is computed once and kept (when the whole ``J`` fits in half the memory budget; otherwise
  recomputed per pair, as the tutorial does).
* ``tutorial+sym`` (anchor c, stricter than the tutorial): the same, but only chunk pairs ``b <= a`` are
  contracted (the upper ones mirrored; a diagonal pair reuses its one Jacobian), the symmetry our ``jacobian``
  route exploits. The issue's CNN target is stated against the tutorial (b); (c) shows how much of the gain is
  that symmetry.
  For both anchors the knob, the chunk size (50/100/250/500 points), is swept; each setting runs as its own row
  in its own process and the fastest is reported as the anchor's row (the sweep is in the JSON). Its result
  ``(N, N, C, C)`` is not permuted to sample-major inside the timing (only for the accuracy check).

The wide MLP (301,066 parameters: its full Jacobian is 12 GB in float64) has no ``autograd`` row and no naive row
(they would not fit the memory budget), and its tutorial sweeps use chunks of 250 and 500 only (smaller chunks
recompute the Jacobian for every chunk pair). A row still running after ``--row-timeout`` seconds (default 150,
warm-up and repeats together) is stopped and reported as "> timeout"; a speedup against such an anchor is a
lower bound (marked >=).

Measurements. Every row runs in a fresh process, forked from the driver after its imports (torch, qlandscape,
PennyLane, sklearn; no NTK work is done in the driver): setup (model, data), then one warm-up
run and, when the warm-up took under 15 s, ``--repeats`` timed runs (median; 15-60 s: one more run; over 60 s:
the warm-up is the single reported run, marked). Memory: the peak resident set of the work alone (Linux: the
high-water mark is reset after setup with ``/proc/self/clear_refs`` and read from ``VmHWM``, minus the RSS
before the work; torch's CPU allocations are invisible to tracemalloc) as "peak MiB", plus the process's whole
``ru_maxrss``. A row whose estimated memory exceeds the budget (``--mem-gib``, default 8) is recorded as
skipped with the reason. Accuracy: every row's kernel against the float64 ``qlandscape auto`` kernel of the
same model and kind, ``max |K - K_ref| / max |K_ref|``. Rows run one after the other (not interleaved), so
ratios assume a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("QLANDSCAPE_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)

import qlandscape as ql  # noqa: E402
from qlandscape.ntk import empirical_ntk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import reset_peak_rss, status_kb  # noqa: E402

HERE = Path(__file__).resolve().parent
GIB = 2**30
MIB = 2**20
DTYPES = {"float64": torch.float64, "float32": torch.float32}
TUTORIAL_CHUNKS = (50, 100, 250, 500)
TUTORIALS = ("tutorial", "tutorial+sym")  # anchors (b) and (c)
SINGLE_RUN_S = 60.0  # warm-up longer than this: it is the single reported run
ONE_MORE_S = 15.0    # warm-up between ONE_MORE_S and SINGLE_RUN_S: one more run

MODELS = {
    "mlp": "MLP 64-128-128-10 tanh",
    "wide": "MLP 64-512-512-10 tanh",
    "cnn": "SmallCNN conv8-conv16-GAP-linear tanh (8x8 images)",
    "qnn": "PatchQNN digits, 4 patches, L=2",
}
QNN_DEVICES = {"qlandscape auto (default.qubit)": "default.qubit",
               "qlandscape auto (torch.statevector)": "torch.statevector",
               "naive loop (lightning.qubit adjoint)": "lightning.qubit"}


# ============================================================================ workloads
def build_model(name: str, dtype: torch.dtype, device: str = "default.qubit") -> torch.nn.Module:
    """Seeded initial weights; the QNN on ``device`` carries the default.qubit model's state_dict."""
    torch.manual_seed(0)
    if name == "mlp":
        m = ql.models.MLP(64, (128, 128), 10, "tanh")
    elif name == "wide":
        m = ql.models.MLP(64, (512, 512), 10, "tanh")
    elif name == "cnn":
        m = ql.models.SmallCNN(1, (8, 16), 10, "tanh")
    elif name == "qnn":
        ref = ql.quantum.PatchQNN("digits", n_patches=4, layers=2, device="default.qubit")
        if device == "default.qubit":
            m = ref
        else:
            m = ql.quantum.PatchQNN("digits", n_patches=4, layers=2, device=device)
            m.load_state_dict(ref.state_dict())
    else:
        raise ValueError(name)
    return m.to(dtype).eval()


def inputs(name: str, n: int, dtype: torch.dtype) -> torch.Tensor:
    ds = ql.load_digits(images=(name == "cnn"))
    x = ds.train[0][:n]
    if x.shape[0] < n:
        raise ValueError(f"only {x.shape[0]} training inputs, asked for {n}")
    return x.to(dtype)


def n_params(name: str) -> int:
    return sum(p.numel() for p in build_model(name, torch.float64).parameters())


# ============================================================================ methods
def naive_ntk(model: torch.nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Anchor (a): per sample a forward, per output ``autograd.grad``; J (N*C, P) then J @ J.T."""
    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)
    N = int(x.shape[0])
    J: Optional[torch.Tensor] = None
    C = 0
    for i in range(N):
        out = model(x[i:i + 1])
        if J is None:
            C = int(out.shape[1])
            J = torch.empty(N * C, P, dtype=out.dtype)
        for c in range(C):
            grads = torch.autograd.grad(out[0, c], params, retain_graph=c < C - 1, allow_unused=True)
            row, k = J[i * C + c], 0
            for p, g in zip(params, grads):
                n = p.numel()
                if g is None:
                    row[k:k + n] = 0.0
                else:
                    row[k:k + n] = g.reshape(-1)
                k += n
    assert J is not None
    if kind == "trace":
        Jr = J.view(N, C * P)
        return Jr @ Jr.T
    return J @ J.T


def tutorial_ntk(model: torch.nn.Module, x: torch.Tensor, kind: str, chunk: int, cache: bool,
                 symmetric: bool = False) -> torch.Tensor:
    """Anchor (b): the torch.func tutorial's ``empirical_ntk_jacobian_contraction``, chunked over points, every
    chunk pair contracted; (c) with ``symmetric``: only pairs ``b <= a``, mirrored.

    Returns ``(N, N, C, C)`` (full, the tutorial's ``NMab`` layout) or ``(N, N)`` (trace)."""
    from torch.func import functional_call, jacrev, vmap
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(params, x):
        return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)

    jac_fn = vmap(jacrev(fnet_single), (None, 0))

    def jac(xb: torch.Tensor) -> list[torch.Tensor]:
        return [j.flatten(2) for j in jac_fn(params, xb).values()]

    expr = "Naf,Mbf->NMab" if kind == "full" else "Naf,Maf->NM"

    def contract(j1: list[torch.Tensor], j2: list[torch.Tensor]) -> torch.Tensor:
        total: Optional[torch.Tensor] = None
        for a, b in zip(j1, j2):
            t = torch.einsum(expr, a, b)
            total = t if total is None else total.add_(t)
        assert total is not None
        return total

    N = int(x.shape[0])
    starts = list(range(0, N, chunk))
    jacs: dict[int, list[torch.Tensor]] = {}
    K: Optional[torch.Tensor] = None
    for a, sa in enumerate(starts):
        ja = jacs[a] if a in jacs else jac(x[sa:sa + chunk])
        if cache:
            jacs[a] = ja
        ra = slice(sa, sa + chunk)
        for b in range(a + 1 if symmetric else len(starts)):
            sb = starts[b]
            if b == a and symmetric:
                jb = ja
            elif cache and b in jacs:
                jb = jacs[b]
            else:  # the tutorial's ntk(x1, x2) computes both Jacobians
                jb = jac(x[sb:sb + chunk])
                if cache:
                    jacs[b] = jb
            blk = contract(ja, jb)
            if K is None:
                K = torch.empty((N, N) + tuple(blk.shape[2:]), dtype=blk.dtype)
            rb = slice(sb, sb + chunk)
            K[ra, rb] = blk
            if b != a and symmetric:
                K[rb, ra] = blk.transpose(0, 1) if kind == "trace" else blk.permute(1, 0, 3, 2)
    assert K is not None
    return K


def canonical(K: torch.Tensor, kind: str) -> torch.Tensor:
    """Sample-major ``(N*C, N*C)`` (full) / ``(N, N)`` (trace), float64."""
    if kind == "full" and K.dim() == 4:
        N, _, C, _ = K.shape
        K = K.permute(0, 2, 1, 3).reshape(N * C, N * C)
    return K.to(torch.float64)


# ============================================================================ memory estimates
def estimate_bytes(row: dict, P: int, C: int = 10) -> Optional[float]:
    """Rough peak bytes of a row's work (None: bounded by design, never skipped)."""
    N, item = row["n"], torch.empty((), dtype=DTYPES[row["dtype"]]).element_size()
    K = (N * C) ** 2 * item if row["kind"] == "full" else N * N * item
    J_all = N * C * P * item
    if row["method"].startswith("naive"):
        return J_all + K
    if row["method"] in TUTORIALS:
        if row["chunk"] >= N:  # one chunk: one Jacobian, reused for both sides
            return J_all + K
        Jc = row["chunk"] * C * P * item
        return J_all + Jc + K if row["cache"] else 3 * Jc + K
    return None


def fmt_gib(b: float) -> str:
    return f"{b / GIB:.1f} GiB"


# ============================================================================ child: one row


def run_row(row: dict, repeats: int, ref_dir: Path) -> dict:
    """Time one row in this (fresh) process; compare with / save the reference kernel."""
    dtype = DTYPES[row["dtype"]]
    name, kind, method = row["model"], row["kind"], row["method"]
    x = inputs(name, row["n"], dtype)
    fn: Callable[[], torch.Tensor]
    if name == "qnn":
        model = build_model(name, dtype, QNN_DEVICES[method])
        if method.startswith("naive"):
            def fn() -> torch.Tensor:
                return naive_ntk(model, x, kind)
        else:
            def fn() -> torch.Tensor:
                return empirical_ntk(model, x, kind=kind, implementation="auto", dtype=dtype, progress=False)
    else:
        model = build_model(name, dtype)
        if method.startswith("qlandscape"):
            impl = method.split()[1]

            def fn() -> torch.Tensor:
                return empirical_ntk(model, x, kind=kind, implementation=impl, dtype=dtype, progress=False)
        elif method.startswith("naive"):
            def fn() -> torch.Tensor:
                return naive_ntk(model, x, kind)
        else:
            def fn() -> torch.Tensor:
                return tutorial_ntk(model, x, kind, row["chunk"], row["cache"], row["method"] == "tutorial+sym")

    base_kb = reset_peak_rss()
    times: list[float] = []
    K: Optional[torch.Tensor] = None

    def once() -> None:
        nonlocal K
        K = None  # the previous run's kernel is not kept alive during the next
        t0 = time.perf_counter()
        K = fn()
        times.append(time.perf_counter() - t0)

    once()  # warm-up
    warm = times[0]
    n_more = 0 if warm > SINGLE_RUN_S else 1 if warm > ONE_MORE_S else repeats
    for _ in range(n_more):
        once()
    timed = times[1:] if n_more else times
    peak_kb = status_kb("VmHWM")
    out: dict[str, Any] = dict(
        seconds=statistics.median(timed), times=times,
        timing=(f"median of {n_more} runs after a warm-up" if n_more else "single run (warm-up > 60 s)"),
        peak_mib=(peak_kb - base_kb) / 1024,
        ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    assert K is not None
    Kc = canonical(K, kind)
    out["shape"] = list(Kc.shape)
    ref_path = ref_dir / f"{name}_{kind}.pt"
    if row.get("reference"):
        torch.save(Kc, ref_path)
        out["max_rel_diff"] = 0.0
    elif ref_path.exists():
        ref = torch.load(ref_path)
        out["max_rel_diff"] = float((Kc - ref).abs().max() / ref.abs().max())
    out["symmetric"] = bool(torch.equal(Kc, Kc.T))
    return out


# ============================================================================ parent
def plan(models: list[str], n: int, n_qnn: int, budget: float) -> list[dict]:
    """All rows, the float64 ``qlandscape auto`` row first per (model, kind): it is the reference."""
    rows: list[dict] = []
    for name in models:
        if name == "qnn":
            for kind in ("trace", "full"):
                for i, method in enumerate(QNN_DEVICES):
                    rows.append(dict(model=name, kind=kind, dtype="float64", method=method, n=n_qnn,
                                     reference=(i == 0)))
            continue
        P = n_params(name)
        # the wide MLP: no autograd row (a per-sample loop like the naive anchor, which does not fit in memory
        # there) and the tutorials' chunks >= 250 only (smaller chunks recompute the 12 GB Jacobian per pair)
        impls = ["auto", "structured", "jacobian"] + (["autograd"] if name != "wide" else [])
        chunks = [c for c in TUTORIAL_CHUNKS if name != "wide" or c >= 250]
        for kind in ("full", "trace"):
            for dtype in ("float64", "float32"):
                item = torch.empty((), dtype=DTYPES[dtype]).element_size()
                for impl in impls:
                    rows.append(dict(model=name, kind=kind, dtype=dtype, method=f"qlandscape {impl}", n=n,
                                     reference=(dtype == "float64" and impl == "auto")))
                rows.append(dict(model=name, kind=kind, dtype=dtype, method="naive loop", n=n))
                cache = n * 10 * P * item <= budget / 2
                for method in TUTORIALS:
                    for chunk in sorted({min(c, n) for c in chunks}):
                        if method == "tutorial+sym" and chunk >= n:
                            continue  # one chunk: the same computation as the tutorial's
                        rows.append(dict(model=name, kind=kind, dtype=dtype, method=method, n=n, chunk=chunk,
                                         cache=cache))
        for r in rows:
            if r["model"] == name:
                est = estimate_bytes(r, P)
                if est is not None and est > budget:
                    what = ("J" if r["method"] == "naive loop" or r.get("cache") or r["chunk"] >= n
                            else "two chunks' J")
                    r["skipped"] = (f"{what} would be {fmt_gib(_j_part(r, P))}; estimated peak "
                                    f"{fmt_gib(est)} > {fmt_gib(budget)} budget")
    return rows


def _j_part(row: dict, P: int, C: int = 10) -> float:
    item = torch.empty((), dtype=DTYPES[row["dtype"]]).element_size()
    if row["method"] == "naive loop" or row.get("cache") or row["chunk"] >= row["n"]:
        return row["n"] * C * P * item
    return 2 * min(row["chunk"], row["n"]) * C * P * item


def _worker(conn: Any, row: dict, repeats: int, ref_dir: Path) -> None:
    try:
        res = run_row(row, repeats, ref_dir)
    except Exception as exc:  # noqa: BLE001 - recorded by the parent
        res = dict(error=f"{type(exc).__name__}: {exc}"[:300], where=traceback.format_exc()[-600:])
    conn.send(res)
    conn.close()


def spawn_row(row: dict, repeats: int, ref_dir: Path, timeout: float) -> dict:
    """Run one row in a fresh process forked from this one (imports done, no NTK work yet: no import cost per
    row, and the child's peak memory is its own); a row still running after ``timeout`` seconds is killed and
    recorded as timed out (its time is then only known to exceed ``timeout``)."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    t0 = time.perf_counter()
    p = ctx.Process(target=_worker, args=(send, row, repeats, ref_dir))
    p.start()
    send.close()
    res: Optional[dict] = None
    if recv.poll(timeout):
        try:
            res = recv.recv()
        except EOFError:
            res = None
    else:
        p.kill()
        res = dict(timed_out=timeout)
    p.join()
    if res is None:
        res = dict(error=f"worker process died (exit code {p.exitcode}; killed for memory?)")
    res["process_wall_s"] = time.perf_counter() - t0
    return res


def label(row: dict) -> str:
    if row["method"] in TUTORIALS and row["chunk"] >= row["n"]:
        return f"{row['method']} (one chunk of {row['n']})"
    if row["method"] in TUTORIALS:
        return f"{row['method']} (chunk {row['chunk']}, {'J cached' if row['cache'] else 'J recomputed'})"
    return row["method"]


def summarise(rows: list[dict]) -> list[dict]:
    """One table row per (model, kind, dtype, method): the tutorial's fastest chunk setting; speedups."""
    table: list[dict] = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["kind"], r["dtype"]), []).append(r)
    for (model, kind, dtype), rs in groups.items():
        sweeps = {m: [r for r in rs if r["method"] == m] for m in TUTORIALS}
        best: dict[str, Optional[dict]] = {}
        for m, sweep in sweeps.items():
            ok = [r for r in sweep if "seconds" in r]
            slow = [r for r in sweep if "timed_out" in r]  # all settings timed out: the time is a lower bound
            best[m] = (min(ok, key=lambda r: r["seconds"]) if ok else slow[0] if slow
                       else sweep[0] if sweep else None)
        best_tut, best_sym = best["tutorial"], best["tutorial+sym"]
        chosen = [r for r in rs if r["method"] not in TUTORIALS] + [b for b in best.values() if b]
        naive = next((r for r in rs if r["method"].startswith("naive")), None)
        for r in chosen:
            t = dict(model=model, kind=kind, dtype=dtype, method=label(r), n=r["n"])
            for k in ("seconds", "timing", "peak_mib", "ru_maxrss_mib", "max_rel_diff", "skipped", "error",
                      "timed_out"):
                if k in r:
                    t[k] = r[k]
            if "seconds" in r:
                # an anchor that timed out took longer than its timeout: the speedup is a lower bound
                for key, anchor in (("naive", naive), ("tutorial", best_tut), ("tutorial_sym", best_sym)):
                    if anchor is None or not ("seconds" in anchor or "timed_out" in anchor):
                        continue
                    t[f"speedup_vs_{key}"] = anchor.get("seconds", anchor.get("timed_out")) / r["seconds"]
                    if "timed_out" in anchor:
                        t[f"speedup_vs_{key}_at_least"] = True
                if naive is not None and "seconds" in naive and naive.get("peak_mib"):
                    t["memory_vs_naive"] = r["peak_mib"] / naive["peak_mib"]
            if r["method"] in TUTORIALS and r is best[r["method"]]:
                t["tutorial_sweep"] = [dict(chunk=s["chunk"], cache=s["cache"],
                                            **{k: s[k] for k in ("seconds", "peak_mib", "skipped", "error",
                                                                 "timed_out") if k in s})
                                       for s in sweeps[r["method"]]]
            table.append(t)
    return table


def targets(table: list[dict]) -> list[dict]:
    """The issue's targets, per (model, kind, dtype) where both sides were measured."""
    def find(model, kind, dtype, method):
        return next((t for t in table if (t["model"], t["kind"], t["dtype"]) == (model, kind, dtype)
                     and t["method"].startswith(method)), None)

    out = []
    for t in table:
        m, k, d = t["model"], t["kind"], t["dtype"]
        if m in ("mlp", "wide") and k == "full" and t["method"] == "qlandscape auto":
            naive = find(m, k, d, "naive")
            ok = None
            if "seconds" in t and naive and "seconds" in naive:  # the memory ratio needs a finished naive row
                ok = t["speedup_vs_naive"] >= 20 and t["memory_vs_naive"] <= 0.5
            out.append(dict(target="MLP full kernel >= 20x faster than the naive loop with <= 1/2 its memory",
                            model=m, kind=k, dtype=d, speedup=t.get("speedup_vs_naive"),
                            memory_ratio=t.get("memory_vs_naive"), met=ok,
                            note=None if ok is not None else f"naive loop not measured ({(naive or {}).get('skipped')})"))
        if m == "cnn" and t["method"] == "qlandscape auto":
            sp = t.get("speedup_vs_tutorial")
            out.append(dict(target="CNN >= 1.4x faster than the tutorial's contraction", model=m, kind=k, dtype=d,
                            speedup=sp, met=None if sp is None else sp >= 1.4,
                            at_least=bool(t.get("speedup_vs_tutorial_at_least")),
                            vs_sym=t.get("speedup_vs_tutorial_sym")))
        if m == "qnn" and t["method"].startswith("qlandscape auto"):
            sp = t.get("speedup_vs_naive")
            out.append(dict(target="quantum NTK >= 10x faster than per-sample adjoint", model=m, kind=k, dtype=d,
                            via=t["method"], speedup=sp, met=None if sp is None else sp >= 10,
                            at_least=bool(t.get("speedup_vs_naive_at_least"))))
    return out


def machine_info(argv: list[str]) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal"))) / 1024**2
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=HERE).stdout.strip() or None
    except OSError:
        commit = None
    try:
        import pennylane
        pl = pennylane.__version__
    except ImportError:
        pl = None
    return dict(python=platform.python_version(), torch=torch.__version__, pennylane=pl, cpu=cpu,
                cores=os.cpu_count(), mem_gib=mem, threads=torch.get_num_threads(),
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"), git_commit=commit,
                load_avg_start=list(os.getloadavg()),
                command="OMP_NUM_THREADS=1 python benchmarks/bench_ntk.py" + "".join(" " + a for a in argv),
                date=time.strftime("%Y-%m-%d %H:%M:%S"))


def _f(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(res: dict) -> str:
    mc, cfg = res["machine"], res["config"]
    L = [f"# Empirical NTK benchmark{' (--fast)' if cfg['fast'] else ''}", "",
         f"Command: `{mc['command']}` ({mc['date']}; total {res['wall_s'] / 60:.1f} min). "
         f"Machine: {mc['cpu']}, {mc['cores']} cores, {_f(mc['mem_gib'], '.0f')} GiB; 1 thread; Python "
         f"{mc['python']}, torch {mc['torch']}, PennyLane {mc['pennylane']}; git {mc['git_commit']}; load average "
         f"at start {mc['load_avg_start'][0]:.2f}, at end {res['load_avg_end'][0]:.2f}.", "",
         f"Inputs: first {cfg['n']} digits training inputs (QNN: {cfg['n_qnn']}); seeded initial weights. "
         "Every row in a fresh process: seconds = median of repeats after one warm-up (see timing in the JSON); "
         "peak MiB = peak resident-set growth of the work alone (Linux VmHWM reset after setup); "
         "max rel diff = max |K - K_ref| / max |K_ref| against the float64 `qlandscape auto` kernel. "
         "Speedups are ratios of these medians (rows run one after the other, not interleaved). "
         f"Rows whose estimated peak exceeds {cfg['mem_gib']:g} GiB are skipped. The tutorial rows are the "
         "fastest of their chunk sweeps (all settings in the JSON): `tutorial` contracts every chunk pair as the "
         "tutorial's `ntk(x1, x2)` does (each chunk's Jacobian computed once), `tutorial+sym` only the pairs "
         "b <= a (our symmetric blocking applied to it; stricter).", ""]
    if cfg["fast"]:
        L += ["**--fast smoke run**: fewer points, fewer repeats, no wide MLP; not the reported numbers.", ""]
    L += ["## Targets (issue 8)", "", "| target | model | kind | dtype | measured | met |", "|---|---|---|---|---|---|"]
    for t in res["targets"]:
        meas = ("≥ " if t.get("at_least") else "") + f"{_f(t['speedup'], '.1f')}x" + (
            f", memory {_f(t.get('memory_ratio'), '.2f')} of naive"
                                                 if "memory_ratio" in t else "")
        if t.get("via"):
            meas += f" ({t['via']})"
        if t.get("vs_sym") is not None:
            meas += f" (vs tutorial+sym: {t['vs_sym']:.2f}x)"
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        if t.get("note") and t["met"] is None:
            met += f" ({t['note']})"
        L.append(f"| {t['target']} | {MODELS[t['model']]} | {t['kind']} | {t['dtype']} | {meas} | {met} |")
    L += ["", "## All rows", "",
          "| model | kind | dtype | method | time s | peak MiB | speedup vs naive | vs tutorial | vs tutorial+sym "
          "| max rel diff |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for t in res["table"]:
        head = f"| {MODELS[t['model']]} | {t['kind']} | {t['dtype']} | {t['method']} |"
        if "seconds" not in t:
            why = (f"> {t['timed_out']:.0f} (timed out)" if "timed_out" in t else f"skipped: {t['skipped']}"
                   if "skipped" in t else f"failed: {t.get('error', '?')[:80]}")
            L.append(f"{head} {why} | | | | | |")
            continue
        single = "*" if t.get("timing", "").startswith("single") else ""

        def sp(key: str, spec: str) -> str:
            return ("≥ " if t.get(f"speedup_vs_{key}_at_least") else "") + _f(t.get(f"speedup_vs_{key}"), spec)

        L.append(f"{head} {t['seconds']:.3g}{single} | {t['peak_mib']:.0f} | {sp('naive', '.1f')} | "
                 f"{sp('tutorial', '.2f')} | {sp('tutorial_sym', '.2f')} | {_f(t.get('max_rel_diff'), '.1e')} |")
    L += ["", "\\* single run (the warm-up took over 60 s). ≥: the anchor was stopped at the row timeout "
          f"({cfg.get('row_timeout', '?')} s), so the speedup is a lower bound.", "",
          "## Tutorial chunk sweeps", "", "| model | kind | dtype | anchor | chunk | J | time s | peak MiB |",
          "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r["method"] not in TUTORIALS:
            continue
        cell = (f"{r['seconds']:.3g} | {r['peak_mib']:.0f}" if "seconds" in r else
                f"> {r['timed_out']:.0f} (timed out) |" if "timed_out" in r else
                f"skipped: {r['skipped']} |" if "skipped" in r else f"failed: {r.get('error', '?')[:60]} |")
        J = "one chunk" if r["chunk"] >= r["n"] else "cached" if r["cache"] else "recomputed"
        L.append(f"| {MODELS[r['model']]} | {r['kind']} | {r['dtype']} | {r['method']} | {r['chunk']} | {J} | "
                 f"{cell} |")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="smoke run: 100 points (QNN 50), 1 repeat, no wide MLP")
    ap.add_argument("--n", type=int, default=None, help="points (default 500; --fast 100)")
    ap.add_argument("--n-qnn", type=int, default=None, help="QNN points (default 200; --fast 50)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up (default 3; --fast 1)")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=None)
    ap.add_argument("--mem-gib", type=float, default=8.0, help="skip rows whose estimated peak exceeds this")
    ap.add_argument("--tag", default="", help="suffix of the output files (ntk_<tag>.{json,md}), e.g. for a run of "
                    "some --models only")
    ap.add_argument("--row-timeout", type=float, default=150.0, help="seconds after which a row (warm-up and "
                    "repeats) is killed and reported as taking longer (default 150)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()

    fast = args.fast
    n = args.n or (100 if fast else 500)
    n_qnn = args.n_qnn or (50 if fast else 200)
    repeats = args.repeats or (1 if fast else 3)
    models = args.models or (["mlp", "cnn", "qnn"] if fast else ["mlp", "wide", "cnn", "qnn"])
    budget = args.mem_gib * GIB
    argv = sys.argv[1:]
    info = machine_info(argv)
    print(f"bench_ntk{' --fast' if fast else ''}: N={n}, QNN N={n_qnn}, repeats={repeats}, models={models}, "
          f"torch {torch.__version__}, load {info['load_avg_start'][0]:.2f}", flush=True)
    rows = plan(models, n, n_qnn, budget)
    ql.load_digits()  # sklearn's imports, once, before the workers fork
    ref_dir = Path(tempfile.mkdtemp(prefix="bench_ntk_ref_"))
    t_start = time.perf_counter()
    try:
        for i, r in enumerate(rows):
            if "skipped" not in r:
                r.update(spawn_row(r, repeats, ref_dir, args.row_timeout))
            status = (f"{r['seconds']:.3g} s, {r['peak_mib']:.0f} MiB, diff {_f(r.get('max_rel_diff'), '.1e')}"
                      if "seconds" in r else f"timed out after {r['timed_out']:.0f} s" if "timed_out" in r
                      else r.get("skipped") or r.get("error"))
            print(f"[{i + 1}/{len(rows)} {time.perf_counter() - t_start:.0f}s] {r['model']} {r['kind']} "
                  f"{r['dtype']} {label(r)}: {status}", flush=True)
    finally:
        shutil.rmtree(ref_dir, ignore_errors=True)
    table = summarise(rows)
    res = dict(machine=info, config=dict(fast=fast, n=n, n_qnn=n_qnn, repeats=repeats, models=models,
                                         mem_gib=args.mem_gib, row_timeout=args.row_timeout,
                                         model_names={k: MODELS[k] for k in models},
                                         n_params={k: n_params(k) for k in models}),
               wall_s=time.perf_counter() - t_start, load_avg_end=list(os.getloadavg()),
               targets=targets(table), table=table, rows=rows)
    stem = ("ntk_fast" if fast else "ntk") + (f"_{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (args.out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
