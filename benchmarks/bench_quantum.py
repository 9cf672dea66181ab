"""Quantum benchmark: qlandscape's engine on PatchQNN vs what a PennyLane user would write, side by side,
in one run, one thread, float64.

    .venv/bin/python benchmarks/bench_quantum.py          # ~10 min; writes benchmarks/results/quantum.{json,md}
    .venv/bin/python benchmarks/bench_quantum.py --fast   # < 2 min smoke run (writes to /tmp unless --out)

Workload: ``ql.PatchQNN("digits")`` (4 patches of 4x4 pixels of the 8x8 sklearn digits, 4 qubits per patch,
data re-uploading, RX-RY-CZ ring ansatz, L=2; 384 parameters: 4 x 80 circuit angles + 64 positional biases),
mean cross-entropy over the first 64 training samples of ``ql.load_digits(seed=0)``; plus the 8-qubit
``kawase2025`` circuit at L=1 (4 patches, 8 samples) for forward+backward.

Sections
1. forward+backward of one batch: (a) one ``qml.qnn.TorchLayer`` per patch on lightning.qubit (the anchor: what a
   new user would write, same circuit ``CircuitSpec.qfunc``, same weights), (b) the same on default.qubit backprop,
   (c) PatchQNN on torch.statevector (``device="auto"`` below the crossover: the circuit's quantum function
   compiled into batched torch ops, all patches and samples at once), (c') PatchQNN on default.qubit (all
   patches and samples in one broadcast QNode call), (d) PatchQNN on lightning.qubit (adjoint). Timed in
   interleaved rounds (medians).
2. top Hessian eigenvalue / full Hessian: (a) engine Lanczos (double-backward HVPs) on the auto device
   (torch.statevector), (a') the same on default.qubit, (b) engine dense Hessian,
   (c) ``qml.gradients.param_shift_hessian`` + ``param_shift`` Jacobians + chain rule + ``eigvalsh`` (exact, but
   one 96x96 circuit Hessian per sample and patch: measured on 1 sample x all 4 patches and extrapolated
   linearly in samples), (d) ``torch.autograd.functional.hessian`` through default.qubit, (e) the engine on the
   lightning.qubit model (central differences of adjoint gradients).
3. 25x25 scan along two filter-normalized random directions: engine ``scan_2d`` vs orqviz ``perform_2D_scan``
   vs a plain loop of 625 no-grad forwards (the bound), all three on the same model (auto device).
4. cost growth of forward+backward with qubits, layers and patches (torch.statevector and default.qubit
   batched vs lightning adjoint).

Timing: the VM's speed drifts by tens of percent over minutes, so side-by-side numbers come from interleaved
rounds (``bench_hessian.interleaved``); very slow runs are single runs, marked as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("QLANDSCAPE_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)

import pennylane as qml  # noqa: E402

import qlandscape as ql  # noqa: E402
from qlandscape.patches import as_images  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_hessian import interleaved, timed  # noqa: E402


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def med(times: list[float]) -> float | None:
    return statistics.median(times) if times else None


# ============================================================================ models
class TorchLayerPatchModel(nn.Module):
    """What a new user would write: one ``qml.qnn.TorchLayer`` per patch around the same circuit
    (``ref.spec.qfunc``), same weights, positional bias and aggregation as ``ref`` (a PatchQNN)."""

    def __init__(self, ref: ql.PatchQNN, device: str, diff_method: str) -> None:
        super().__init__()
        spec = ref.spec
        self.grid, self.scale, self.coef = ref.grid, ref.input_scale, ref.coefficient
        self.layers = nn.ModuleList()
        for c in ref.circuits:
            qnode = qml.QNode(spec.qfunc, qml.device(device, wires=spec.n_qubits), interface="torch",
                              diff_method=diff_method)
            layer = qml.qnn.TorchLayer(qnode, {"weights": (spec.n_weights,)})
            with torch.no_grad():
                layer.qnode_weights["weights"].data = c.weights.detach().clone()
            self.layers.append(layer)
        self.pos_bias = nn.Parameter(ref.pos_bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = as_images(x, self.grid.image_shape).to(self.pos_bias.dtype) * self.scale + self.pos_bias
        patches = self.grid.extract(images)
        scores = torch.stack([layer(patches[:, p]).to(self.pos_bias.dtype) for p, layer in enumerate(self.layers)], 1)
        return self.coef * scores.mean(1)


def fwd_bwd(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    def run() -> float:
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return float(loss.detach())
    return run


def digits_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = ql.load_digits(seed=0)
    x, y = ds.train
    return x[:n].double(), y[:n]


def kawase_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits upsampled to the paper's 14x14 and mapped to [0, pi/4] (the paper's pixel range)."""
    x, y = digits_data(n)
    img = F.interpolate(x.reshape(n, 1, 8, 8), size=(14, 14), mode="bilinear", align_corners=True)[:, 0]
    img = (img - img.min()) / (img.max() - img.min()) * (math.pi / 4)
    return img, y


# ============================================================================ 1. forward + backward
def section_forward_backward(cfg: dict) -> dict:
    out: dict[str, Any] = {}
    for name, kw, n in [("digits", dict(preset="digits"), cfg["n"]),
                        ("kawase2025_L1", dict(preset="kawase2025", layers=1), cfg["n_kawase"])]:
        x, y = digits_data(n) if name == "digits" else kawase_data(n)
        ref = ql.PatchQNN(kw.pop("preset"), device="default.qubit", **kw).double()
        lit = ql.PatchQNN(ref._config["preset"], device="lightning.qubit", **kw).double()
        lit.load_state_dict(ref.state_dict())
        fast = ql.PatchQNN(ref._config["preset"], device="auto", **kw).double()
        fast.load_state_dict(ref.state_dict())

        # knob sweep of the anchor: TorchLayer on lightning, adjoint vs parameter-shift (on a small batch)
        ns = min(cfg["n_sweep"], n)
        sweep = []
        for dm in ("adjoint", "parameter-shift"):
            try:
                m = TorchLayerPatchModel(ref, "lightning.qubit", dm).double()
                val, t = timed(fwd_bwd(m, x[:ns], y[:ns]), 1)
                sweep.append(dict(diff_method=dm, samples=ns, seconds=t, loss=val))
            except Exception as exc:  # noqa: BLE001
                sweep.append(dict(diff_method=dm, samples=ns, error=_err(exc)))
        best_dm = min((s for s in sweep if "seconds" in s), key=lambda s: s["seconds"])["diff_method"]

        models = {
            "(a) TorchLayer per patch, lightning.qubit": TorchLayerPatchModel(ref, "lightning.qubit", best_dm).double(),
            "(b) TorchLayer per patch, default.qubit backprop": TorchLayerPatchModel(ref, "default.qubit",
                                                                                   "backprop").double(),
            f"(c) PatchQNN, {fast.device_choice.name} (batched; device='auto')": fast,
            "(c') PatchQNN, default.qubit (one broadcast QNode call)": ref,
            "(d) PatchQNN, lightning.qubit (adjoint)": lit,
        }
        fns = {k: fwd_bwd(m, x, y) for k, m in models.items()}
        for f in fns.values():  # warm-up (first-call overheads)
            try:
                f()
            except Exception:  # noqa: BLE001 - recorded by interleaved below
                pass
        runs = interleaved(fns, cfg["rounds"])
        a_key = next(iter(models))
        rows = []
        for k, r in runs.items():
            row: dict[str, Any] = dict(method=k, n_params=sum(p.numel() for p in models[k].parameters()))
            if r["error"]:
                row["error"] = r["error"]
            else:
                row.update(seconds=med(r["times"]), loss=r["values"][-1], times=r["times"])
                a = runs[a_key]["times"]
                if a:
                    row["speedup_vs_a"] = statistics.median(ta / tb for ta, tb in zip(a, r["times"]))
            rows.append(row)
        losses = [r["loss"] for r in rows if "loss" in r]
        out[name] = dict(samples=n, model=ref.extra_repr(), anchor_diff_method=best_dm, anchor_sweep=sweep,
                         rows=rows, timing=f"median of {cfg['rounds']} interleaved rounds (after one warm-up); "
                                           "speedup = median of per-round ratios",
                         max_loss_disagreement=max(losses) - min(losses) if losses else None)
        print(f"[fb] {name}:", [(r["method"][:3], r.get("seconds"), r.get("speedup_vs_a"), r.get("error"))
                                for r in rows], flush=True)
    return out


# ============================================================================ 2. Hessian
def _flat_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Callable, torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(t: torch.Tensor) -> torch.Tensor:
        d, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            d[n] = t[i:i + k].reshape(s)
            i += k
        return F.cross_entropy(torch.func.functional_call(model, d, (x,)), y)

    return loss, theta


def autograd_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, vectorize: bool) -> torch.Tensor:
    loss, theta = _flat_loss(model, x, y)
    return torch.autograd.functional.hessian(loss, theta, vectorize=vectorize)


class ParamShiftHessian:
    """The exact Hessian of the mean cross-entropy through parameter-shift rules:
    per sample i and patch p, the circuit's local parameters q = (input angles a_ip (F), weights w_p (W));
    ``param_shift`` Jacobian and ``param_shift_hessian`` of the expvals f_ip on ``device``; then the chain rule
    ``H = 1/N sum_i [J_i^T (diag(s) - s s^T) J_i + sum_k (s_k - onehot_k) Hz_ik]`` with
    ``z_i = c/P sum_p f_ip`` and a_ip = x_ip * scale + pos_bias[patch p] (so d a / d pos_bias = 1)."""

    def __init__(self, model: ql.PatchQNN, device: str) -> None:
        self.m, self.spec = model, model.spec
        self.dev = qml.device(device, wires=self.spec.n_qubits)
        names = [n for n, _ in model.named_parameters()]
        sizes = [p.numel() for _, p in model.named_parameters()]
        offs = dict(zip(names, np.cumsum([0] + sizes[:-1]).tolist()))
        self.n = sum(sizes)
        grid = model.grid
        pix = grid.extract(torch.arange(grid.image_shape[0] * grid.image_shape[1], dtype=torch.float64)
                           .reshape(1, *grid.image_shape))[0].long()  # (P, F) pixel index of each feature
        W = self.spec.n_weights
        self.glob = [torch.cat([offs["pos_bias"] + pix[p], offs[f"circuits.{p}.weights"] + torch.arange(W)])
                     for p in range(grid.n_patches)]  # local q index -> global theta index
        F_ = self.spec.n_features
        # tape parameter order -> local q index (encode q by its index and read the tape back)
        probe = qml.tape.make_qscript(lambda q: self.spec.qfunc(q[:F_], q[F_:]))(torch.arange(F_ + W, dtype=torch.float64))
        order = [int(round(float(v))) for v in probe.get_parameters(trainable_only=False)]
        if sorted(order) != list(range(F_ + W)):
            raise RuntimeError("each local parameter must enter exactly one gate for this route")
        self.order = np.array(order)
        self.n_circuits = 0

    def _tape(self, q: np.ndarray) -> qml.tape.QuantumScript:
        F_ = self.spec.n_features
        tape = qml.tape.make_qscript(lambda t: self.spec.qfunc(t[:F_], t[F_:]))(torch.as_tensor(q))
        tape = tape.bind_new_parameters([float(v) for v in q[self.order]], list(range(len(self.order))))
        tape.trainable_params = list(range(len(self.order)))
        return tape

    def circuit(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """expvals (K,), Jacobian (K, nq), Hessian (K, nq, nq) in LOCAL q order."""
        tape = self._tape(q)
        f = np.array(self.dev.execute([tape])[0], dtype=float).reshape(-1)
        jt, jfn = qml.gradients.param_shift(tape)
        J = np.array(jfn(self.dev.execute(jt)), dtype=float).reshape(len(f), -1)
        ht, hfn = qml.gradients.param_shift_hessian(tape)
        H = np.array(hfn(self.dev.execute(ht)), dtype=float).reshape(len(f), len(q), len(q))
        inv = np.argsort(self.order)  # tape position of local index j is inv[j]
        self.n_circuits += 1
        return f, J[:, inv], H[:, inv][:, :, inv]

    def probe(self, x: torch.Tensor, k: int) -> dict:
        """Device knob probe: time the param-shift Hessian of sample 0 / patch 0 w.r.t. its first ``k`` tape
        parameters only, and estimate the full circuit Hessian from the time per tape."""
        m = self.m
        with torch.no_grad():
            images = as_images(x[:1], m.grid.image_shape).double() * m.input_scale + m.pos_bias
            q = np.concatenate([m.grid.extract(images).numpy()[0, 0], m.circuits[0].weights.detach().numpy()])
        full = self._tape(q)
        n_full = len(qml.gradients.param_shift_hessian(full)[0])
        sub = self._tape(q)
        sub.trainable_params = list(range(k))
        t0 = time.perf_counter()
        ht, hfn = qml.gradients.param_shift_hessian(sub)
        hfn(self.dev.execute(ht))
        t = time.perf_counter() - t0
        return dict(probe_params=k, probe_tapes=len(ht), probe_seconds=t, full_tapes=n_full,
                    est_seconds_per_circuit=t / len(ht) * n_full)

    def hessian(self, x: torch.Tensor, y: torch.Tensor, n_circuits: int | None = None) -> np.ndarray:
        m = self.m
        with torch.no_grad():
            images = as_images(x, m.grid.image_shape).double() * m.input_scale + m.pos_bias
            patches = m.grid.extract(images).numpy()  # (N, P, F)
        N, P, _ = patches.shape
        Hs = np.zeros((self.n, self.n))
        c = m.coefficient / P
        done = 0
        for i in range(N):
            z = 0.0
            Ji = np.zeros((m.n_classes, self.n))
            local = []
            for p in range(P):
                if n_circuits is not None and done >= n_circuits:
                    return Hs
                q = np.concatenate([patches[i, p], m.circuits[p].weights.detach().numpy()])
                f, J, H = self.circuit(q)
                done += 1
                g = self.glob[p].numpy()
                z = z + c * f
                Ji[:, g] += c * J
                local.append((g, c * H))
            s = np.exp(z - z.max())
            s /= s.sum()
            Hs += Ji.T @ (np.diag(s) - np.outer(s, s)) @ Ji
            r = s.copy()
            r[int(y[i])] -= 1.0
            for g, Hc in local:
                Hs[np.ix_(g, g)] += np.tensordot(r, Hc, axes=1)
        return Hs / N


def section_hessian(cfg: dict) -> dict:
    n = cfg["n"]
    x, y = digits_data(n)
    model_dq = ql.PatchQNN("digits", device="default.qubit").double()
    model = ql.PatchQNN("digits", device="auto").double()  # the engine's fast exact route
    model.load_state_dict(model_dq.state_dict())
    ob = ql.Objective(model, "cross_entropy", (x, y))
    res: dict[str, Any] = dict(samples=n, n_params=ob.n_params, engine_second_order=ob.provider.name,
                               engine_device=model.device_choice.name,
                               engine_second_order_reason=ob.provider_reason)
    rows: dict[str, dict] = {}

    # dense Hessians, each timed once, adjacent in time (one interleaved round; each takes 20-70 s):
    # (b) the engine's default, (b') the engine with batched double backward, (d) the anchor at both settings
    # of its knob (vectorize False / True) at the full size; (d) reports the faster one
    def engine_dense(batched: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            o = (ql.Objective(model, "cross_entropy", (x, y), second_order=ql.ReverseOverReverse(batched=True))
                 if batched else ql.Objective(model, "cross_entropy", (x, y)))
            return ql.dense_hessian(o)
        return run

    dense_fns: dict[str, Callable[[], torch.Tensor]] = {"engine": engine_dense(False)}
    if cfg["engine_batched_dense"]:
        dense_fns["engine_batched"] = engine_dense(True)
    for vec in (False, True):
        dense_fns[f"autograd_vectorize={vec}"] = lambda v=vec: autograd_hessian(model_dq, x, y, v)
    druns = interleaved(dense_fns, 1)
    if druns["engine"]["error"]:
        raise RuntimeError(f"engine dense Hessian failed: {druns['engine']['error']}")
    Hd = druns["engine"]["values"][-1]
    ref = float(torch.linalg.eigvalsh(Hd)[-1])
    rows["(b) engine dense_hessian + eigvalsh"] = dict(seconds=druns["engine"]["times"][-1], lambda_max=ref,
                                                      timing="single run", hvps=ob.n_params)
    if "engine_batched" in druns:
        db = druns["engine_batched"]
        rows["(b') engine dense_hessian, second_order=ReverseOverReverse(batched=True) (not the default)"] = (
            dict(error=db["error"]) if db["error"] else
            dict(seconds=db["times"][-1], lambda_max=float(torch.linalg.eigvalsh(db["values"][-1])[-1]),
                 hvps=ob.n_params, timing="single run"))
    sweep = []
    for vec in (False, True):
        r = druns[f"autograd_vectorize={vec}"]
        sweep.append(dict(vectorize=vec, samples=n, error=r["error"]) if r["error"] else
                     dict(vectorize=vec, samples=n, seconds=r["times"][-1],
                          lambda_max=float(torch.linalg.eigvalsh(r["values"][-1])[-1]),
                          max_abs_entry_diff_vs_b=float((r["values"][-1] - Hd).abs().max())))
    res["autograd_sweep"] = sweep
    okd = [s_ for s_ in sweep if "seconds" in s_]
    if okd:
        bd = min(okd, key=lambda s_: s_["seconds"])
        rows[f"(d) torch.autograd.functional.hessian (vectorize={bd['vectorize']}) + eigvalsh"] = dict(
            seconds=bd["seconds"], lambda_max=bd["lambda_max"], max_abs_entry_diff_vs_b=bd["max_abs_entry_diff_vs_b"],
            timing="single run")
    else:
        rows["(d) torch.autograd.functional.hessian + eigvalsh"] = dict(error=sweep[0].get("error", "failed"))
    print(f"[hess] dense: {[(k, v['times']) for k, v in druns.items()]} lambda_max={ref:.12g}", flush=True)

    # (a) engine Lanczos: fresh objective per call (no graph cached between calls), median of repeats
    def engine_lanczos(m: nn.Module) -> Callable[[], Any]:
        def run() -> Any:
            o = ql.Objective(m, "cross_entropy", (x, y))
            return ql.hessian_eigs(o, k=1, method="lanczos", tol=1e-10, progress=False)
        return run

    runs = interleaved({"lanczos": engine_lanczos(model), "lanczos_dq": engine_lanczos(model_dq)}, cfg["rounds"])
    for key, label in (("lanczos", "(a) engine Lanczos k=1 tol=1e-10"),
                       ("lanczos_dq", "(a') engine Lanczos k=1 tol=1e-10 on default.qubit")):
        lz = runs[key]
        if lz["error"]:
            rows[label] = dict(error=lz["error"])
        else:
            r = lz["values"][-1]
            rows[label] = dict(seconds=med(lz["times"]), lambda_max=float(r.eigenvalues[0]), hvps=int(r.n_hvp),
                               residual=float(r.residuals[0]), timing=f"median of {cfg['rounds']} interleaved runs")
    print("[hess] lanczos/autograd:", {k: (v.get("seconds"), v.get("lambda_max")) for k, v in rows.items()}, flush=True)

    # (c) parameter-shift route: device knob (lightning vs default.qubit) on ONE circuit Hessian, then the
    # reduced problem (first `ps_samples` samples, all patches) on the faster device; extrapolate to n samples
    xr, yr = x[:cfg["ps_samples"]], y[:cfg["ps_samples"]]
    ps_sweep = []
    for dev in cfg["ps_devices"]:
        try:
            ps_sweep.append(dict(device=dev, **ParamShiftHessian(model_dq, dev).probe(xr[:1],
                                                                                       cfg["ps_probe_params"])))
        except Exception as exc:  # noqa: BLE001
            ps_sweep.append(dict(device=dev, error=_err(exc)))
        print("[hess] param-shift device probe", ps_sweep[-1], flush=True)
    res["param_shift_sweep"] = ps_sweep
    ok = [s for s in ps_sweep if "est_seconds_per_circuit" in s]
    key_c = "(c) param_shift_hessian + chain rule + eigvalsh"
    if ok:
        best = min(ok, key=lambda s: s["est_seconds_per_circuit"])
        ps = ParamShiftHessian(model_dq, best["device"])
        P = model.grid.n_patches
        per_circuit = best["est_seconds_per_circuit"]
        row: dict[str, Any] = dict(device=best["device"])
        if not cfg["ps_full_check"]:  # --fast: time one full circuit Hessian
            _, per_circuit = timed(lambda: ps.hessian(xr[:1], yr[:1], n_circuits=1), 1)
        if cfg["ps_full_check"]:
            t0 = time.perf_counter()
            Hps = ps.hessian(xr, yr)
            t_red = time.perf_counter() - t0
            per_circuit = t_red / (len(xr) * P)
            ob_r = ql.Objective(model, "cross_entropy", (xr, yr))
            Hr = ql.dense_hessian(ob_r)
            lam_ps = float(np.linalg.eigvalsh(Hps)[-1])
            lam_r = float(torch.linalg.eigvalsh(Hr)[-1])
            lz_r = ql.hessian_eigs(ob_r, k=1, method="lanczos", tol=1e-10, progress=False)
            row.update(reduced=dict(samples=len(xr), patches=P, circuits=len(xr) * P, seconds=t_red,
                                    lambda_max=lam_ps, engine_dense_lambda_max=lam_r,
                                    engine_lanczos_lambda_max=float(lz_r.eigenvalues[0]),
                                    rel_err_vs_engine_dense=abs(lam_ps - lam_r) / abs(lam_r),
                                    max_abs_entry_diff_vs_engine_dense=float(np.abs(Hps - Hr.numpy()).max())))
        row.update(seconds=per_circuit * n * P, seconds_per_circuit=per_circuit, extrapolated=True,
                   timing=(f"EXTRAPOLATED: measured {per_circuit:.2f} s per circuit Hessian (96 local params: 16 "
                           f"input angles + 80 weights) x {n} samples x {P} patches; the chain-rule assembly "
                           "is negligible (linear in samples, no parameter extrapolation needed: the measured "
                           "circuits carry all parameters)"))
        rows[key_c] = row
    else:
        rows[key_c] = dict(error="; ".join(s.get("error", "") for s in ps_sweep))
    print("[hess] param-shift:", rows[key_c], flush=True)

    # (e) engine on the lightning.qubit model (auto: central differences of adjoint gradients)
    lit = ql.PatchQNN("digits", device="lightning.qubit").double()
    lit.load_state_dict(model.state_dict())
    try:
        ob_l = ql.Objective(lit, "cross_entropy", (x, y))
        t0 = time.perf_counter()
        rl = ql.hessian_eigs(ob_l, k=1, method="lanczos", tol=1e-10, progress=False)
        rows["(e) engine Lanczos on lightning.qubit (auto)"] = dict(
            seconds=time.perf_counter() - t0, lambda_max=float(rl.eigenvalues[0]), hvps=int(rl.n_hvp),
            second_order=ob_l.provider.name, timing="single run")
        res["lightning_second_order_reason"] = ob_l.provider_reason
    except Exception as exc:  # noqa: BLE001
        rows["(e) engine Lanczos on lightning.qubit (auto)"] = dict(error=_err(exc),
                                                                  where=traceback.format_exc()[-400:])
    print("[hess] lightning:", rows["(e) engine Lanczos on lightning.qubit (auto)"], flush=True)

    for r in rows.values():
        if "lambda_max" in r:
            r["rel_error"] = abs(r["lambda_max"] - ref) / abs(ref)
    a = rows["(a) engine Lanczos k=1 tol=1e-10"]
    if "seconds" in a:
        for r in rows.values():
            if "seconds" in r:
                r["x_time_of_a"] = r["seconds"] / a["seconds"]
    e = rows["(e) engine Lanczos on lightning.qubit (auto)"]
    if "lambda_max" in e and "lambda_max" in a:
        e["rel_diff_vs_a"] = abs(e["lambda_max"] - a["lambda_max"]) / abs(a["lambda_max"])
    res.update(rows=rows, reference="(b) engine dense Hessian eigvalsh (exact double-backward Hessian); "
                                    "cross-checked by (d)", reference_lambda_max=ref)
    return res


# ============================================================================ 3. scan
def section_scan(cfg: dict) -> dict:
    x, y = digits_data(cfg["n"])
    model = ql.PatchQNN("digits", device="auto").double()  # one model for engine, orqviz and the bound
    ob = ql.Objective(model, "cross_entropy", (x, y))
    d1 = ql.random_direction(ob.space, ob.theta0, seed=1)
    d2 = ql.random_direction(ob.space, ob.theta0, seed=2)
    params = list(model.parameters())
    theta_model = nn.utils.parameters_to_vector(params).detach()
    if not torch.equal(theta_model, ob.theta0):
        raise RuntimeError("objective and model parameter orders differ")
    G = cfg["grid"]
    extra: dict[str, Any] = {}

    def bound() -> None:
        with torch.no_grad():
            for _ in range(G * G):
                float(F.cross_entropy(model(x), y))

    def engine() -> np.ndarray:
        s = ql.scan_2d(ob, d1, d2, span=(-1, 1), n_points=G, progress=False)
        extra["centre_equals_loss"] = bool(s.loss[G // 2, G // 2] == ob.loss())
        extra["engine_loss"] = s.loss
        return s.loss

    def orq() -> np.ndarray:
        from orqviz.scans import perform_2D_scan

        def loss_fn(v: np.ndarray) -> float:
            with torch.no_grad():
                nn.utils.vector_to_parameters(torch.from_numpy(v), params)
                return float(F.cross_entropy(model(x), y))
        try:
            r = perform_2D_scan(ob.theta0.numpy().copy(), loss_fn, d1.numpy(), d2.numpy(), n_steps_x=G,
                                end_points_x=(-1, 1))
        finally:
            with torch.no_grad():
                nn.utils.vector_to_parameters(theta_model, params)
        grid = np.asarray(r.values).T  # orqviz: values[iy, ix]; engine: loss[i(alpha), j(beta)]
        extra["orqviz_loss"] = grid
        return grid

    try:
        import orqviz  # noqa: F401
        have_orq = True
    except ImportError as exc:
        have_orq = False
        extra["orqviz_error"] = _err(exc)
    # what a PennyLane user would scan without qlandscape's simulator: orqviz over the default.qubit model
    model_dq = ql.PatchQNN("digits", device="default.qubit").double()
    model_dq.load_state_dict(model.state_dict())
    params_dq = list(model_dq.parameters())

    def orq_dq() -> np.ndarray:
        from orqviz.scans import perform_2D_scan

        def loss_fn(v: np.ndarray) -> float:
            with torch.no_grad():
                nn.utils.vector_to_parameters(torch.from_numpy(v), params_dq)
                return float(F.cross_entropy(model_dq(x), y))
        r = perform_2D_scan(ob.theta0.numpy().copy(), loss_fn, d1.numpy(), d2.numpy(), n_steps_x=G,
                            end_points_x=(-1, 1))
        return np.asarray(r.values).T

    fns = {"bound": bound, "engine": engine}
    if have_orq:
        fns["orqviz"] = orq
        fns["orqviz_default.qubit"] = orq_dq
    runs = interleaved(fns, cfg["scan_rounds"])
    rows = {}
    for k, r in runs.items():
        if r["error"]:
            rows[k] = dict(error=r["error"])
            continue
        row = dict(seconds=med(r["times"]), times=r["times"])
        if k != "bound":
            row["ratio_to_bound"] = statistics.median(t / b for t, b in zip(r["times"], runs["bound"]["times"]))
        rows[k] = row
    if "orqviz" in rows and "seconds" in rows["orqviz"] and "seconds" in rows["engine"]:
        rows["engine"]["speedup_vs_orqviz"] = statistics.median(
            o / e for o, e in zip(runs["orqviz"]["times"], runs["engine"]["times"]))
    if "seconds" in rows.get("orqviz_default.qubit", {}) and "seconds" in rows["engine"]:
        rows["engine"]["speedup_vs_orqviz_default_qubit"] = statistics.median(
            o / e for o, e in zip(runs["orqviz_default.qubit"]["times"], runs["engine"]["times"]))
    res = dict(grid=f"{G}x{G}", samples=cfg["n"], rows=rows, centre_equals_loss=extra.get("centre_equals_loss"),
               engine_vectorized=bool(ob.adapter.capabilities.torch_func),
               timing=f"median of {cfg['scan_rounds']} interleaved rounds",
               bound=f"{G * G} full-batch no-grad forwards of PatchQNN on {model.device_choice.name} (no parameter "
                     "loading); orqviz's loss function runs the same model")
    if "orqviz_loss" in extra and "engine_loss" in extra:
        e, o = extra["engine_loss"], extra["orqviz_loss"]
        res["max_abs_diff_engine_vs_orqviz"] = float(np.max(np.abs(e - o)))
    if "orqviz_error" in extra:
        res["orqviz_error"] = extra["orqviz_error"]
    print("[scan]", {k: (v.get("seconds"), v.get("ratio_to_bound")) for k, v in rows.items()},
          res.get("centre_equals_loss"), res.get("max_abs_diff_engine_vs_orqviz"), flush=True)
    return res


# ============================================================================ 4. scaling
def time_fb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: float) -> dict:
    """One warm-up call; if it took longer than ``budget``/3 it is the measurement, else the median of
    up to 3 more calls."""
    fn = fwd_bwd(model, x, y)
    try:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001
        return dict(error=_err(exc))
    if first > budget / 3:
        return dict(seconds=first, repeats=1)
    _, t = timed(fn, 3)
    return dict(seconds=t, repeats=3)


def section_scaling(cfg: dict) -> dict:
    B = cfg["scale_batch"]
    gen = torch.Generator().manual_seed(0)
    rows = []

    def case(study: str, value: int, make: Callable[[str], ql.PatchQNN], x: torch.Tensor) -> None:
        y = torch.randint(0, 10, (x.shape[0],), generator=gen)
        row: dict[str, Any] = dict(study=study, value=value)
        for dev, key in (("torch.statevector", "torch"), ("default.qubit", "default_qubit"),
                         ("lightning.qubit", "lightning")):
            try:
                m = make(dev).double()
                row["n_params"] = m.n_params
                row["circuit"] = m.extra_repr()
                row[key] = time_fb(m, x, y, cfg["case_budget"])
            except Exception as exc:  # noqa: BLE001
                row[key] = dict(error=_err(exc))
        ts, dq, lq = (row[k].get("seconds") for k in ("torch", "default_qubit", "lightning"))
        row["lightning_over_default"] = lq / dq if dq and lq else None
        row["lightning_over_torch"] = lq / ts if ts and lq else None
        rows.append(row)
        print(f"[scale] {study}={value}: torch {ts} default {dq} lightning {lq}", flush=True)

    for q in cfg["qubits"]:  # 1 patch covering a 4 x q image: 2 features per qubit per encoding
        case("qubits", q, lambda d, q=q: ql.PatchQNN("digits", device=d, image_shape=(4, q), patch_size=(4, q),
                                                      n_patches=1, n_qubits=q, layers=2),
             torch.randn(B, 4 * q, generator=gen, dtype=torch.float64))
    for L in cfg["layers"]:  # the digits 4x4-patch circuit, one patch
        case("layers", L, lambda d, L=L: ql.PatchQNN("digits", device=d, image_shape=(4, 4), patch_size=(4, 4),
                                                      n_patches=1, layers=L),
             torch.randn(B, 16, generator=gen, dtype=torch.float64))
    xd, _ = digits_data(B)
    for P in cfg["patches"]:  # the digits model on 8x8 images; 1 patch = one 8x8 patch (64 features)
        case("patches", P, lambda d, P=P: ql.PatchQNN("digits", device=d, n_patches=P, layers=2), xd)
    return dict(batch=B, rows=rows, timing=f"one warm-up, then median of 3 calls (a single call when the "
                                           f"warm-up exceeded {cfg['case_budget'] / 3:.1f} s)",
                notes=["qubits: one patch covering a 4 x q image (2 features per qubit per encoding, L=2)",
                       "layers: one 4x4 patch, 4 qubits", "patches: digits 8x8 images; 1 patch = the whole 8x8 "
                       "image as one 64-feature patch on 4 qubits (8 features per qubit per encoding), "
                       "4/9/25 = 4x4 patches at stride 4/2/1 (16 = not achievable: no stride tiles 8-4 into 3 steps)"])


def plot_scaling(sc: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, study, label in zip(axes, ("qubits", "layers", "patches"),
                                ("qubits (1 patch, L=2)", "layers per block (4 qubits, 1 patch)",
                                 "patches (digits, 4 qubits, L=2)")):
        rs = [r for r in sc["rows"] if r["study"] == study]
        for key, name, mk in (("torch", "PatchQNN torch.statevector (batched)", "^-"),
                              ("default_qubit", "PatchQNN default.qubit (batched)", "o-"),
                              ("lightning", "PatchQNN lightning.qubit (adjoint)", "s-")):
            pts = [(r["value"], r[key]["seconds"]) for r in rs if "seconds" in r.get(key, {})]
            if pts:
                ax.plot(*zip(*pts), mk, label=name)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("forward+backward s")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"PatchQNN forward+backward, batch {sc['batch']}, 1 CPU thread, float64")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ============================================================================ report
def _f(v: Any, spec: str = ".3g") -> str:
    return "—" if v is None else format(v, spec)


def markdown(res: dict) -> str:
    mc, cfg = res["machine"], res["config"]
    L = [f"# Quantum benchmark{' (--fast)' if cfg['fast'] else ''}", "",
         f"Command: `.venv/bin/python benchmarks/bench_quantum.py{' --fast' if cfg['fast'] else ''}` "
         f"(total {res['total_seconds']:.0f} s). torch {mc['torch']}, PennyLane {mc['pennylane']}, "
         f"lightning {mc['lightning']}, orqviz {mc['orqviz']}, {mc['threads']} thread, {mc['cpu']} "
         f"({mc['cores']} cores, shared VM), float64.", "",
         f"Workload: `ql.PatchQNN(\"digits\")`: 4 patches x 4 qubits, L=2, {res['hessian']['n_params']} parameters, "
         f"mean cross-entropy over {cfg['n']} digits samples (`ql.load_digits(seed=0)`). Timings of methods "
         "compared side by side come from interleaved rounds (medians); 'single run' marks slow ones.", ""]
    for name, sec in res["forward_backward"].items():
        if not isinstance(sec, dict):
            continue
        L += [f"## 1. Forward + backward, {name} ({sec['samples']} samples; {sec['model']})", "",
              f"Anchor knob (TorchLayer on lightning.qubit, {sec['anchor_sweep'][0].get('samples')} samples): " +
              ", ".join(f"{s['diff_method']} {_f(s.get('seconds'))} s" if "seconds" in s else
                        f"{s['diff_method']} failed ({s['error'][:60]})" for s in sec["anchor_sweep"]) +
              f" -> (a) uses **{sec['anchor_diff_method']}**. {sec['timing']}.", "",
              "| method | seconds | speedup vs (a) | loss |", "|---|---:|---:|---:|"]
        for r in sec["rows"]:
            if "error" in r:
                L.append(f"| {r['method']} | failed: {r['error'][:80]} | | |")
            else:
                L.append(f"| {r['method']} | {r['seconds']:.4f} | {_f(r.get('speedup_vs_a'), '.1f')}x | "
                         f"{r['loss']:.10f} |")
        L.append("")
    h = res["hessian"]
    L += [f"## 2. Top Hessian eigenvalue / full Hessian ({h['samples']} samples, {h['n_params']} parameters)", "",
          f"Reference lambda_max = {h['reference_lambda_max']:.12g} ({h['reference']}). Engine default "
          f"second-order route: {h['engine_second_order']}.", "",
          "| method | seconds | x time of (a) | measured / extrapolated | lambda_max | rel. error | HVPs |",
          "|---|---:|---:|---|---:|---:|---:|"]
    for k, r in h["rows"].items():
        if "error" in r:
            L.append(f"| {k} | failed: {r['error'][:80]} | | | | | |")
            continue
        L.append(f"| {k} | {r['seconds']:.3f} | {_f(r.get('x_time_of_a'), '.1f')} | "
                 f"{'extrapolated' if r.get('extrapolated') else r.get('timing', 'measured')} | "
                 f"{_f(r.get('lambda_max'), '.10g')} | {_f(r.get('rel_error'), '.1e')} | {r.get('hvps', '—')} |")
    c = h["rows"].get("(c) param_shift_hessian + chain rule + eigvalsh", {})
    if "seconds" in c:
        L += ["", f"(c) {c['timing']}. Device knob (param_shift_hessian w.r.t. the first "
              f"{h['param_shift_sweep'][0].get('probe_params')} circuit parameters, scaled by tape count to a full "
              "circuit Hessian): " +
              ", ".join(f"{s['device']} ~{_f(s.get('est_seconds_per_circuit'))} s per circuit" if
                        "est_seconds_per_circuit" in s else f"{s['device']} failed"
                        for s in h["param_shift_sweep"]) + f" -> {c['device']}."]
        if "reduced" in c:
            red = c["reduced"]
            L += [f"Accuracy of (c), measured on the reduced problem ({red['samples']} sample x {red['patches']} "
                  f"patches = {red['circuits']} circuit Hessians, {red['seconds']:.1f} s, all {h['n_params']} "
                  f"parameters): lambda_max {red['lambda_max']:.12g} vs engine dense "
                  f"{red['engine_dense_lambda_max']:.12g} (rel. {red['rel_err_vs_engine_dense']:.1e}; max |H entry "
                  f"diff| {red['max_abs_entry_diff_vs_engine_dense']:.1e}), engine Lanczos "
                  f"{red['engine_lanczos_lambda_max']:.12g}. The lambda_max column for (c) is this reduced problem's, "
                  "so its 'rel. error' there is not against the 64-sample reference; see this line."]
    L += ["", "(b), (b'), (d): each one single run, adjacent in time. (d) knob: " + ", ".join(f"vectorize={s['vectorize']} {_f(s.get('seconds'))} s" if "seconds" in s
                                       else f"vectorize={s['vectorize']} failed" for s in h["autograd_sweep"]) +
          f" (on {h['autograd_sweep'][0]['samples']} samples)."]
    if "lightning_second_order_reason" in h:
        L += ["", f"(e) route: {h['lightning_second_order_reason'].split('): ')[-1]}"]
    s = res["scan"]
    L += ["", f"## 3. {s['grid']} scan ({s['samples']} samples, filter-normalized random directions, span (-1, 1))", "",
          f"{s['timing']}; bound = {s['bound']}. Engine scan centre == `obj.loss()`: **{s['centre_equals_loss']}**; "
          f"max |engine - orqviz| over the grid: {_f(s.get('max_abs_diff_engine_vs_orqviz'), '.1e')}.", "",
          "| method | seconds | x bound | engine speedup |", "|---|---:|---:|---:|"]
    for k, r in s["rows"].items():
        if "error" in r:
            L.append(f"| {k} | failed: {r['error'][:80]} | | |")
        else:
            sp = []
            if "speedup_vs_orqviz" in r:
                sp.append(f"{r['speedup_vs_orqviz']:.1f}x vs orqviz (same model)")
            if "speedup_vs_orqviz_default_qubit" in r:
                sp.append(f"{r['speedup_vs_orqviz_default_qubit']:.1f}x vs orqviz on the default.qubit model")
            L.append(f"| {k} | {r['seconds']:.2f} | {_f(r.get('ratio_to_bound'), '.2f')} | {'; '.join(sp)} |")
    if "orqviz_error" in s:
        L.append(f"\norqviz not run: {s['orqviz_error']}")
    sc = res["scaling"]
    L += ["", f"## 4. Cost growth, forward+backward, batch {sc['batch']} ({sc['timing']})", "",
          "![scaling](quantum_scaling.png)", "", "| study | value | params | torch.statevector s | "
          "default.qubit batched s | lightning.qubit adjoint s | lightning / torch | lightning / default |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(r: dict, k: str) -> str:
        return _f(r[k].get("seconds"), ".4f") if "seconds" in r.get(k, {}) else "failed"

    for r in sc["rows"]:
        L.append(f"| {r['study']} | {r['value']} | {r.get('n_params', '—')} | {cell(r, 'torch')} | "
                 f"{cell(r, 'default_qubit')} | {cell(r, 'lightning')} | {_f(r.get('lightning_over_torch'), '.1f')} | "
                 f"{_f(r['lightning_over_default'], '.1f')} |")
    L += [""] + [f"- {n}" for n in sc["notes"]]
    L += ["", "## What this shows, honestly", ""] + [f"- {t}" for t in res["summary"]]
    return "\n".join(L) + "\n"


def summarize(res: dict) -> list[str]:
    out = []
    fb = res["forward_backward"]["digits"]["rows"]
    c = next((r for r in fb if r["method"].startswith("(c)")), {})
    c2 = next((r for r in fb if r["method"].startswith("(c')")), {})
    b = next((r for r in fb if r["method"].startswith("(b)")), {})
    d = next((r for r in fb if r["method"].startswith("(d)")), {})
    if "speedup_vs_a" in c:
        out.append(f"Forward+backward: {c['method'][4:]} is {c['speedup_vs_a']:.0f}x faster than one "
                   f"TorchLayer per patch on lightning.qubit (target >= 30x: "
                   f"{'met' if c['speedup_vs_a'] >= 30 else 'NOT met'}); PatchQNN's single broadcast QNode call on "
                   f"default.qubit is {c2.get('speedup_vs_a', float('nan')):.0f}x, TorchLayer per patch on "
                   f"default.qubit {b.get('speedup_vs_a', float('nan')):.1f}x. "
                   f"PatchQNN on lightning is {d.get('speedup_vs_a', float('nan')):.2f}x (a): same per-sample tapes.")
    h = res["hessian"]["rows"]
    a = h.get("(a) engine Lanczos k=1 tol=1e-10", {})
    cc = h.get("(c) param_shift_hessian + chain rule + eigvalsh", {})
    if "seconds" in a and "seconds" in cc:
        sp = cc["seconds"] / a["seconds"]
        out.append(f"Top eigenvalue: engine Lanczos {a['seconds']:.2f} s ({a['hvps']} HVPs, rel. error "
                   f"{a['rel_error']:.0e}) vs the parameter-shift route {cc['seconds']:.0f} s EXTRAPOLATED "
                   f"from {cc['seconds_per_circuit']:.1f} s per circuit Hessian: {sp:.0f}x (target >= 300x: "
                   f"{'met' if sp >= 300 else 'NOT met'}). The route's exactness was checked on the reduced problem"
                   + (f" (rel. {cc['reduced']['rel_err_vs_engine_dense']:.0e})." if "reduced" in cc else
                      " (not run in --fast)."))
    dd = next((v for k, v in h.items() if k.startswith("(d)")), {})
    bp = next((v for k, v in h.items() if k.startswith("(b')")), {})
    bb = h.get("(b) engine dense_hessian + eigvalsh", {})
    if "seconds" in dd and "seconds" in bb:
        dk = next(k for k in h if k.startswith("(d)"))
        r_ = dd["seconds"] / bb["seconds"]
        out.append(f"Full Hessian: {dk[4:].replace(' + eigvalsh', '')} takes {dd['seconds']:.1f} s vs the engine's "
                   f"dense_hessian {bb['seconds']:.1f} s ({r_:.2f}x the engine's time: "
                   f"{'no real difference' if 0.85 < r_ < 1.15 else 'engine faster' if r_ > 1 else 'anchor faster'}); "
                   "both are n=" + str(res["hessian"]["n_params"]) + " double-backward passes, exact to ~1e-16"
                   + (f"; batched double backward (not the CPU default) takes {bp['seconds']:.1f} s."
                      if "seconds" in bp else "."))
    e = h.get("(e) engine Lanczos on lightning.qubit (auto)", {})
    if "seconds" in e:
        out.append(f"Engine on lightning.qubit: {e['seconds']:.0f} s ({e['hvps']} HVPs by central differences of "
                   f"adjoint gradients), lambda_max rel. diff vs (a) {e.get('rel_diff_vs_a', float('nan')):.0e}; "
                   f"{e['seconds'] / a['seconds']:.0f}x the time of (a) at this size.")
    s = res["scan"]["rows"]
    if "speedup_vs_orqviz" in s.get("engine", {}):
        sp = s["engine"]["speedup_vs_orqviz"]
        sq = s["engine"].get("speedup_vs_orqviz_default_qubit", float("nan"))
        out.append(f"Scan: engine {s['engine']['seconds']:.1f} s vs orqviz {s['orqviz']['seconds']:.1f} s driving the "
                   f"same (torch.statevector) model = {sp:.1f}x (target >= 5x: {'met' if sp >= 5 else 'NOT met'}); "
                   f"vs orqviz driving the default.qubit QNode model: {sq:.1f}x. Bound (625 plain forwards of the "
                   f"same model) {s['bound']['seconds']:.1f} s, engine {s['engine'].get('ratio_to_bound', float('nan')):.2f}x "
                   f"bound: once the forward itself is fast, a scan is forward-bound and orqviz's loop is close to it. "
                   f"Centre == loss: {res['scan']['centre_equals_loss']}.")
    sc = res["scaling"]["rows"]
    cross = [r for r in sc if r["study"] == "qubits" and (r["lightning_over_default"] or 99) <= 1]
    cross_t = [r for r in sc if r["study"] == "qubits" and (r.get("lightning_over_torch") or 99) <= 1]
    out.append("Scaling: lightning adjoint overtakes the batched default.qubit path at "
               + (f"{cross[0]['value']} qubits" if cross else "none of the measured qubit counts")
               + " and the torch.statevector path at "
               + (f"{cross_t[0]['value']} qubits" if cross_t else "none of the measured qubit counts")
               + " (1 patch, batch " + str(res["scaling"]["batch"]) + ").")
    return out


# ============================================================================ main
FULL = dict(fast=False, n=64, n_kawase=8, n_sweep=8, rounds=3, scan_rounds=2, grid=25, ps_samples=1, ps_probe_params=12,
            ps_devices=("lightning.qubit", "default.qubit"), ps_full_check=True, engine_batched_dense=True,
            scale_batch=64, qubits=(4, 6, 8, 10, 12), layers=(1, 2, 4, 8), patches=(1, 4, 9, 25), case_budget=6.0)
FAST = dict(FULL, fast=True, n=8, n_kawase=4, n_sweep=4, rounds=1, scan_rounds=1, grid=9,
            ps_devices=("lightning.qubit", "default.qubit"), ps_full_check=False, engine_batched_dense=False,
            scale_batch=16, qubits=(4, 8), layers=(1, 4), patches=(1, 4), case_budget=3.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="smoke run (< 2 min): fewer samples, 9x9 scan")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: benchmarks/results; --fast: a temporary folder, so a smoke run "
                         "never overwrites the real results)")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite quantum.md and the plot from an existing quantum.json in --out")
    args = ap.parse_args()
    cfg = FAST if args.fast else FULL
    if args.out is None:
        args.out = Path("/tmp/qlandscape_bench_quantum_fast") if args.fast else HERE / "results"
    if args.render:
        res = json.loads((args.out / "quantum.json").read_text())
        res["summary"] = summarize(res)
        (args.out / "quantum.json").write_text(json.dumps(res, indent=2))
        plot_scaling(res["scaling"], args.out / "quantum_scaling.png")
        (args.out / "quantum.md").write_text(markdown(res))
        print(markdown(res))
        return
    t_start = time.perf_counter()
    try:
        from importlib.metadata import version
        lightning_v = version("pennylane_lightning")
    except Exception:  # noqa: BLE001
        lightning_v = "?"
    try:
        import orqviz  # noqa: F401
        orq_v = "0.6.0 sdist (its metadata says 0.2.0)"
    except ImportError:
        orq_v = "not installed"
    res: dict[str, Any] = dict(
        config={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        machine=dict(python=platform.python_version(), torch=torch.__version__, pennylane=qml.__version__,
                     lightning=lightning_v, orqviz=orq_v, threads=torch.get_num_threads(),
                     omp_num_threads=os.environ.get("OMP_NUM_THREADS"), cpu=platform.processor() or platform.machine(),
                     cores=os.cpu_count(), platform=platform.platform()))
    print(f"bench_quantum {'--fast' if args.fast else ''}: torch {torch.__version__}, PennyLane {qml.__version__}, "
          f"{torch.get_num_threads()} thread", flush=True)
    for key, fn in (("forward_backward", section_forward_backward), ("hessian", section_hessian),
                    ("scan", section_scan), ("scaling", section_scaling)):
        t0 = time.perf_counter()
        res[key] = fn(cfg)
        res[key]["section_seconds"] = time.perf_counter() - t0
        print(f"== {key} done in {res[key]['section_seconds']:.0f} s", flush=True)
    res["total_seconds"] = time.perf_counter() - t_start
    res["summary"] = summarize(res)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quantum"
    plot_scaling(res["scaling"], args.out / f"{stem}_scaling.png")
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2, default=lambda o: (
        o.tolist() if isinstance(o, np.ndarray) else float(o))))
    md = markdown(res)
    (args.out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
