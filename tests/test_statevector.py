"""The torch statevector simulator: the QNode's own quantum function compiled into batched torch ops.

References: PennyLane's default.qubit on the same quantum function (itself checked against a numpy
statevector in test_quantum_model.py), to 1e-10 in float64 (rounding over ~100 gates); derivatives
against default.qubit backprop through the same PatchQNN weights.
"""

import pennylane as qml
import pytest
import torch
from torch.func import functional_call, jvp, vmap

import qlandscape as ql
from qlandscape.quantum.circuits import CircuitSpec
from qlandscape.quantum.statevector import TorchStatevector

SPECS = [
    dict(n_qubits=4, layers=2, n_features=16, n_outputs=10),
    dict(n_qubits=3, layers=2, n_features=6, encoding="angle", ansatz="strongly_entangling", n_outputs=9),
    dict(n_qubits=2, layers=1, n_features=4, ansatz="strongly_entangling", n_outputs=2),
    dict(n_qubits=5, layers=1, n_features=10, n_encodings=1, observables=("Y0", "X4", "Z2", "Y3")),
    dict(n_qubits=1, layers=2, n_features=2, n_outputs=3),
]


@pytest.mark.parametrize("kw", SPECS, ids=lambda kw: f"{kw['n_qubits']}q-{kw.get('ansatz', 'rxry_cz')}")
def test_matches_default_qubit(kw):
    spec = CircuitSpec(**kw)
    sim = TorchStatevector(spec.qfunc, spec.n_qubits, spec.n_features, spec.n_weights)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, spec.n_features, generator=g, dtype=torch.float64)
    w = torch.rand(3, spec.n_weights, generator=g, dtype=torch.float64) * 6.3
    qnode = qml.QNode(spec.qfunc, qml.device("default.qubit", wires=spec.n_qubits), interface="torch")
    ref = torch.stack([torch.stack(qnode(x[p], w[p]), -1) for p in range(3)])
    assert torch.allclose(sim(x, w), ref, atol=1e-10, rtol=0)
    # complex64 state for float32 weights: float32 rounding
    assert torch.allclose(sim(x.float(), w.float()), ref.float(), atol=1e-5, rtol=0)


def _pair():
    kw = dict(image_shape=(4, 4), patch_size=2, stride=2, n_qubits=2, layers=1, n_classes=3, seed=2)
    return ql.PatchQNN("digits", device="torch.statevector", **kw).double(), \
        ql.PatchQNN("digits", device="default.qubit", **kw).double()


def test_patch_qnn_gradient_and_hessian_equal_default_qubit():
    a, b = _pair()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (5,), generator=g)
    oa, ob = ql.Objective(a, "cross_entropy", (x, y)), ql.Objective(b, "cross_entropy", (x, y))
    assert torch.allclose(oa.gradient(), ob.gradient(), atol=1e-12)
    assert torch.allclose(ql.dense_hessian(oa), ql.dense_hessian(ob), atol=1e-10)


def test_torch_func_transforms_run_and_agree_with_autograd():
    a, _ = _pair()
    x = torch.randn(4, 4, 4, dtype=torch.float64)
    params = {k: v.detach() for k, v in a.named_parameters()}
    names = list(params)

    def f(*vals):
        return functional_call(a, dict(zip(names, vals)), (x,)).square().sum()

    vals = tuple(params.values())
    tangents = tuple(torch.randn_like(v) for v in vals)
    _, jv = jvp(f, vals, tangents)
    vs = [v.clone().requires_grad_(True) for v in vals]
    grads = torch.autograd.grad(f(*vs), vs)
    assert torch.allclose(jv, sum((g_ * t).sum() for g_, t in zip(grads, tangents)), atol=1e-10)
    batch = vmap(lambda s: f(*(v + s for v in vals)))(torch.tensor([0.0, 0.1], dtype=torch.float64))
    assert torch.allclose(batch, torch.stack([f(*vals), f(*(v + 0.1 for v in vals))]), atol=1e-12)


def test_unsupported_circuits_name_the_way_out():
    def hadamard(inputs, weights):
        qml.Hadamard(0)
        qml.RX(weights[0], wires=0)
        return [qml.expval(qml.PauliZ(0))]

    with pytest.raises(ValueError, match="default.qubit"):
        TorchStatevector(hadamard, 1, 1, 1)

    def derived(inputs, weights):
        qml.RX(2 * weights[0], wires=0)
        return [qml.expval(qml.PauliZ(0))]

    with pytest.raises(ValueError, match="one input or one weight"):
        TorchStatevector(derived, 1, 1, 1)

    def product_readout(inputs, weights):
        qml.RX(weights[0], wires=0)
        return [qml.expval(qml.PauliZ(0) @ qml.PauliZ(1))]

    with pytest.raises(ValueError, match="single-qubit Pauli"):
        TorchStatevector(product_readout, 2, 1, 1)


def test_bad_shapes_are_errors():
    spec = CircuitSpec(**SPECS[0])
    sim = TorchStatevector(spec.qfunc, spec.n_qubits, spec.n_features, spec.n_weights)
    with pytest.raises(ValueError, match="inputs must have shape"):
        sim(torch.zeros(5, spec.n_features), torch.zeros(1, spec.n_weights))
    with pytest.raises(ValueError, match="weights must have shape"):
        sim(torch.zeros(2, 5, spec.n_features), torch.zeros(3, spec.n_weights))


@pytest.mark.parametrize("simulator", ["tape", "compiled"])
def test_constants_built_inside_a_torch_func_transform_do_not_escape_it(simulator):
    """Regression (kawase2025 --fast sweep): the simulator's cached constants for a new complex dtype were first
    built inside forward-over-reverse HVPs (float32 Lanczos products of a float64 objective) and failed on the
    next call with functorch's "level <= current_level ... escaped?" assertion. They are now built outside any
    transform; the certified top eigenvalue matches the one through reverse-over-reverse HVPs (tolerance: the two
    certificates' bounds)."""
    from qlandscape import Objective, hessian_eigs
    from qlandscape.quantum import PatchQNN
    torch.manual_seed(0)
    m = PatchQNN("digits", n_patches=4, layers=1, device="torch.statevector", simulator=simulator).double()
    x, y = torch.randn(4, 64), torch.randint(0, 10, (4,))
    obj = Objective(m, "cross_entropy", (x, y), dtype=torch.float64, batch_size=2, second_order="forward")
    # the first complex64 constants are now built inside the transform
    (m._runner.sim._consts if simulator == "compiled" else m._runner.sim._cache).clear()
    lan = hessian_eigs(obj, k=1, method="lanczos", tol=1e-2, progress=False)
    ref_obj = Objective(m, "cross_entropy", (x, y), dtype=torch.float64, batch_size=2, second_order="reverse")
    ref = hessian_eigs(ref_obj, k=1, method="lanczos", tol=1e-2, progress=False)
    assert lan.converged and ref.converged
    assert abs(lan.eigenvalues[0] - ref.eigenvalues[0]) <= lan.error_bounds[0] + ref.error_bounds[0] + 1e-9
