"""Registry of tiny models shared by the conformance tests.

Every case gives a model, a loss spec, data, and an INDEPENDENT reference full-data loss
``reference(theta) -> scalar`` written directly with torch ops (no qlandscape code), so that
``torch.func.hessian(reference)`` is an exact float64 reference for the engine.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


@dataclass
class Case:
    name: str
    model: nn.Module
    loss: object
    x: Tensor
    y: Tensor
    reference: Callable[[Tensor, "object"], Tensor]  # (theta, space) -> full-data mean loss


def _mlp(seed: int = 0, act: type = nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), act(), nn.Linear(6, 3))


def _data(n: int = 23, d: int = 5, classes: int = 3, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _ref_from_module(model: nn.Module, x: Tensor, y: Tensor, loss: Callable[[Tensor, Tensor], Tensor],
                     train: bool = False) -> Callable[[Tensor, object], Tensor]:
    m64 = copy.deepcopy(model).double()
    m64.train(train)
    x64 = x.double()

    def ref(theta: Tensor, space) -> Tensor:  # type: ignore[no-untyped-def]
        params = dict(m64.named_parameters())
        offs = 0
        new = {}
        for name, shape in zip(space.names, space.shapes):
            k = int(torch.Size(shape).numel())
            new[name] = theta[offs:offs + k].reshape(shape)
            offs += k
        buffers = {k: v.clone() for k, v in m64.named_buffers()}
        return loss(functional_call(m64, ({**params, **new}, buffers), (x64,)), y)

    return ref


def mlp_case() -> Case:
    model = _mlp()
    x, y = _data()
    return Case("mlp-tanh", model, "cross_entropy", x, y,
                _ref_from_module(model, x, y, lambda o, t: F.cross_entropy(o, t)))


def mlp_mse_case() -> Case:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Softplus(), nn.Linear(5, 2))
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(17, 4, generator=g), torch.randn(17, 2, generator=g)
    return Case("mlp-mse", model, "mse", x, y, _ref_from_module(model, x, y, lambda o, t: F.mse_loss(o, t.double())))


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def cnn_case() -> Case:
    torch.manual_seed(5)
    model = TinyCNN()
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(11, 1, 4, 4, generator=g), torch.randint(0, 3, (11,), generator=g)
    return Case("cnn", model, nn.CrossEntropyLoss(), x, y,
                _ref_from_module(model, x, y, lambda o, t: F.cross_entropy(o, t)))


def bn_case() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))


def bn_eval_case() -> Case:
    model = bn_case()
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    x, y = _data()
    return Case("batchnorm-eval", model, "cross_entropy", x, y,
                _ref_from_module(model, x, y, lambda o, t: F.cross_entropy(o, t)))


# ------------------------------------------------------------------ quantum models
N_QUBITS = 2


def _circuit(inputs, weights):  # type: ignore[no-untyped-def]
    import pennylane as qml
    qml.AngleEmbedding(inputs, wires=range(N_QUBITS))
    for layer in range(weights.shape[0]):
        for q in range(N_QUBITS):
            qml.RY(weights[layer, q, 0], wires=q)
            qml.RX(weights[layer, q, 1], wires=q)
        qml.CNOT(wires=[0, 1])
    return [qml.expval(qml.PauliZ(q)) for q in range(N_QUBITS)]


def qnode(device: str = "default.qubit", diff_method: str = "backprop", **kw):  # type: ignore[no-untyped-def]
    import pennylane as qml
    return qml.QNode(_circuit, qml.device(device, wires=N_QUBITS, **kw), interface="torch", diff_method=diff_method)


def torchlayer_model(device: str = "default.qubit", diff_method: str = "backprop", hybrid: bool = False,
                     seed: int = 0, **kw) -> nn.Module:  # type: ignore[no-untyped-def]
    """What a new user writes: ``qml.qnn.TorchLayer`` inside ``nn.Sequential``."""
    import pennylane as qml
    torch.manual_seed(seed)
    layer = qml.qnn.TorchLayer(qnode(device, diff_method, **kw), {"weights": (2, N_QUBITS, 2)})
    if hybrid:
        return nn.Sequential(nn.Linear(3, N_QUBITS), nn.Tanh(), layer, nn.Linear(N_QUBITS, 2))
    return nn.Sequential(layer, nn.Linear(N_QUBITS, 2))


def torchlayer_reference(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[Tensor, object], Tensor]:
    """Mean cross-entropy of a :func:`torchlayer_model` network with its circuit on default.qubit
    (backprop), written without the engine: parameters sliced from theta by hand, layers applied
    with plain torch ops."""
    circuit = qnode()
    mods = list(model)
    x64 = x.double()

    def ref(theta: Tensor, space) -> Tensor:  # type: ignore[no-untyped-def]
        offs, p = 0, {}
        for name, shape in zip(space.names, space.shapes):
            k = int(torch.Size(shape).numel())
            p[name] = theta[offs:offs + k].reshape(shape)
            offs += k
        h = x64
        for i, m in enumerate(mods):
            if isinstance(m, nn.Linear):
                h = h @ p[f"{i}.weight"].T + p[f"{i}.bias"]
            elif isinstance(m, nn.Tanh):
                h = torch.tanh(h)
            else:
                h = torch.stack(circuit(h, p[f"{i}.weights"]), dim=-1)
        return F.cross_entropy(h, y)

    return ref


def _qdata(d: int, n: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


def torchlayer_case() -> Case:
    model = torchlayer_model()
    x, y = _qdata(N_QUBITS)
    return Case("torchlayer-default.qubit", model, "cross_entropy", x, y, torchlayer_reference(model, x, y))


def torchlayer_lightning_hybrid_case() -> Case:
    model = torchlayer_model("lightning.qubit", "adjoint", hybrid=True)
    x, y = _qdata(3)
    return Case("torchlayer-lightning-hybrid", model, "cross_entropy", x, y, torchlayer_reference(model, x, y))


def tiny_patch_qnn(device: str = "default.qubit", seed: int = 0) -> nn.Module:
    """4x4 images, four 2x2 patches (stride 2), 2 qubits per patch, one layer, 3 classes."""
    from qlandscape import PatchQNN
    return PatchQNN("digits", device=device, image_shape=(4, 4), patch_size=2, stride=2, n_qubits=2,
                    layers=1, n_classes=3, coefficient=3.0, seed=seed)


def _images(n: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(8)
    return torch.randn(n, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _patch_qnn_reference(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[Tensor, object], Tensor]:
    """The same network on default.qubit (backprop) evaluated by torch's own functional_call,
    bypassing the engine's adapter, providers and chunking."""
    ref_model = tiny_patch_qnn("default.qubit").double()
    ref_model.load_state_dict(model.state_dict())

    def ref(theta: Tensor, space) -> Tensor:  # type: ignore[no-untyped-def]
        return F.cross_entropy(functional_call(ref_model, space.unflatten(theta), (x,)), y)

    return ref


def patch_qnn_case() -> Case:
    model = tiny_patch_qnn("default.qubit")
    x, y = _images()
    return Case("patch-qnn-default.qubit", model, "cross_entropy", x, y, _patch_qnn_reference(model, x, y))


def patch_qnn_torch_case() -> Case:
    model = tiny_patch_qnn("torch.statevector")
    x, y = _images()
    return Case("patch-qnn-torch.statevector", model, "cross_entropy", x, y, _patch_qnn_reference(model, x, y))


def patch_qnn_lightning_case() -> Case:
    model = tiny_patch_qnn("lightning.qubit")
    x, y = _images()
    return Case("patch-qnn-lightning.qubit", model, "cross_entropy", x, y, _patch_qnn_reference(model, x, y))


ALL_CASES = [mlp_case, mlp_mse_case, cnn_case]
"""Classical cases whose references are plain torch functions (``torch.func.hessian`` works)."""

CONFORMANCE_CASES = [mlp_case, mlp_mse_case, cnn_case, bn_eval_case, torchlayer_case,
                     torchlayer_lightning_hybrid_case, patch_qnn_case, patch_qnn_torch_case, patch_qnn_lightning_case]
"""Every model adapter the package supports: classical, user-written TorchLayer, patch QNN."""


def least_squares(n_samples: int = 40, dim: int = 6, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """Linear regression ``y ~ w.x`` with MSE: Hessian is exactly ``(2/N) X^T X`` everywhere."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_samples, dim, generator=g, dtype=torch.float64)
    y = torch.randn(n_samples, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(dim, 1, bias=False).double()
    H = 2.0 / n_samples * X.T @ X
    return model, X, y, H


def spectrum_matrix(eigenvalues: Tensor, seed: int = 0) -> Tensor:
    """A dense symmetric matrix with exactly the given eigenvalues (random orthogonal basis)."""
    n = eigenvalues.numel()
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = (U * eigenvalues.double()) @ U.T
    return 0.5 * (A + A.T)
