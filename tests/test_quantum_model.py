"""PatchQNN and its circuit, against independent references: a numpy statevector simulator,
finite differences, the lightning.qubit simulator, per-sample/per-patch loops and the paper's
parameter counts."""

from __future__ import annotations

import copy
import math
from typing import Iterator

import numpy as np
import pennylane as qml
import pytest
import torch

from qlandscape.adapter import copy_module, model_capabilities
from qlandscape.quantum import CircuitSpec, PatchQNN, readout_observables
from qlandscape.quantum.statevector import TorchStatevector

# ---------------------------------------------------------------------------------------------------------------
# A small numpy statevector simulator, written from the circuit's description (not from CircuitSpec's code).

_I2 = np.eye(2)
_PAULI = {"X": np.array([[0, 1], [1, 0]], complex), "Y": np.array([[0, -1j], [1j, 0]]),
          "Z": np.diag([1.0 + 0j, -1.0])}


def _rx(t: float) -> np.ndarray:
    return np.array([[math.cos(t / 2), -1j * math.sin(t / 2)], [-1j * math.sin(t / 2), math.cos(t / 2)]])


def _ry(t: float) -> np.ndarray:
    return np.array([[math.cos(t / 2), -math.sin(t / 2)], [math.sin(t / 2), math.cos(t / 2)]], complex)


def _rz(t: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def _one(state: np.ndarray, u: np.ndarray, q: int) -> np.ndarray:
    return np.moveaxis(np.tensordot(u, state, axes=([1], [q])), 0, q)


def _cz(state: np.ndarray, a: int, b: int) -> np.ndarray:
    state = state.copy()
    idx = [slice(None)] * state.ndim
    idx[a], idx[b] = 1, 1
    state[tuple(idx)] *= -1
    return state


def _cnot(state: np.ndarray, c: int, t: int) -> np.ndarray:
    state = state.copy()
    idx = [slice(None)] * state.ndim
    idx[c] = 1
    sub = state[tuple(idx)]
    t2 = t - (1 if t > c else 0)
    state[tuple(idx)] = np.flip(sub, axis=t2)
    return state


def _reference(n: int, layers: int, n_enc: int, encoding: str, ansatz: str, obs: tuple[str, ...],
               x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Expectation values; weights consumed in gate order (the documented layout is gate order)."""
    it: Iterator[float] = iter(w)
    psi = np.zeros((2,) * n, complex)
    psi[(0,) * n] = 1.0

    def cz_ring(s: np.ndarray) -> np.ndarray:
        pairs = [(0, 1)] if n == 2 else [(i, (i + 1) % n) for i in range(n)]
        for a, b in pairs:
            s = _cz(s, a, b)
        return s

    def block(s: np.ndarray, final: bool) -> np.ndarray:
        for lay in range(layers):
            if ansatz == "rxry_cz":
                for q in range(n):
                    s = _one(s, _rx(next(it)), q)
                for q in range(n):
                    s = _one(s, _ry(next(it)), q)
                if not (final and lay == layers - 1):
                    s = cz_ring(s)
            else:  # Rot(a, b, c) = RZ(c) RY(b) RZ(a); CNOT ring with range 1 + lay % (n - 1)
                for q in range(n):
                    a, b, c = next(it), next(it), next(it)
                    s = _one(s, _rz(c) @ _ry(b) @ _rz(a), q)
                r = 1 + lay % (n - 1)
                for i in range(n):
                    s = _cnot(s, i, (i + r) % n)
        return s

    chunk = len(x) // n_enc
    k = chunk // n
    for e in range(n_enc + 1):
        psi = block(psi, final=e == n_enc)
        if e == n_enc:
            break
        for q in range(n):
            for j in range(k):
                xv = x[e * chunk + q * k + j]
                data, wrap = (_rx, _ry) if j % 2 == 0 else (_ry, _rx)
                if encoding == "reupload":
                    psi = _one(psi, wrap(next(it)), q)
                    psi = _one(psi, data(xv), q)
                    psi = _one(psi, wrap(next(it)), q)
                else:
                    psi = _one(psi, data(xv), q)
        psi = cz_ring(psi)
    assert next(it, None) is None, "reference did not consume every weight"
    out = []
    for o in obs:
        phi = _one(psi, _PAULI[o[0]], int(o[1:]))
        out.append(np.vdot(psi, phi).real)
    return np.array(out)


# Tolerance 1e-10: both sides apply ~20-100 float64 gates to a unit vector, each adding ~1e-16 rounding.
@pytest.mark.parametrize("n, layers, n_enc, encoding, ansatz, n_features", [
    (2, 1, 2, "reupload", "rxry_cz", 8),
    (3, 1, 2, "angle", "rxry_cz", 12),
    (3, 1, 1, "reupload", "strongly_entangling", 6),
    (2, 2, 2, "angle", "strongly_entangling", 4),
    (3, 2, 1, "reupload", "rxry_cz", 3),
])
def test_circuit_matches_numpy_statevector(n: int, layers: int, n_enc: int, encoding: str, ansatz: str,
                                           n_features: int) -> None:
    spec = CircuitSpec(n_qubits=n, layers=layers, n_features=n_features, encoding=encoding, n_encodings=n_enc,
                       ansatz=ansatz, observables=tuple(f"{p}{q}" for p in "XYZ" for q in range(n)))
    qnode = qml.QNode(spec.qfunc, qml.device("default.qubit", wires=n), interface="torch", diff_method="backprop")
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, n_features, generator=gen, dtype=torch.float64) * 3 - 1.5
    w = torch.rand(3, spec.n_weights, generator=gen, dtype=torch.float64) * 2 * math.pi
    got = torch.stack(qnode(x, w), -1).numpy()
    sim = TorchStatevector(spec.qfunc, n, n_features, spec.n_weights)  # 3 patches x 1 sample each
    got_sim = sim(x[:, None, :], w)[:, 0].numpy()
    for b in range(3):
        ref = _reference(n, layers, n_enc, encoding, ansatz, spec.observables, x[b].numpy(), w[b].numpy())
        np.testing.assert_allclose(got[b], ref, atol=1e-10, rtol=0)
        np.testing.assert_allclose(got_sim[b], ref, atol=1e-10, rtol=0)


def test_readout_rule_and_errors() -> None:
    assert readout_observables(8, 10) == tuple([f"X{q}" for q in range(5)] + [f"Z{q}" for q in range(5)])
    assert readout_observables(4, 10) == ("X0", "X1", "X2", "X3", "Z0", "Z1", "Z2", "Y0", "Y1", "Y2")
    assert readout_observables(4, 2) == ("X0", "X1")
    with pytest.raises(ValueError, match="more observables than n_qubits allow"):
        readout_observables(3, 10)
    with pytest.raises(ValueError, match="not a single-qubit Pauli"):
        CircuitSpec(n_qubits=2, layers=1, n_features=4, observables=("XX0",))
    with pytest.raises(ValueError, match="do not divide"):
        CircuitSpec(n_qubits=3, layers=1, n_features=16, n_outputs=2)


@pytest.mark.parametrize("layers", [1, 2, 50, 200])
def test_paper_weight_count(layers: int) -> None:
    spec = CircuitSpec(n_qubits=8, layers=layers, n_features=64, n_outputs=10)
    assert spec.n_weights == (6 * layers + 16) * 8
    assert spec.observables == ("X0", "X1", "X2", "X3", "X4", "Z0", "Z1", "Z2", "Z3", "Z4")


@pytest.mark.parametrize("layers, n_patches", [(1, 4), (2, 4), (1, 9), (1, 16)])
def test_paper_model_parameter_count(layers: int, n_patches: int) -> None:
    m = PatchQNN("kawase2025", n_patches=n_patches, layers=layers, device="default.qubit")
    assert m.n_params == n_patches * (6 * layers + 16) * 8 + 196
    assert m.coefficient == 100.0 and m.aggregation == "mean" and m.pos_bias is not None
    assert all(0 <= float(c.weights.detach().min()) and float(c.weights.detach().max()) < math.pi for c in m.circuits)


# ---------------------------------------------------------------------------------------------------------------
# The model.


@pytest.fixture(scope="module")
def digits_model() -> PatchQNN:
    m = PatchQNN("digits", device="default.qubit").double()
    with torch.no_grad():
        m.pos_bias.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))  # type: ignore[union-attr]
    return m


def _batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 64, generator=gen, dtype=torch.float64), torch.randint(0, 10, (n,), generator=gen)


def test_broadcast_all_patches_matches_loop(digits_model: PatchQNN) -> None:
    m = digits_model
    assert m.patch_batching == "all"
    x, _ = _batch(3)
    images = x.reshape(3, 8, 8) * m.input_scale + m.pos_bias
    patches = m.grid.extract(images)
    with torch.no_grad():
        got = m.patch_outputs(patches)
        ref = torch.stack([torch.stack([torch.stack(m._runner.qnode(patches[b, p], c.weights))
                                        for p, c in enumerate(m.circuits)]) for b in range(3)])
        per_patch = copy.deepcopy(m)
        per_patch.patch_batching = "per_patch"
        assert torch.allclose(per_patch.patch_outputs(patches), ref, atol=1e-12, rtol=0)
    assert got.shape == (3, 4, 10)
    assert torch.allclose(got, ref, atol=1e-12, rtol=0)


def test_aggregation_and_coefficient() -> None:
    x, _ = _batch(3)
    for agg, coef in (("mean", 10.0), ("sum", 2.5), ("linear", 3.0)):
        m = PatchQNN("digits", device="default.qubit", aggregation=agg, coefficient=coef).double()
        with torch.no_grad():
            patches = m.grid.extract(x.reshape(3, 8, 8) * m.input_scale)
            scores = torch.stack([c(patches[:, p]) for p, c in enumerate(m.circuits)], dim=1)  # (B, P, 10)
            if agg == "mean":
                expect = coef * scores.mean(1)
            elif agg == "sum":
                expect = coef * scores.sum(1)
            else:
                expect = coef * (scores.flatten(1) @ m.head.weight.T + m.head.bias)  # type: ignore[union-attr]
            assert torch.allclose(m(x), expect, atol=1e-12, rtol=0), agg


def test_input_shapes_and_dtypes(digits_model: PatchQNN) -> None:
    x, _ = _batch(2)
    with torch.no_grad():
        ref = digits_model(x)
        assert ref.shape == (2, 10) and ref.dtype == torch.float64
        assert torch.equal(digits_model(x.reshape(2, 8, 8)), ref)
        assert torch.equal(digits_model(x.reshape(2, 1, 8, 8)), ref)
        with pytest.raises(ValueError, match="expected inputs of shape"):
            digits_model(torch.zeros(2, 49, dtype=torch.float64))
        m32 = PatchQNN("digits", device="default.qubit")
        assert m32(x.float()).dtype == torch.float32


def test_constructor_errors() -> None:
    with pytest.raises(TypeError, match="valid options"):
        PatchQNN("digits", n_qbits=4)
    with pytest.raises(ValueError, match="more observables than n_qubits allow"):
        PatchQNN("digits", n_qubits=2, n_encodings=1, device="default.qubit")  # 10 classes > 3 * 2
    with pytest.raises(ValueError, match="do not divide"):
        PatchQNN("digits", n_qubits=3, device="default.qubit")
    with pytest.raises(ValueError, match="unknown device"):
        PatchQNN("digits", device="no.such.device")
    with pytest.raises(ValueError, match="achievable"):
        PatchQNN("digits", n_patches=16)
    with pytest.raises(ValueError, match="unknown preset"):
        PatchQNN("mnist")
    with pytest.raises(ValueError, match="n_patches or stride"):
        PatchQNN("digits", n_patches=4, stride=2)


def test_presets_and_stride_override() -> None:
    m = PatchQNN("digits", stride=2, n_classes=2, device="default.qubit")
    assert m.grid.n_patches == 9 and m.spec.observables == ("X0", "X1") and m.config["n_patches"] == 9
    one = PatchQNN("digits", n_patches=1, device="default.qubit")
    assert one.grid.patch_shape == (8, 8) and one.spec.features_per_qubit == 8
    assert one(torch.zeros(2, 64)).shape == (2, 10)
    import json
    json.dumps(m.config)


def _loss(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(m(x), y)


def test_backprop_gradient_matches_finite_differences(digits_model: PatchQNN) -> None:
    m = copy.deepcopy(digits_model)
    x, y = _batch(4)
    params = list(m.parameters())
    grads = torch.autograd.grad(_loss(m, x, y), params)
    gen = torch.Generator().manual_seed(5)
    h = 1e-5  # central differences: truncation ~h^2 * |f'''| ~ 1e-9, rounding ~1e-16 / h ~ 1e-11
    for _ in range(3):
        v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        with torch.no_grad():
            for p, d in zip(params, v):
                p.add_(h * d)
            up = _loss(m, x, y)
            for p, d in zip(params, v):
                p.sub_(2 * h * d)
            down = _loss(m, x, y)
            for p, d in zip(params, v):
                p.add_(h * d)
        fd = (up - down) / (2 * h)
        exact = sum((g * d).sum() for g, d in zip(grads, v))
        assert abs(float(fd - exact)) < 1e-7 * max(1.0, abs(float(exact)))


def test_lightning_adjoint_matches_default_qubit(digits_model: PatchQNN) -> None:
    """Also guards the float32 trap: PennyLane's torch interface turns lightning's Python-float results
    into torch's default dtype (float32, errors ~1e-8) unless PatchQNN sets the default dtype."""
    light = PatchQNN("digits", device="lightning.qubit").double()
    light.load_state_dict(digits_model.state_dict())
    assert light.patch_batching == "per_patch" and light.device_choice.diff_method == "adjoint"
    x, y = _batch(3)
    ref = digits_model(x)
    out = light(x)
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)
    g_ref = torch.autograd.grad(_loss(digits_model, x, y), list(digits_model.parameters()))
    g = torch.autograd.grad(_loss(light, x, y), list(light.parameters()))
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_deepcopy_lightning_shares_device() -> None:
    m = PatchQNN("digits", device="lightning.qubit").double()
    x, _ = _batch(2)
    for c in (copy.deepcopy(m), copy_module(m)):
        assert c._runner.device is m._runner.device
        assert c.circuits[0].weights is not m.circuits[0].weights
        with torch.no_grad():
            assert torch.equal(c(x), m(x))
            c.circuits[0].weights.add_(1.0)
            assert not torch.equal(c(x), m(x))


def test_capabilities_per_device() -> None:
    caps, _ = model_capabilities(PatchQNN("digits", device="default.qubit"))
    assert caps.autograd_order == math.inf and caps.torch_func and caps.copyable and caps.precision is None
    caps, _ = model_capabilities(PatchQNN("digits", device="lightning.qubit"))
    assert caps.autograd_order == 1 and not caps.torch_func
    caps, _ = model_capabilities(PatchQNN("digits", device="lightning.qubit", c_dtype="complex64"))
    assert caps.precision == torch.float32
    caps, declared = model_capabilities(PatchQNN("digits", device="default.qubit", diff_method="parameter-shift"))
    assert caps.autograd_order == 2 and not caps.torch_func
    assert [name for name, _, _ in declared] == [""]  # only the model itself declares; circuits do not


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap has no batching rule for unfold_backward
def test_torch_func_through_backprop_model(digits_model: PatchQNN) -> None:
    """torch_func=True is declared for default.qubit/backprop: jvp-of-grad (forward-over-reverse HVP)
    and vmap over tangents agree with autograd double backward."""
    from torch.func import functional_call, grad, jvp, vmap

    m = digits_model
    x, y = _batch(2)
    names = [n for n, _ in m.named_parameters()]
    theta = {n: p.detach() for n, p in m.named_parameters()}

    def loss(th: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(functional_call(m, th, (x,)), y)

    gen = torch.Generator().manual_seed(2)
    vs = [{n: torch.randn(theta[n].shape, generator=gen, dtype=torch.float64) for n in names} for _ in range(2)]
    hvps = vmap(lambda v: jvp(grad(loss), (theta,), (v,))[1])({n: torch.stack([v[n] for v in vs]) for n in names})
    params = list(m.parameters())
    g = torch.autograd.grad(_loss(m, x, y), params, create_graph=True)
    for i, v in enumerate(vs):
        ref = torch.autograd.grad(sum((a * v[n]).sum() for a, n in zip(g, names)), params, retain_graph=True)
        for n, r in zip(names, ref):
            assert torch.allclose(hvps[n][i], r, atol=1e-10, rtol=0)


@pytest.mark.slow
def test_parameter_shift_second_derivatives_exact() -> None:
    """max_diff=2 parameter-shift gives the same Hessian-vector product as backprop."""
    kw = dict(image_shape=(4, 4), patch_size=2, n_patches=4, n_qubits=2, n_encodings=1, n_classes=2, layers=1)
    bp = PatchQNN("digits", device="default.qubit", **kw).double()
    ps = PatchQNN("digits", device="default.qubit", diff_method="parameter-shift", **kw).double()
    x = torch.randn(3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1])
    hv = []
    for m in (bp, ps):
        params = list(m.parameters())
        v = [torch.ones_like(p) for p in params]
        g = torch.autograd.grad(_loss(m, x, y), params, create_graph=True)
        hv.append(torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, v)), params))
    for a, b in zip(*hv):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)
