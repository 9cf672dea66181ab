"""``PatchQNN(circuit=QuantumFunction(...))``: a user's own PennyLane quantum function per patch, on the same
engine and device selection as the built-in circuit, checked against a 2-qubit statevector written here."""

from __future__ import annotations

import math

import pennylane as qml
import pytest
import torch

import qlandscape as ql
from qlandscape.adapter import model_capabilities
from qlandscape.curvature import dense_hessian
from qlandscape.quantum import PatchQNN, QuantumFunction
from qlandscape.testing import check_model


def hzz(inputs, weights):
    """Hadamards, all 16 patch features as RY angles on alternate wires, two IsingZZ couplings (no gate the
    torch simulators record), Z0 and X1 read out."""
    qml.Hadamard(wires=0)
    qml.Hadamard(wires=1)
    for j in range(16):
        qml.RY(inputs[..., j], wires=j % 2)
    qml.IsingZZ(weights[..., 0], wires=[0, 1])
    qml.RX(weights[..., 1], wires=0)
    qml.RX(weights[..., 2], wires=1)
    qml.IsingZZ(weights[..., 3], wires=[0, 1])
    return [qml.expval(qml.PauliZ(0)), qml.expval(qml.PauliX(1))]


HZZ = QuantumFunction(hzz, n_qubits=2, n_weights=4, name="hzz")


# ------------------------------------------------------------------ an independent 2-qubit statevector
def _single(u: torch.Tensor, state: torch.Tensor, wire: int) -> torch.Tensor:
    """``u`` (B, 2, 2) on ``wire`` of ``state`` (B, 2, 2) indexed [b, q0, q1]."""
    return torch.einsum("bij,bjk->bik", u, state) if wire == 0 else torch.einsum("bij,bkj->bki", u, state)


def _ry(t: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(t / 2).to(torch.complex128), torch.sin(t / 2).to(torch.complex128)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _rx(t: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(t / 2).to(torch.complex128), torch.sin(t / 2).to(torch.complex128)
    return torch.stack([torch.stack([c, -1j * s], -1), torch.stack([-1j * s, c], -1)], -2)


def _zz(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    sign = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)  # Z x Z eigenvalues on |q0 q1>
    return state * torch.exp(-0.5j * t[:, None, None] * sign)


def reference_scores(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``hzz`` on inputs (B, 16) with weights (4,): scores (B, 2) = (<Z0>, <X1>)."""
    B = x.shape[0]
    state = torch.zeros(B, 2, 2, dtype=torch.complex128)
    state[:, 0, 0] = 1
    h = torch.tensor([[1, 1], [1, -1]], dtype=torch.complex128).expand(B, 2, 2) / math.sqrt(2)
    state = _single(h, _single(h, state, 0), 1)
    for j in range(16):
        state = _single(_ry(x[:, j]), state, j % 2)
    wb = w.expand(B, 4)
    state = _zz(state, wb[:, 0])
    state = _single(_rx(wb[:, 2]), _single(_rx(wb[:, 1]), state, 0), 1)
    state = _zz(state, wb[:, 3])
    p = state.abs() ** 2
    z0 = p[:, 0, :].sum(-1) - p[:, 1, :].sum(-1)
    x1 = 2 * (state[:, :, 0].conj() * state[:, :, 1]).real.sum(-1)
    return torch.stack([z0, x1], -1)


def reference_logits(model: PatchQNN, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    images = x.reshape(-1, 8, 8) * model.input_scale + params["pos_bias"]
    patches = model.grid.extract(images)  # (B, P, 16)
    scores = torch.stack([reference_scores(patches[:, p], params[f"circuits.{p}.weights"])
                          for p in range(model.grid.n_patches)], 1)
    return model.coefficient * scores.mean(1)


def _data(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 64, generator=gen, dtype=torch.float64), torch.randint(0, 2, (n,), generator=gen)


def _model(**kw) -> PatchQNN:
    m = PatchQNN("digits", circuit=HZZ, n_classes=2, **kw).double()
    with torch.no_grad():
        m.pos_bias.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))  # type: ignore[union-attr]
    return m


# ------------------------------------------------------------------ behaviour
def test_auto_runs_a_circuit_the_torch_simulators_cannot_record_on_default_qubit_backprop():
    m = _model()
    assert (m.device_choice.name, m.device_choice.diff_method) == ("default.qubit", "backprop")
    assert "does not record onto torch.statevector" in m.device_choice.reason
    assert "decomposing Hadamard" in m.device_choice.reason  # PennyLane decomposes it into fixed-angle rotations
    assert m.config["circuit"] == "hzz" and m.config["observables"] == ["Z0", "X1"]
    assert m.config["n_weights_per_patch"] == 4 and m.n_params == 4 * 4 + 64


@pytest.mark.parametrize("batching", ["all", "per_patch"])
def test_user_circuit_logits_equal_the_independent_statevector(batching):
    m = _model(patch_batching=batching)
    x, _ = _data()
    params = {k: v.detach() for k, v in m.named_parameters()}
    with torch.no_grad():
        got = m(x)
    torch.testing.assert_close(got, reference_logits(m, x, params), rtol=0, atol=1e-12)  # float64 rounding


def _flat_loss(m: PatchQNN, x: torch.Tensor, y: torch.Tensor):
    """``theta -> mean cross-entropy`` of the independent statevector, ``theta`` in ``m.named_parameters()`` order."""
    names = [k for k, _ in m.named_parameters()]
    shapes = [p.shape for _, p in m.named_parameters()]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts, at = {}, 0
        for name, shape in zip(names, shapes):
            n = math.prod(shape)
            parts[name] = theta[at:at + n].reshape(shape)
            at += n
        return torch.nn.functional.cross_entropy(reference_logits(m, x, parts), y)

    return names, loss


def test_user_circuit_hessian_equals_the_autograd_hessian_of_the_independent_statevector():
    m = _model()
    x, y = _data()
    names, loss = _flat_loss(m, x, y)
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in m.named_parameters()])
    ref = torch.autograd.functional.hessian(loss, theta0)
    obj = ql.Objective(m, "cross_entropy", (x, y))
    assert list(obj.space.names) == names
    H = dense_hessian(obj)
    assert H.shape == (80, 80)
    torch.testing.assert_close(torch.as_tensor(H, dtype=torch.float64), ref, rtol=1e-9, atol=1e-10)
    assert float(ref.abs().max()) > 1e-3  # not a vanishing Hessian compared with a vanishing one


def test_the_builtin_circuit_as_a_user_circuit_is_the_same_model_on_every_torch_route():
    spec = PatchQNN("digits").spec
    own = QuantumFunction(spec.qfunc, n_qubits=spec.n_qubits, n_weights=spec.n_weights, layers=spec.layers,
                          name="digits-circuit")
    x, _ = _data()
    for simulator in ("tape", "compiled"):
        a = PatchQNN("digits", simulator=simulator).double()
        b = PatchQNN("digits", circuit=own, simulator=simulator).double()
        assert b.device_choice.name == "torch.statevector" and b.config["simulator"] == simulator
        with torch.no_grad():
            torch.testing.assert_close(b(x), a(x), rtol=0, atol=1e-13)
    assert b.config["observables"] == list(spec.observables)


def test_an_explicit_torch_statevector_for_an_unrecordable_circuit_raises_naming_the_gate():
    with pytest.raises(ValueError, match=r"cannot run on torch.statevector: gate RZ \(from decomposing Hadamard\).*one input or one weight"):
        PatchQNN("digits", circuit=HZZ, n_classes=2, device="torch.statevector")


def test_the_user_circuit_passes_the_conformance_suite():
    m = _model()
    x, y = _data(8)
    report = check_model(m, "cross_entropy", (x, y), reference=_flat_loss(m, x, y)[1])
    assert report.passed, report.summary()


def test_a_first_order_route_declares_first_order_only():
    m = PatchQNN("digits", circuit=HZZ, n_classes=2, device="lightning.qubit")
    caps, _ = model_capabilities(m)
    assert m.device_choice.diff_method == "adjoint" and caps.autograd_order == 1
    x, _ = _data(2)
    ref = _model(device="default.qubit")
    ref.load_state_dict(m.double().state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=0, atol=1e-10)


# ------------------------------------------------------------------ bad input, before any device is built
def _wires_outside(inputs, weights):
    qml.RY(weights[..., 0], wires=2)
    return [qml.expval(qml.PauliZ(0)), qml.expval(qml.PauliZ(1))]


def _probs(inputs, weights):
    qml.RY(weights[..., 0], wires=0)
    return [qml.probs(wires=[0, 1])]


def _nothing(inputs, weights):
    qml.RY(weights[..., 0], wires=0)
    return []


def _scalar_only(inputs, weights):
    qml.RY(float(inputs[0]), wires=0)  # float() of one feature: no batch
    qml.RX(weights[..., 0], wires=1)
    return [qml.expval(qml.PauliZ(0)), qml.expval(qml.PauliZ(1))]


def _rows_not_angles(inputs, weights):
    qml.RY(weights[0], wires=0)  # weights[0], not weights[..., 0]: on a batch of 3 rows (3 weights) this is row 0,
    qml.RX(weights[1], wires=1)  # itself a batch of 3, so only the values show the circuit does not broadcast
    return [qml.expval(qml.PauliZ(0)), qml.expval(qml.PauliZ(1))]


def _too_many_weights(inputs, weights):
    qml.RY(weights[..., 5], wires=0)
    return [qml.expval(qml.PauliZ(0)), qml.expval(qml.PauliZ(1))]


@pytest.mark.parametrize("qfunc, match", [
    (_wires_outside, r"acts on wire\(s\) \[2\], outside 0..1"),
    (_probs, "must return expectation values"),
    (_nothing, "returns no measurement"),
    (_scalar_only, "does not broadcast over a batch"),
    (_rows_not_angles, "does not give the 3 results of its rows called one by one"),
    (_too_many_weights, r"raised IndexError when called with inputs of shape \(16,\) and weights of shape \(4,\)"),
])
def test_a_bad_circuit_is_refused_with_what_is_wrong(qfunc, match):
    n_weights = 3 if qfunc is _rows_not_angles else 4
    with pytest.raises(ValueError, match=match):
        PatchQNN("digits", circuit=QuantumFunction(qfunc, n_qubits=2, n_weights=n_weights), n_classes=2)


def test_bad_arguments_with_a_user_circuit():
    with pytest.raises(ValueError, match=r"\['layers', 'n_qubits'\] configure the built-in circuit"):
        PatchQNN("digits", circuit=HZZ, n_classes=2, layers=3, n_qubits=4)
    with pytest.raises(TypeError, match="circuit must be a QuantumFunction"):
        PatchQNN("digits", circuit=hzz)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs one observable per class"):
        PatchQNN("digits", circuit=HZZ)  # 2 scores, 10 classes, mean aggregation
    with pytest.raises(ValueError, match="n_weights must be a positive int"):
        QuantumFunction(hzz, n_qubits=2, n_weights=0)
    with pytest.raises(TypeError, match="must be a quantum function"):
        QuantumFunction("hzz", n_qubits=2, n_weights=4)
    linear = PatchQNN("digits", circuit=HZZ, aggregation="linear")  # a linear head maps 4 x 2 scores to 10
    assert linear.head is not None and linear.head.in_features == 8
