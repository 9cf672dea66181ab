"""The compiled patch-circuit simulator (qlandscape.quantum.compiled) against independent references.

References and tolerances:

* a numpy statevector written here (gate matrices from their definitions, one gate at a time on the full
  ``2**n`` vector, the ops read off PennyLane's own tape of the quantum function): outputs to 1e-12
  (float64 rounding over < 100 gates);
* the gate-by-gate tape simulator (``qlandscape.quantum.statevector``, plain autograd: a different code
  path, tested against default.qubit in test_statevector.py): gradients to 1e-11 and Hessian-vector
  products by double backward to 1e-10 (float64; the adjoint passes un-compute states over ~100 gates);
* the independent folded-unitary reference (``qlandscape.quantum.reference``, written from CircuitSpec's
  definition) for every ansatz and encoding the presets use;
* PennyLane's ``qml.gradients.param_shift_hessian`` on default.qubit (exact second derivatives by shift
  rules) for the dense Hessian, to 1e-10.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pennylane as qml
import pytest
import torch

import qlandscape as ql
from qlandscape.quantum import costmodel
from qlandscape.quantum.circuits import CircuitSpec
from qlandscape.quantum.compiled import CompiledCircuit
from qlandscape.quantum.program import record, segments
from qlandscape.quantum.reference import FoldedReference
from qlandscape.quantum.statevector import TorchStatevector

# ------------------------------------------------------------------------------------------------ references


def _np_rot(axis: str, t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    if axis == "X":
        return np.array([[c, -1j * s], [-1j * s, c]])
    if axis == "Y":
        return np.array([[c, -s], [s, c]], dtype=complex)
    return np.array([[c - 1j * s, 0], [0, c + 1j * s]])


def _np_full(u: np.ndarray, wire: int, n: int) -> np.ndarray:
    mats = [np.eye(2, dtype=complex)] * n
    mats = [u if q == wire else m for q, m in enumerate(mats)]
    out = mats[0]
    for m in mats[1:]:
        out = np.kron(out, m)
    return out


def _np_controlled(kind: str, a: int, b: int, n: int) -> np.ndarray:
    D = 2 ** n
    out = np.zeros((D, D), dtype=complex)
    for k in range(D):
        bits = [(k >> (n - 1 - q)) & 1 for q in range(n)]
        if kind == "CZ":
            out[k, k] = -1 if bits[a] and bits[b] else 1
        else:
            bits[b] ^= bits[a]
            out[int("".join(map(str, bits)), 2), k] = 1
    return out


def numpy_statevector(qfunc, n: int, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Expectation values of ``qfunc(x, w)`` by a full-matrix statevector, gate by gate."""
    tape = qml.tape.make_qscript(qfunc)(x, w)
    psi = np.zeros(2 ** n, dtype=complex)
    psi[0] = 1
    for op in tape.operations:
        q = [int(v) for v in op.wires]
        p = [float(v) for v in op.parameters]
        if op.name in ("RX", "RY", "RZ"):
            psi = _np_full(_np_rot(op.name[1], p[0]), q[0], n) @ psi
        elif op.name == "Rot":  # Rot(a, b, c) = RZ(c) RY(b) RZ(a)
            psi = _np_full(_np_rot("Z", p[2]) @ _np_rot("Y", p[1]) @ _np_rot("Z", p[0]), q[0], n) @ psi
        else:
            psi = _np_controlled(op.name, q[0], q[1], n) @ psi
    paulis = {"PauliX": np.array([[0, 1], [1, 0]]), "PauliY": np.array([[0, -1j], [1j, 0]]),
              "PauliZ": np.array([[1, 0], [0, -1]])}
    return np.array([np.real(psi.conj() @ _np_full(paulis[m.obs.name], int(m.obs.wires[0]), n) @ psi)
                     for m in tape.measurements])


def random_circuit(n: int, n_features: int, n_weights: int, seed: int, n_ops: int = 40):
    """A quantum function mixing weights-only runs (several layers long) and data-reading gates, with
    RX/RY/RZ/Rot/CZ/CNOT and a random single-qubit Pauli readout."""
    rng = np.random.default_rng(seed)
    ops = []
    wi = 0
    block = 0
    while len(ops) < n_ops:
        phase = "data" if block % 3 == 1 else "weights"
        block += 1
        for _ in range(int(rng.integers(1, 8))):
            kind = rng.choice(["RX", "RY", "RZ", "Rot"] + (["CZ", "CNOT"] if n > 1 else []))
            if kind in ("CZ", "CNOT"):
                a, b = rng.choice(n, size=2, replace=False)
                ops.append((str(kind), (int(a), int(b)), ()))
            elif kind == "Rot":
                ops.append(("Rot", (int(rng.integers(n)),), tuple(("w", (wi + j) % n_weights) for j in range(3))))
                wi += 3
            else:
                src = ("x", int(rng.integers(n_features))) if phase == "data" else ("w", wi % n_weights)
                wi += src[0] == "w"
                ops.append((str(kind), (int(rng.integers(n)),), (src,)))
    readout = [(str(rng.choice(["X", "Y", "Z"])), int(rng.integers(n))) for _ in range(int(rng.integers(1, 5)))]
    gates = {"RX": qml.RX, "RY": qml.RY, "RZ": qml.RZ, "Rot": qml.Rot, "CZ": qml.CZ, "CNOT": qml.CNOT}
    obs = {"X": qml.PauliX, "Y": qml.PauliY, "Z": qml.PauliZ}

    def qfunc(inputs, weights):
        for kind, wires, srcs in ops:
            args = [inputs[..., i] if s == "x" else weights[..., i] for s, i in srcs]
            gates[kind](*args, wires=list(wires))
        return [qml.expval(obs[p](q)) for p, q in readout]

    return qfunc, len(readout)


def _grad_and_hvp(sim, x, w, gout, vx, vw):
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    gx, gw = torch.autograd.grad((sim(xr, wr) * gout).sum(), (xr, wr), create_graph=True)
    hx, hw = torch.autograd.grad((gx * vx).sum() + (gw * vw).sum(), (xr, wr))
    return gx.detach(), gw.detach(), hx, hw


# ------------------------------------------------------------------------------------------------- correctness


CIRCUITS = [(1, 2, 6, 0), (2, 3, 10, 1), (3, 4, 12, 2), (3, 2, 16, 3), (5, 6, 20, 4), (2, 1, 8, 5)]


@pytest.mark.parametrize("n,F,W,seed", CIRCUITS, ids=[f"{c[0]}q-seed{c[3]}" for c in CIRCUITS])
@pytest.mark.parametrize("fold", [False, True, "auto"])
def test_random_mixed_circuits_match_a_numpy_statevector_and_the_tape_route(n, F, W, seed, fold):
    qfunc, K = random_circuit(n, F, W, seed)
    sim = CompiledCircuit(qfunc, n, F, W, fold=fold)
    kinds = [s.kind for s in sim.segments]
    if n > 1:  # one qubit: every gate fuses into one layer, which reads inputs
        assert "weights" in kinds and "data" in kinds, kinds  # both kinds of segment are exercised
    g = torch.Generator().manual_seed(seed)
    P, B = 2, 5
    x = torch.randn(P, B, F, generator=g, dtype=torch.float64)
    w = torch.rand(P, W, generator=g, dtype=torch.float64) * 2 * math.pi
    ref = torch.tensor(np.array([[numpy_statevector(qfunc, n, x[p, b].numpy(), w[p].numpy()) for b in range(B)]
                                 for p in range(P)]))
    with torch.no_grad():
        assert torch.allclose(sim(x, w), ref, atol=1e-12, rtol=0)
    tape = TorchStatevector(qfunc, n, F, W)
    gout, vx, vw = (torch.randn(P, B, K, generator=g, dtype=torch.float64), torch.randn_like(x), torch.randn_like(w))
    for a, b in zip(_grad_and_hvp(sim, x, w, gout, vx, vw), _grad_and_hvp(tape, x, w, gout, vx, vw)):
        assert torch.allclose(a, b, atol=1e-10, rtol=0), (a - b).abs().max()


SPECS = [
    dict(n_qubits=8, layers=3, n_features=64, n_outputs=10),  # the paper's circuit, shallow
    dict(n_qubits=4, layers=2, n_features=16, n_outputs=10),  # the digits preset
    dict(n_qubits=3, layers=2, n_features=6, encoding="angle", ansatz="strongly_entangling", n_outputs=9),
    dict(n_qubits=6, layers=2, n_features=12, encoding="reupload", ansatz="strongly_entangling", n_encodings=1,
         n_outputs=4),
    dict(n_qubits=5, layers=1, n_features=15, n_encodings=3, observables=("Y0", "X4", "Z2", "Y3")),
    dict(n_qubits=2, layers=4, n_features=4, encoding="angle", n_outputs=3),
]


@pytest.mark.parametrize("kw", SPECS, ids=lambda kw: f"{kw['n_qubits']}q-{kw.get('ansatz', 'rxry_cz')}-"
                                                     f"{kw.get('encoding', 'reupload')}-E{kw.get('n_encodings', 2)}")
def test_every_ansatz_and_encoding_matches_the_folded_reference(kw):
    spec = CircuitSpec(**kw)
    ref = FoldedReference(spec)
    g = torch.Generator().manual_seed(1)
    P, B = 3, 7
    x = torch.rand(P, B, spec.n_features, generator=g, dtype=torch.float64) * math.pi / 4
    w = torch.rand(P, spec.n_weights, generator=g, dtype=torch.float64) * math.pi
    gout = torch.randn(P, B, spec.n_outputs, generator=g, dtype=torch.float64)
    vx, vw = torch.randn_like(x), torch.randn_like(w)
    expected = _grad_and_hvp(ref, x, w, gout, vx, vw)
    for fold in (False, True):
        sim = CompiledCircuit(spec.qfunc, spec.n_qubits, spec.n_features, spec.n_weights, fold=fold)
        with torch.no_grad():
            assert torch.allclose(sim(x, w), ref(x, w), atol=1e-12, rtol=0)
        for a, b in zip(_grad_and_hvp(sim, x, w, gout, vx, vw), expected):
            assert torch.allclose(a, b, atol=1e-10, rtol=0), (fold, (a - b).abs().max())


def test_the_paper_circuit_is_planned_as_prep_data_fold_data_fold():
    spec = CircuitSpec(n_qubits=8, layers=50, n_features=64, n_outputs=10)
    sim = CompiledCircuit(spec.qfunc, 8, 64, spec.n_weights)
    assert [s.kind for s in sim.segments] == ["weights", "data", "weights", "data", "weights"]
    plan = sim.plan(4, 1000, torch.float64, torch.device("cpu"))
    assert plan.modes == ("prep", "data", "fold", "data", "fold")
    small = sim.plan(4, 16, torch.float64, torch.device("cpu"))  # 16 samples: 256 basis states cost more
    assert small.modes == ("prep", "data", "gates", "data", "gates")
    assert "row-operations" in small.reason


def test_hessian_equals_param_shift_hessian():
    """Dense Hessian of a scalar of the outputs, by double backward through the compiled simulator, against
    qml.gradients.param_shift_hessian on default.qubit (exact shift rules)."""
    spec = CircuitSpec(n_qubits=2, layers=1, n_features=4, n_outputs=2)
    sim = CompiledCircuit(spec.qfunc, 2, 4, spec.n_weights)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, generator=g, dtype=torch.float64)
    w0 = torch.rand(spec.n_weights, generator=g, dtype=torch.float64) * math.pi
    coef = torch.tensor([0.7, -1.3], dtype=torch.float64)

    def f(w):
        return (sim(x[None, None], w[None])[0, 0] * coef).sum()

    H = torch.autograd.functional.hessian(f, w0)

    dev = qml.device("default.qubit", wires=2)
    xs = x.numpy()
    qnode = qml.QNode(lambda w: spec.qfunc(xs, w), dev, diff_method="parameter-shift", max_diff=2)
    per_output = qml.gradients.param_shift_hessian(qnode)(qml.numpy.array(w0.numpy(), requires_grad=True))
    Hps = torch.as_tensor(0.7 * np.array(per_output[0], dtype=float) - 1.3 * np.array(per_output[1], dtype=float))
    assert torch.allclose(H, Hps, atol=1e-10, rtol=0), (H - Hps).abs().max()


def test_third_derivatives_are_exact():
    """A graph of the second derivatives (create_graph twice) runs the plain torch ops: equal to the tape."""
    spec = CircuitSpec(n_qubits=3, layers=2, n_features=6, n_outputs=3)
    sims = [CompiledCircuit(spec.qfunc, 3, 6, spec.n_weights), TorchStatevector(spec.qfunc, 3, 6, spec.n_weights)]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    w = torch.rand(2, spec.n_weights, generator=g, dtype=torch.float64)
    u, v = torch.randn_like(w), torch.randn_like(w)
    out = []
    for sim in sims:
        wr, xr = w.clone().requires_grad_(True), x.clone().requires_grad_(True)
        (gw,) = torch.autograd.grad((sim(xr, wr) ** 2).sum(), wr, create_graph=True)
        (hw,) = torch.autograd.grad((gw * v).sum(), wr, create_graph=True)
        (tw,) = torch.autograd.grad((hw * u).sum(), wr)
        out.append((hw.detach(), tw))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-11) and torch.allclose(out[0][1], out[1][1], atol=1e-10)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap has no batching rule for unfold_backward
def test_torch_func_transforms_run_through_the_compiled_patch_qnn():
    """Under torch.func the same kernels run as plain ops: vmap over jvp-of-grad equals double backward."""
    from torch.func import functional_call, grad, jvp, vmap
    m = ql.PatchQNN("digits", n_patches=4, layers=1, device="torch.statevector", simulator="compiled").double()
    assert isinstance(m._runner.sim, CompiledCircuit)
    x, y = torch.randn(3, 64, dtype=torch.float64), torch.tensor([0, 3, 7])
    theta = {k: p.detach() for k, p in m.named_parameters()}

    def loss(th):
        return torch.nn.functional.cross_entropy(functional_call(m, th, (x,)), y)

    gen = torch.Generator().manual_seed(5)
    vs = [{k: torch.randn(t.shape, generator=gen, dtype=torch.float64) for k, t in theta.items()} for _ in range(2)]
    hv = vmap(lambda v: jvp(grad(loss), (theta,), (v,))[1])({k: torch.stack([v[k] for v in vs]) for k in theta})
    params = list(m.parameters())
    gs = torch.autograd.grad(torch.nn.functional.cross_entropy(m(x), y), params, create_graph=True)
    for i, v in enumerate(vs):
        ref = torch.autograd.grad(sum((g_ * v[k]).sum() for g_, k in zip(gs, theta)), params, retain_graph=True)
        for (k, _), r in zip(m.named_parameters(), ref):
            assert torch.allclose(hv[k][i], r, atol=1e-10)


@pytest.mark.parametrize("second_order", ["auto", "reverse", "forward"])
def test_patch_qnn_objective_matches_the_tape_route(second_order):
    """Through the public API (Objective, several engine chunks): gradient and HVPs of the compiled model equal
    the tape simulator's; the dense Hessian too, on a small model."""
    kw = dict(n_patches=4, layers=2, seed=3)
    a = ql.PatchQNN("digits", device="torch.statevector", simulator="compiled", **kw).double()
    b = ql.PatchQNN("digits", device="torch.statevector", simulator="tape", **kw).double()
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(10, 64, generator=g, dtype=torch.float64), torch.randint(0, 10, (10,), generator=g)
    oa = ql.Objective(a, "cross_entropy", (x, y), batch_size=4, second_order=second_order)
    ob = ql.Objective(b, "cross_entropy", (x, y), batch_size=4, second_order="reverse")
    assert torch.allclose(oa.gradient(), ob.gradient(), atol=1e-12)
    V = torch.randn(3, oa.n_params, generator=g, dtype=torch.float64)
    assert torch.allclose(oa.hvp(V), ob.hvp(V), atol=1e-10)
    if second_order == "auto":
        small = dict(image_shape=(4, 4), patch_size=2, stride=2, n_qubits=2, layers=2, n_classes=3, seed=2)
        ms = [ql.PatchQNN("digits", device="torch.statevector", simulator=s_, **small).double()
              for s_ in ("compiled", "tape")]
        xs, ys = torch.randn(6, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)
        H = [ql.dense_hessian(ql.Objective(m, "cross_entropy", (xs, ys), batch_size=4)) for m in ms]
        assert torch.allclose(H[0], H[1], atol=1e-10)


def test_weights_only_results_are_reused_only_at_exactly_the_same_weights():
    spec = CircuitSpec(n_qubits=4, layers=3, n_features=16, n_outputs=4)
    sim = CompiledCircuit(spec.qfunc, 4, 16, spec.n_weights, fold=True)
    fresh = CompiledCircuit(spec.qfunc, 4, 16, spec.n_weights, fold=True)
    x = torch.rand(2, 40, 16, dtype=torch.float64)
    w = torch.rand(2, spec.n_weights, dtype=torch.float64)
    with torch.no_grad():
        first = sim(x, w)
        assert sim._cache.weights is not None
        w[1, 3] += 1e-9  # in place: the same tensor object, other values
        moved = sim(x, w)
        assert not torch.equal(moved, first)
        assert torch.equal(moved, fresh(x, w))


def test_chunks_and_kept_trajectories_do_not_change_results():
    """Tiny memory budgets (many chunks, no kept trajectories) give the same numbers as a generous one."""
    spec = CircuitSpec(n_qubits=6, layers=4, n_features=24, n_outputs=6)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 90, 24, generator=g, dtype=torch.float64)
    w = torch.rand(2, spec.n_weights, generator=g, dtype=torch.float64)
    gout, vx, vw = torch.randn(2, 90, 6, generator=g, dtype=torch.float64), torch.randn_like(x), torch.randn_like(w)
    results, plans = [], []
    for budget in (2 ** 30, 2 ** 20, 2 ** 16):
        sim = CompiledCircuit(spec.qfunc, 6, 24, spec.n_weights, fold=True, memory_budget=budget)
        plans.append(sim.plan(2, 90, torch.float64, torch.device("cpu")))
        results.append(_grad_and_hvp(sim, x, w, gout, vx, vw))
    folded = [i for i, m in enumerate(plans[0].modes) if m == "fold"]
    assert plans[0].rows == 90 and all(plans[0].keep[i] for i in folded)
    assert plans[-1].rows < 10 and not any(plans[-1].keep[i] for i in folded)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.allclose(a, b, atol=1e-11, rtol=0)


_MEMORY_SCRIPT = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    torch.set_num_threads(1)
    from qlandscape.quantum.circuits import CircuitSpec
    from qlandscape.quantum.compiled import CompiledCircuit
    B, route = int(sys.argv[1]), sys.argv[2]
    spec = CircuitSpec(n_qubits=7, layers=4, n_features=28, n_outputs=7)
    if route == "compiled":
        sim = CompiledCircuit(spec.qfunc, 7, 28, spec.n_weights, memory_budget=16 * 2**20)
    else:
        from qlandscape.quantum.statevector import TorchStatevector
        sim = TorchStatevector(spec.qfunc, 7, 28, spec.n_weights)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, B, 28, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.rand(2, spec.n_weights, generator=g, dtype=torch.float64).requires_grad_(True)
    def status(field):
        return int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field)).split()[1])
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    gx, gw = torch.autograd.grad((sim(x, w) ** 2).sum(), (x, w), create_graph=True)
    torch.autograd.grad((gw * torch.ones_like(gw)).sum() + (gx * 0.5).sum(), (x, w))
    print(status("VmHWM") - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS from /proc (Linux)")
def test_peak_memory_of_a_chunked_hvp_does_not_grow_with_the_number_of_samples():
    """Gradient graph + HVP at 7 qubits: with a 16 MiB budget the compiled simulator's peak RSS growth is the
    same for 128 and 1024 samples (within allocator noise, 32 MiB, against 280 MiB of growth without chunking), while the tape
    route's grows with the samples (measured 128 -> 1024 samples: 450 MiB -> 3.5 GiB). Each case runs in a fresh
    process (peak RSS from /proc/self/status)."""
    def peak_mib(B, route):
        out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(B), route], capture_output=True, text=True,
                             check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        return int(out.stdout.split()[-1]) / 1024

    small, large = peak_mib(128, "compiled"), peak_mib(1024, "compiled")
    tape_small, tape_large = peak_mib(128, "tape"), peak_mib(512, "tape")  # measured 450 MiB and ~1.8 GiB
    # Measured here 43-45 -> 44-47 MiB, on CI once 40 -> 52 MiB (allocator noise); the same 1024 samples with the
    # budget lifted (no chunking) peak at 319 MiB, so 32 MiB of slack still separates chunked from unchunked 8x.
    assert large < small + 32, (small, large)
    assert tape_large > 3 * tape_small, (tape_small, tape_large)
    assert large < tape_small / 4, (large, tape_small)


def test_float32_weights_run_in_complex64():
    spec = CircuitSpec(n_qubits=8, layers=3, n_features=64, n_outputs=10)
    sim = CompiledCircuit(spec.qfunc, 8, 64, spec.n_weights)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 30, 64, generator=g, dtype=torch.float64)
    w = torch.rand(2, spec.n_weights, generator=g, dtype=torch.float64) * 3
    gout, vx, vw = torch.randn(2, 30, 10, generator=g, dtype=torch.float64), torch.randn_like(x), torch.randn_like(w)
    r64 = _grad_and_hvp(sim, x, w, gout, vx, vw)
    r32 = _grad_and_hvp(sim, x.float(), w.float(), gout.float(), vx.float(), vw.float())
    with torch.no_grad():
        out32 = sim(x.float(), w.float())
    assert out32.dtype == torch.float32 and torch.allclose(out32.double(), sim(x, w).detach(), atol=1e-5)
    for a, b in zip(r64, r32):  # complex64 over ~200 gate applications: relative 1e-4 of the scale
        assert b.dtype == torch.float32
        assert (a - b.double()).abs().max() <= 1e-4 * a.abs().max()


def test_bad_inputs_are_clear_errors():
    spec = CircuitSpec(n_qubits=3, layers=1, n_features=6, n_outputs=3)
    sim = CompiledCircuit(spec.qfunc, 3, 6, spec.n_weights)
    with pytest.raises(ValueError, match="inputs must have shape"):
        sim(torch.zeros(5, 6), torch.zeros(1, spec.n_weights))
    with pytest.raises(ValueError, match="weights must have shape"):
        sim(torch.zeros(2, 5, 6), torch.zeros(3, spec.n_weights))
    with pytest.raises(ValueError, match="real floating point"):
        sim(torch.zeros(1, 5, 6), torch.zeros(1, spec.n_weights, dtype=torch.long))
    with pytest.raises(ValueError, match="fold must be"):
        CompiledCircuit(spec.qfunc, 3, 6, spec.n_weights, fold="sometimes")
    with pytest.raises(ValueError, match="memory_budget"):
        CompiledCircuit(spec.qfunc, 3, 6, spec.n_weights, memory_budget=0)
    with pytest.raises(ValueError, match="tangent of the weights"):
        sim.adjoint_tangent(torch.zeros(1, 2, 6), torch.zeros(1, spec.n_weights), torch.zeros(1, 2, 3),
                            torch.zeros(2, spec.n_weights), None)
    with pytest.raises(ValueError, match="simulator must be"):
        ql.PatchQNN("digits", simulator="fast")
    with pytest.raises(ql.quantum.devices.DeviceUnavailableError, match="torch_device='cpu'"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is visible")
        ql.PatchQNN("digits", device="torch.statevector", torch_device="cuda")


# --------------------------------------------------------------------------------------------------- the plan


def test_segments_of_a_circuit_without_inputs_or_without_weights():
    def weights_only(inputs, weights):
        qml.RX(weights[0], wires=0)
        qml.CZ(wires=[0, 1])
        qml.RY(weights[1], wires=1)
        return [qml.expval(qml.PauliZ(1))]

    def data_only(inputs, weights):
        qml.RX(inputs[0], wires=0)
        qml.CNOT(wires=[0, 1])
        return [qml.expval(qml.PauliY(1))]

    assert [s.kind for s in segments(record(weights_only, 2, 1, 2))] == ["weights"]
    assert [s.kind for s in segments(record(data_only, 2, 1, 1))] == ["data"]
    for qfunc, W in ((weights_only, 2), (data_only, 1)):
        sim = CompiledCircuit(qfunc, 2, 1, W)
        x = torch.rand(2, 3, 1, dtype=torch.float64)
        w = torch.rand(2, W, dtype=torch.float64)
        ref = torch.tensor(np.array([[numpy_statevector(qfunc, 2, x[p, b].numpy(), w[p].numpy()) for b in range(3)]
                                     for p in range(2)]))
        with torch.no_grad():
            assert torch.allclose(sim(x, w), ref, atol=1e-12)


def test_cost_model_folds_more_as_samples_and_depth_grow():
    cpu, f64 = torch.device("cpu"), torch.float64
    budget = 2 ** 31
    decide = [costmodel.fold_pays(8, ops, rows, f64, cpu, 4, budget, True)[0]
              for ops in (20, 100, 400) for rows in (16, 64, 300, 1000, 10_000)]
    assert decide[0] is False and decide[-1] is True
    for ops_i in range(3):  # monotone in the number of samples
        row = decide[ops_i * 5:(ops_i + 1) * 5]
        assert row == sorted(row)
    assert costmodel.fold_pays(12, 100, 10 ** 6, f64, cpu, 16, 2 ** 20, True)[0] is False  # does not fit
    assert costmodel.group_size(3) == 3 and costmodel.group_size(8) == costmodel.GROUP_SIZE
    assert costmodel.default_budget(cpu) <= 3 * 2 ** 30
