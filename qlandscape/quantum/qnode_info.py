"""What the engine needs to know about PennyLane QNodes inside torch modules.

Registered with :func:`qlandscape.adapter.register_inspector` when :mod:`qlandscape.quantum`
is imported, so the engine learns about QNodes without importing this package:

* **derivative order**: autograd through a QNode is exact to any order only with
  ``diff_method="backprop"``; ``"adjoint"`` (and ``"best"`` on lightning devices, which
  resolves to it) and first-order ``"parameter-shift"`` give exact *first* derivatives, and
  autograd second derivatives through them are silently wrong (exactly the Gauss-Newton
  part, or zero for a loss linear in the outputs), so they declare order 1;
  ``"parameter-shift"`` with ``max_diff=2`` declares order 2.
* ``torch.func`` transforms do not run through QNodes (PennyLane converts and inspects
  tensors in Python), so QNode modules declare ``torch_func=False``.
* **precision**: a ``complex64`` simulator limits outputs to float32 resolution, which is
  what a finite-difference step rule must use.
* ``qml.qnn.TorchLayer`` keeps its weights in a plain dict (``qnode_weights``) that
  ``torch.func.functional_call`` cannot reach; its :class:`ModuleInfo` carries a context
  that makes the layer read its (swapped) registered parameters instead, so the engine moves
  the weights it claims to move.
* **float32 results from float64 simulators**: PennyLane 0.45's torch interface converts the
  results (values and Jacobians) of non-backprop devices such as ``lightning.qubit`` with
  torch's *default* dtype, so with the usual float32 default a complex128 simulation comes
  back rounded to float32 (measured: ``cos`` of a float64 angle off by 2e-8, gradients by
  5e-8). The context of every QNode module sets the default dtype to float64 while the
  engine evaluates it (the Jacobian is converted during the forward, so this covers
  backward passes too).
* simulator devices hold native state that cannot be deep-copied; copies share them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, Iterator, Optional

import numpy as np
import pennylane as qml
import torch
from torch import nn

from ..adapter import Capabilities, ModuleInfo, register_inspector, register_probe

_FIRST_ORDER = {"adjoint", "device", "finite-diff", "spsa", "hadamard", "reversed-hadamard"}


def device_name(device: Any) -> str:
    """Short name of a PennyLane device, e.g. ``"lightning.qubit"``."""
    return str(getattr(device, "short_name", None) or getattr(device, "name", type(device).__name__))


def device_precision(device: Any) -> Optional[torch.dtype]:
    """Real dtype limiting a device's outputs: float32 for ``complex64`` simulators, else None
    (the outputs follow the dtype of the parameters, e.g. ``default.qubit`` with float64)."""
    c_dtype = getattr(device, "c_dtype", None) or getattr(device, "_c_dtype", None)
    if c_dtype is not None and np.dtype(c_dtype) == np.complex64:
        return torch.float32
    return None


def resolved_diff_method(qnode: qml.QNode) -> str:
    """The differentiation method a QNode uses; ``"best"`` resolved as PennyLane resolves it
    for the torch interface (device derivatives on lightning, backprop on default.qubit)."""
    method = qnode.diff_method
    if method is None:  # evaluation only: no derivatives at all
        return "none"
    if not isinstance(method, str):  # a gradient transform object
        return getattr(method, "__name__", str(method))
    if method != "best":
        return method
    name = device_name(qnode.device)
    if name.startswith("lightning"):
        return "adjoint"
    if name.startswith("default."):
        return "backprop"
    return "parameter-shift"


def qnode_capabilities(qnode: qml.QNode, where: str = "QNode") -> Capabilities:
    """Capabilities of one QNode, see the module docstring.

    Parameters
    ----------
    qnode : qml.QNode
    where : str
        Label used in the capability notes (e.g. the module's name).
    """
    method = resolved_diff_method(qnode)
    name = device_name(qnode.device)
    if method == "backprop":
        order: float = math.inf
        why = "backprop: autograd exact to any order"
    elif method == "parameter-shift":
        order = float(qnode.execute_kwargs.get("max_diff", 1))
        why = (f"parameter-shift with max_diff={int(order)}: autograd exact to order {int(order)}"
               + ("" if order >= 2 else " (pass max_diff=2 for exact second derivatives)"))
    elif method in _FIRST_ORDER:
        order = 1.0
        why = f"{method}: exact first derivatives only (autograd second derivatives would be wrong)"
    elif method == "none":
        order = 1.0  # never differentiated itself; reported conservatively for the layer that calls it
        why = "diff_method=None (evaluation only): treated as first-order only"
    else:
        order = 1.0
        why = f"diff_method {method!r}: treated as first-order only"
    precision = device_precision(qnode.device)
    if precision is not None:
        why += f"; outputs limited to {str(precision).replace('torch.', '')} precision"
    return Capabilities(autograd_order=order, torch_func=False, precision=precision,
                        copyable=True, notes=(f"{where} on {name} ({why})",))


class _LiveWeights(Mapping):
    """``TorchLayer.qnode_weights`` view reading the layer's registered parameters at access
    time, so ``functional_call``'s swapped tensors are the ones the QNode receives."""

    def __init__(self, layer: nn.Module, keys: list[str]) -> None:
        self._layer = layer
        self._keys = keys

    def __getitem__(self, key: str) -> torch.Tensor:
        value = self._layer._parameters[key]
        if value is None:  # a parameter slot set to None: TorchLayer's weights never are
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run with torch's default dtype set to ``dtype`` (a no-op for non-float dtypes or when it is
    already the default), so PennyLane's torch interface converts device results in ``dtype`` (see
    module notes). Process-global while it lasts: not safe across threads."""
    before = torch.get_default_dtype()
    if not dtype.is_floating_point or dtype == before:
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def float64_results() -> contextlib.AbstractContextManager[None]:
    """Make PennyLane's torch interface convert device results with float64 (see module notes)."""
    return default_dtype(torch.float64)


@contextlib.contextmanager
def _qnode_module_context(module: nn.Module) -> Iterator[None]:
    with float64_results():
        yield


@contextlib.contextmanager
def _torchlayer_context(layer: nn.Module) -> Iterator[None]:
    own = layer.__dict__["qnode_weights"]
    layer.__dict__["qnode_weights"] = _LiveWeights(layer, list(own))
    try:
        with float64_results():
            yield
    finally:
        layer.__dict__["qnode_weights"] = own


def _qnodes_held(module: nn.Module) -> list[tuple[str, qml.QNode]]:
    """QNodes a module keeps as attributes (directly or in a list/tuple/dict attribute)."""
    found = []
    for key, value in vars(module).items():
        if isinstance(value, qml.QNode):
            found.append((key, value))
        elif isinstance(value, (list, tuple)):
            found += [(f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, qml.QNode)]
        elif isinstance(value, dict) and key not in ("_parameters", "_buffers", "_modules"):
            found += [(f"{key}[{k!r}]", v) for k, v in value.items() if isinstance(v, qml.QNode)]
    return found


@register_inspector
def inspect_qnode_module(module: nn.Module) -> Optional[ModuleInfo]:
    """ModuleInfo for ``qml.qnn.TorchLayer`` and for any module holding QNodes as attributes."""
    held = _qnodes_held(module)
    if not held:
        return None
    caps = Capabilities()
    for key, qnode in held:
        caps = caps.combine(qnode_capabilities(qnode, f"{type(module).__name__}.{key}"))
    shared = tuple({id(q.device): q.device for _, q in held}.values())
    context = _torchlayer_context if isinstance(module, qml.qnn.TorchLayer) else _qnode_module_context
    return ModuleInfo(capabilities=caps, context=context, shared=shared)


@register_probe
@contextlib.contextmanager
def record_qnode_calls() -> Iterator[list[ModuleInfo]]:
    """Probe: every QNode executed during a forward pass, wherever it is held (a global, a
    closure), reported as a :class:`ModuleInfo`, so an undeclared adjoint QNode cannot make
    the engine take autograd second derivatives through it."""
    found: list[ModuleInfo] = []
    seen: dict[int, qml.QNode] = {}
    original = qml.QNode.__call__

    def recording_call(self: qml.QNode, *args: Any, **kwargs: Any) -> Any:
        seen[id(self)] = self
        return original(self, *args, **kwargs)

    qml.QNode.__call__ = recording_call  # type: ignore[method-assign]
    try:
        yield found
    finally:
        qml.QNode.__call__ = original  # type: ignore[method-assign]
        for q in seen.values():
            found.append(ModuleInfo(capabilities=qnode_capabilities(q, "QNode called in forward"),
                                    context=_qnode_module_context, shared=(q.device,)))
