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


ALL_CASES = [mlp_case, mlp_mse_case, cnn_case]


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
