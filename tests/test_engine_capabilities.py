"""The engine chooses routes from what a model declares it can do, never from data shapes.

Regression tests for the silent failures measured on real PennyLane layers (issue 5):
TorchLayer weights not reached by the functional path (loss unchanged at a moved point, zero
gradient), a zero Hessian from double backward through adjoint QNodes, vmap chosen for models
that cannot be vmapped, ``train()`` failing to copy lightning devices, and a float64 step rule on
float32 gradients. The references are independent: the same circuit on ``default.qubit`` with
backprop, differentiated densely by ``torch.autograd.functional.hessian``.
"""

import ast
import math
import pathlib

import numpy as np
import pennylane as qml
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qlandscape as ql
from qlandscape.adapter import Capabilities, CapabilityError, ModelAdapter, ModuleInfo, model_capabilities
from qlandscape.quantum.qnode_info import float64_results
from qlandscape.second_order import FiniteDifferenceOfGradients, ForwardOverReverse, ReverseOverReverse

from .cases import N_QUBITS, _circuit, qnode, torchlayer_model, torchlayer_reference

_qnode = qnode


def _data(d: int, n: int = 6):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


def _reference(model, space, x, y):
    ref = torchlayer_reference(model, x, y)
    return lambda theta: ref(theta, space)


# ---------------------------------------------------------------- TorchLayer weights are reached
@pytest.mark.parametrize("device,diff", [("default.qubit", "backprop"), ("lightning.qubit", "adjoint")])
def test_torchlayer_weights_are_moved_by_the_functional_path(device, diff):
    model = torchlayer_model(device, diff)
    x, y = _data(N_QUBITS)
    ob = ql.Objective(model, "cross_entropy", (x, y))
    theta1 = ob.theta0.clone()
    sl = next(s for name, s, _ in ob.space.slices() if name.endswith("weights"))
    theta1[sl] += 0.3
    # the loss at a moved point is the loss of a module holding those weights (not the start's)
    moved = torchlayer_model(device, diff).double()
    torch.nn.utils.vector_to_parameters(theta1, moved.parameters())
    with float64_results(), torch.no_grad():  # PennyLane's torch interface rounds lightning results otherwise
        expected = float(F.cross_entropy(moved(x), y))
    assert ob.loss(theta1) == pytest.approx(expected, rel=1e-12)
    assert abs(ob.loss(theta1) - ob.loss()) > 1e-3
    g = ob.gradient()
    assert float(g[sl].abs().max()) > 1e-3  # the circuit block of the gradient is not zero


def test_torchlayer_functional_reach_leaves_the_layer_as_it_was():
    model = torchlayer_model()
    layer = model[0]
    weights_dict = layer.qnode_weights
    ob = ql.Objective(model, "cross_entropy", _data(N_QUBITS))
    ob.hvp(torch.ones(ob.n_params, dtype=torch.float64))
    assert layer.qnode_weights is weights_dict
    assert layer.qnode_weights["weights"] is layer.weights


# ---------------------------------------------------------------- capabilities drive the routes
def test_capabilities_of_plain_torch_modules_are_unlimited():
    caps, declared = model_capabilities(ql.MLP(4, (3,), 2))
    assert caps.autograd_order == math.inf and caps.torch_func and not caps.stochastic and declared == []
    assert model_capabilities(ql.MLP(4, (3,), 2, dropout=0.5))[0].stochastic


@pytest.mark.parametrize("device,diff,order", [("default.qubit", "backprop", math.inf),
                                               ("lightning.qubit", "adjoint", 1),
                                               ("lightning.qubit", "best", 1),
                                               ("default.qubit", "parameter-shift", 1)])
def test_qnode_layers_declare_their_exact_derivative_order(device, diff, order):
    caps, _ = model_capabilities(torchlayer_model(device, diff))
    assert caps.autograd_order == order
    assert not caps.torch_func
    assert any(device in n for n in caps.notes)


def test_complex64_simulator_declares_float32_precision_and_fd_uses_its_step():
    model = torchlayer_model("lightning.qubit", "adjoint", c_dtype=np.complex64)
    ob = ql.Objective(model, "cross_entropy", _data(N_QUBITS))
    assert ob.adapter.capabilities.precision == torch.float32
    assert isinstance(ob.provider, FiniteDifferenceOfGradients)
    assert ob.provider.step_for(torch.float64) == pytest.approx(torch.finfo(torch.float32).eps ** (1 / 3))


def test_auto_never_picks_double_backward_for_adjoint_qnodes():
    ob = ql.Objective(torchlayer_model("lightning.qubit", "adjoint"), "cross_entropy", _data(N_QUBITS))
    assert isinstance(ob.provider, FiniteDifferenceOfGradients)
    assert "first derivatives only" in ob.provenance()["second_order_reason"]


@pytest.mark.parametrize("forced", ["reverse", "forward"])
def test_forcing_double_backward_through_adjoint_raises_naming_the_way_out(forced):
    with pytest.raises(CapabilityError, match="finite-difference"):
        ql.Objective(torchlayer_model("lightning.qubit", "adjoint"), "cross_entropy", _data(N_QUBITS),
                     second_order=forced)


def test_forward_over_reverse_refused_where_torch_func_does_not_run():
    with pytest.raises(CapabilityError, match="torch.func"):
        ql.Objective(torchlayer_model(), "cross_entropy", _data(N_QUBITS), second_order="forward")


def test_multi_chunk_qnode_objective_uses_double_backward_not_torch_func():
    ob = ql.Objective(torchlayer_model(), "cross_entropy", _data(N_QUBITS), batch_size=2)
    assert isinstance(ob.provider, ReverseOverReverse)
    # several chunks whose graphs do not fit the memory budget: forward-over-reverse where torch.func runs
    ob_mlp = ql.Objective(ql.MLP(2, (3,), 2), "cross_entropy", _data(2), batch_size=2, memory_budget=0)
    assert isinstance(ob_mlp.provider, ForwardOverReverse)


def test_vectorize_auto_never_vmaps_a_qnode_model_and_true_is_refused():
    ob = ql.Objective(torchlayer_model(), "cross_entropy", _data(N_QUBITS, n=4))
    pts = torch.stack([ob.theta0, ob.theta0 + 0.1])
    losses, _ = ob.evaluate_many(pts, vectorize="auto")
    assert float(losses[0]) == ob.loss()
    with pytest.raises(CapabilityError, match="vectorize=False"):
        ob.evaluate_many(pts, vectorize=True)


class _UndeclaredAdjoint(nn.Module):
    """A user-written module that calls a global adjoint QNode: nothing declares it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(2, N_QUBITS, 2, dtype=torch.float64))

    def forward(self, x):
        return torch.stack(_GLOBAL_ADJOINT(x, self.w), dim=-1)


_GLOBAL_ADJOINT = _qnode("lightning.qubit", "adjoint")


def test_an_undeclared_qnode_called_in_forward_is_found_by_the_probe():
    ob = ql.Objective(_UndeclaredAdjoint(), "cross_entropy", _data(N_QUBITS))
    assert ob.adapter.capabilities.autograd_order == 1
    assert isinstance(ob.provider, FiniteDifferenceOfGradients)
    with pytest.raises(CapabilityError):
        ql.Objective(_UndeclaredAdjoint(), "cross_entropy", _data(N_QUBITS), second_order="reverse")


class _FirstOrderOnly(torch.autograd.Function):
    """x**3 whose backward is computed outside autograd (like a simulator's adjoint pass)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x.detach() ** 2


class _Cubes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))

    def forward(self, x):
        return _FirstOrderOnly.apply(self.w).sum() * x.sum(dim=1)


def test_gradient_without_graph_is_an_error_not_a_zero_hessian():
    x = torch.ones(3, 1, dtype=torch.float64)
    ob = ql.Objective(_Cubes(), lambda out, t: out, (x, x[:, 0]))
    with pytest.raises(CapabilityError, match="no autograd graph"):
        ob.hvp(torch.ones(2, dtype=torch.float64))
    fd = ql.Objective(_Cubes(), lambda out, t: out, (x, x[:, 0]), second_order="finite-difference")
    assert torch.allclose(ql.dense_hessian(fd), torch.diag(6 * fd.theta0), atol=1e-8)


# ---------------------------------------------------------------- second derivatives are right
@pytest.mark.parametrize("hybrid", [False, True])
def test_adjoint_model_hessian_matches_the_backprop_reference(hybrid):
    model = torchlayer_model("lightning.qubit", "adjoint", hybrid=hybrid)
    x, y = _data(3 if hybrid else N_QUBITS)
    ob = ql.Objective(model, "cross_entropy", (x, y))
    H_ref = torch.autograd.functional.hessian(_reference(model, ob.space, x, y), ob.theta0.clone())
    H = ql.dense_hessian(ob)
    # central differences of exact float64 gradients: relative error ~ eps^(2/3) ~ 4e-11 of |H|;
    # 1e-7 leaves room for the third-derivative constant of the circuit
    assert float((H - H_ref).abs().max()) <= 1e-7 * float(H_ref.abs().max())
    assert float(H_ref.abs().max()) > 0.05  # the reference is not trivially zero


def test_backprop_model_hessian_matches_param_shift_hessian():
    """Dense engine Hessian vs PennyLane's own param_shift_hessian + chain rule (a loss linear in
    the expectation values, so the chain rule is exact): independent second-order route."""
    torch.manual_seed(1)
    layer = qml.qnn.TorchLayer(_qnode(), {"weights": (2, N_QUBITS, 2)})
    model = nn.Sequential(layer)
    x, y = _data(N_QUBITS, n=3)
    c = torch.tensor([0.7, -1.3], dtype=torch.float64)
    ob = ql.Objective(model, lambda out, t: out @ c, (x, y))
    H = ql.dense_hessian(ob)
    w = ob.theta0.reshape(2, N_QUBITS, 2).detach().numpy()
    H_ps = 0.0
    for xi in x.numpy():
        qn = qml.QNode(_circuit, qml.device("default.qubit", wires=N_QUBITS), diff_method="parameter-shift")
        hs = qml.gradients.param_shift_hessian(qn)(qml.numpy.array(xi, requires_grad=False),
                                                   qml.numpy.array(w, requires_grad=True))
        H_ps = H_ps + sum(float(c[k]) * torch.as_tensor(hs[k]).reshape(8, 8) for k in range(N_QUBITS))
    assert torch.allclose(H, H_ps / x.shape[0], atol=1e-10)


# ---------------------------------------------------------------- copying and training
def test_train_works_on_lightning_models_and_leaves_the_original_unchanged():
    model = torchlayer_model("lightning.qubit", "adjoint")
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _data(N_QUBITS, n=8)
    trained, res = ql.train(model, (x.float(), y), epochs=2, batch_size=4, lr=0.1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not torch.equal(next(trained.parameters()), before[0])
    assert res.trajectory.shape[0] == 3


class _Unpicklable:
    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle 'StateVectorC128' object")


class _NativeHolder(nn.Module):
    def __init__(self, declare: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.native = _Unpicklable()
        self.declare = declare

    def forward(self, x):
        return self.lin(x)

    def qlandscape_module_info(self) -> ModuleInfo:
        return ModuleInfo(Capabilities(), shared=(self.native,) if self.declare else ())


def test_copy_shares_declared_native_state_and_names_the_fix_otherwise():
    m = _NativeHolder(declare=True)
    c = ql.copy_module(m)
    assert c.native is m.native and c.lin is not m.lin
    with pytest.raises(TypeError, match="ModuleInfo.shared"):
        ql.copy_module(_NativeHolder(declare=False))


# ---------------------------------------------------------------- architecture
ENGINE = ["adapter.py", "objective.py", "second_order.py", "params.py", "losses.py", "curvature", "landscape",
          "train.py", "trainability.py", "ntk/kernel.py", "ntk/distance.py", "ntk/linearized.py", "ntk/dynamics.py",
          "ntk/spawn.py", "adversarial/attacks.py", "adversarial/sharpness.py", "merging/permutation.py",
          "merging/align.py", "merging/merge.py"]


def test_engine_modules_never_import_quantum_or_pennylane():
    root = pathlib.Path(ql.__file__).parent
    files = [p for e in ENGINE for p in ([root / e] if e.endswith(".py") else sorted((root / e).glob("*.py")))]
    assert len(files) >= 10
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert "quantum" not in n and not n.startswith("pennylane"), f"{f.name} imports {n}"


def test_model_adapter_apply_equals_forward_for_a_classical_model():
    torch.manual_seed(0)
    m = ql.MLP(4, (5,), 3).double()
    a = ModelAdapter(m)
    x = torch.randn(7, 4, dtype=torch.float64)
    assert torch.equal(a.apply(a.theta0, x), m(x))
