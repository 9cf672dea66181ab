"""Model adapter: a pure ``apply(theta, x)`` over a :class:`ParamSpace`, plus what the model
declares it can do (its derivative capabilities).

The engine never asks whether a model is quantum. It asks the adapter:

* ``apply(theta, x)``: the model's output with the selected parameters replaced by the flat
  vector ``theta`` (shape ``(n,)``), without touching the user's module;
* ``capabilities``: the highest autograd derivative order that is exact, whether
  ``torch.func`` transforms (vmap, jvp, grad) work, the numerical precision of the outputs,
  whether the module can be deep-copied, whether it is stochastic;
* ``copy_module()``: a trainable copy that shares what cannot or should not be copied
  (simulator devices).

Plain torch modules get their capabilities automatically (exact to any order, ``torch.func``
ready). Modules that are different say so, either through a method
``qlandscape_module_info(self) -> ModuleInfo`` or through an inspector registered with
:func:`register_inspector` (this is how :mod:`qlandscape.quantum` describes PennyLane QNodes
and ``qml.qnn.TorchLayer`` without the engine importing it).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Iterable, Iterator, Optional, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .params import ParamSelector, ParamSpace

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class CapabilityError(ValueError):
    """A route (second-order provider, vectorization, copying) needs something the model does
    not declare it can do; the message names the alternatives."""


@dataclass(frozen=True)
class Capabilities:
    """What a model (or one of its modules) can do, as the engine needs to know it.

    Attributes
    ----------
    autograd_order : float
        Highest order of derivatives that autograd computes *exactly* through the model
        (``math.inf`` for ordinary torch ops; 1 for a layer whose backward is an adjoint or
        first-order parameter-shift rule, whose autograd second derivatives are silently
        wrong; 2 for ``max_diff=2`` parameter-shift).
    torch_func : bool
        Whether ``torch.func`` transforms (``vmap``, ``jvp``, ``grad``) run through it.
    precision : torch.dtype or None
        Real dtype whose resolution limits the outputs (e.g. float32 for a complex64
        simulator), or None when it follows the objective's dtype.
    copyable : bool
        Whether ``copy.deepcopy`` works on it.
    stochastic : bool
        Whether its training-mode forward draws random numbers (Dropout).
    notes : tuple of str
        Which module limited which capability, for error messages and provenance.
    """

    autograd_order: float = math.inf
    torch_func: bool = True
    precision: Optional[torch.dtype] = None
    copyable: bool = True
    stochastic: bool = False
    notes: tuple[str, ...] = ()

    def combine(self, other: "Capabilities") -> "Capabilities":
        """Capabilities of a model made of both parts: the weaker of each."""
        return Capabilities(
            autograd_order=min(self.autograd_order, other.autograd_order),
            torch_func=self.torch_func and other.torch_func,
            precision=_coarser(self.precision, other.precision),
            copyable=self.copyable and other.copyable,
            stochastic=self.stochastic or other.stochastic,
            notes=self.notes + tuple(n for n in other.notes if n not in self.notes))

    def as_dict(self) -> dict[str, Any]:
        return dict(autograd_order=self.autograd_order if math.isfinite(self.autograd_order) else "inf",
                    torch_func=self.torch_func,
                    precision=None if self.precision is None else str(self.precision).replace("torch.", ""),
                    copyable=self.copyable, stochastic=self.stochastic, notes=list(self.notes))


def _coarser(a: Optional[torch.dtype], b: Optional[torch.dtype]) -> Optional[torch.dtype]:
    if a is None:
        return b
    if b is None:
        return a
    return a if torch.finfo(a).eps >= torch.finfo(b).eps else b


@dataclass(frozen=True)
class ModuleInfo:
    """What a module declares about itself.

    Attributes
    ----------
    capabilities : Capabilities
    context : callable, optional
        ``context(module) -> context manager`` entered around every functional evaluation: for
        modules that keep weights outside their registered parameters (``qml.qnn.TorchLayer``
        keeps them in ``qnode_weights``, which ``torch.func.functional_call`` cannot reach), or
        that need a setting to compute at full precision.
    shared : tuple
        Objects that a copy of the model shares instead of deep-copying (simulator devices
        holding native state that cannot be pickled).
    provenance : dict
        JSON-able facts recorded in every result's provenance (e.g. which simulator was chosen
        and why).
    """

    capabilities: Capabilities = field(default_factory=Capabilities)
    context: Optional[Callable[[nn.Module], ContextManager[None]]] = None
    shared: tuple[Any, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)


Inspector = Callable[[nn.Module], Optional[ModuleInfo]]
"""``module -> ModuleInfo`` for modules the inspector knows, else None."""

_INSPECTORS: list[Inspector] = []

Probe = Callable[[], ContextManager[list[ModuleInfo]]]
"""A context manager factory that, around one forward pass, records what was executed (e.g.
every QNode called, including ones no module declares) and yields a list it fills with the
corresponding :class:`ModuleInfo` entries."""

_PROBES: list[Probe] = []


def register_inspector(inspector: Inspector) -> Inspector:
    """Register a function that describes modules the engine cannot inspect by itself
    (returns None for modules it does not know). Usable as a decorator."""
    if inspector not in _INSPECTORS:
        _INSPECTORS.append(inspector)
    return inspector


def register_probe(probe: Probe) -> Probe:
    """Register a forward-pass probe (see :data:`Probe`); usable as a decorator."""
    if probe not in _PROBES:
        _PROBES.append(probe)
    return probe


def module_info(module: nn.Module) -> ModuleInfo:
    """Declared information of one module (its own method, a registered inspector, or the
    defaults of a plain torch module)."""
    own = getattr(module, "qlandscape_module_info", None)
    if callable(own):
        info = own()
        if not isinstance(info, ModuleInfo):
            raise TypeError(f"{type(module).__name__}.qlandscape_module_info() must return a ModuleInfo, "
                            f"got {type(info).__name__}")
        return info
    for inspect in _INSPECTORS:
        info = inspect(module)
        if info is not None:
            return info
    if isinstance(module, _DROPOUT_TYPES) and module.p > 0:
        return ModuleInfo(Capabilities(stochastic=True, notes=(f"{type(module).__name__}: random in train mode",)))
    return ModuleInfo()


def model_capabilities(model: nn.Module) -> tuple[Capabilities, list[tuple[str, nn.Module, ModuleInfo]]]:
    """Combined capabilities of every submodule, and the modules that declared something."""
    caps = Capabilities()
    declared = []
    for name, m in model.named_modules():
        info = module_info(m)
        if info != ModuleInfo():
            declared.append((name, m, info))
            prefix = f"{name or type(model).__name__}: "
            c = info.capabilities
            caps = caps.combine(replace(c, notes=tuple(n if n.startswith(prefix) else prefix + n for n in c.notes)))
    return caps, declared


def copy_module(model: nn.Module, shared: Iterable[Any] = ()) -> nn.Module:
    """A deep copy of ``model`` that shares the objects its modules declare as shared
    (simulator devices), and ``shared``, so models on native simulators can be trained on a copy."""
    _, declared = model_capabilities(model)
    memo: dict[int, Any] = {id(o): o for o in shared}
    memo.update({id(o): o for _, _, info in declared for o in info.shared})
    try:
        return copy.deepcopy(model, memo)
    except Exception as exc:  # pickling errors of native objects come in many types
        raise TypeError(
            f"cannot copy {type(model).__name__}: {exc}. A module that holds native simulator state must "
            "declare it through qlandscape_module_info() (ModuleInfo.shared) or register_inspector()") from exc


def _has_tied_tensors(model: nn.Module) -> bool:
    """Whether one parameter or buffer is registered under more than one name."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return len({id(t) for _, t in named}) < len(named)


class ModelAdapter:
    """A model seen as a pure function of a flat parameter vector.

    Parameters
    ----------
    model : nn.Module
        Any torch model; it is only read.
    params : ParamSelector
        Which parameters span the flat vector (default: all with ``requires_grad``).
    dtype : torch.dtype or None
        Floating dtype for parameters, buffers and inputs; None keeps the model's.
    device : torch.device or str, optional
        Default: the device of the model's first parameter.

    Attributes
    ----------
    space : ParamSpace
    theta0 : Tensor, shape (n,)
        The selected parameters' values at construction (a detached copy).
    capabilities : Capabilities
    """

    def __init__(self, model: nn.Module, params: ParamSelector = None,
                 dtype: Optional[torch.dtype] = torch.float64,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        first = next(iter(model.parameters()), None)
        if first is None:
            raise ValueError("the model has no parameters")
        self.model = model
        self.device = torch.device(device) if device is not None else first.device
        self.dtype: torch.dtype = dtype if dtype is not None else first.dtype
        self.space = ParamSpace.from_module(model, params)
        self.capabilities, self._declared = model_capabilities(model)
        self._contexts = [(m, info.context) for _, m, info in self._declared if info.context is not None]
        selected = set(self.space.names)
        self._fixed = {n: self.cast(p.detach()).clone() for n, p in model.named_parameters() if n not in selected}
        self._buffers = {n: self.cast(b.detach()).clone() for n, b in model.named_buffers()}
        self._tied = _has_tied_tensors(model)
        self.theta0: Tensor = self.space.from_module_values(model).to(self.device, self.dtype)

    @property
    def n_params(self) -> int:
        return self.space.size

    @property
    def buffers(self) -> dict[str, Tensor]:
        """The model's buffers (cast), as used in eval mode."""
        return self._buffers

    def cast(self, t: Tensor) -> Tensor:
        """Move ``t`` to the adapter's device, and floating tensors to its dtype."""
        t = t.to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    def with_dtype(self, dtype: torch.dtype) -> "ModelAdapter":
        """A copy whose fixed parameters, buffers and reference point are cast to ``dtype``."""
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        other = copy.copy(self)
        other.dtype = dtype
        other._fixed = {k: other.cast(v) for k, v in self._fixed.items()}
        other._buffers = {k: other.cast(v) for k, v in self._buffers.items()}
        other.theta0 = self.theta0.to(dtype)
        return other

    @contextlib.contextmanager
    def mode(self, train: bool) -> Iterator[None]:
        """Set every submodule's train/eval flag, restoring each one's own flag afterwards."""
        flags = [(m, m.training) for m in self.model.modules()]
        self.model.train(train)
        try:
            yield
        finally:
            for m, f in flags:
                m.training = f

    def apply(self, theta: Tensor, x: Tensor, buffers: Optional[dict[str, Tensor]] = None) -> Tensor:
        """Model output with the selected parameters set to ``theta``.

        Parameters
        ----------
        theta : Tensor, shape (n,)
        x : Tensor, shape (B, ...)
            Inputs, already cast (see :meth:`cast`).
        buffers : dict, optional
            Buffers to use (train-mode callers pass private copies, so running statistics
            never leak); default: the model's buffers.

        Returns
        -------
        Tensor, shape (B, ...): whatever the module's ``forward`` returns.
        """
        tensors = self.space.unflatten(theta)
        if self._fixed:
            tensors.update(self._fixed)
        tensors.update(self._buffers if buffers is None else buffers)
        with self.contexts():
            # untying costs ~4% of a small MLP's forward; only models that share a tensor need it
            return functional_call(self.model, tensors, (x,), tie_weights=self._tied)

    @contextlib.contextmanager
    def contexts(self) -> Iterator[None]:
        """The contexts the model's modules declare for evaluation (see :class:`ModuleInfo`)."""
        with contextlib.ExitStack() as stack:
            for m, ctx in self._contexts:
                stack.enter_context(ctx(m))
            yield

    def probe(self, x: Tensor) -> None:
        """Run one forward pass on ``x`` (one sample is enough) under every registered probe and
        fold what they found into :attr:`capabilities`: layers called from ``forward`` that no
        module declares (a QNode held in a global, say) still limit the routes the engine takes."""
        if not _PROBES:
            return
        with contextlib.ExitStack() as stack:
            found = [stack.enter_context(p()) for p in _PROBES]
            # no_grad keeps the probe cheap (an adjoint QNode would also compute its Jacobian); a layer
            # that switches to an evaluation-only QNode there is reported conservatively (first order)
            with torch.no_grad(), self.mode(False):
                self.apply(self.theta0, x)
        # a finding about an object a module already declares (its simulator device) is that module's business
        declared = {id(o) for _, _, info in self._declared for o in info.shared}
        for infos in found:
            for info in infos:
                if info.shared and all(id(o) in declared for o in info.shared):
                    continue
                self.capabilities = self.capabilities.combine(info.capabilities)
                self._declared.append(("<probe>", self.model, info))
                if info.context is not None:
                    self._contexts.append((self.model, info.context))

    def copy_module(self) -> nn.Module:
        """A trainable copy of the model (see :func:`copy_module`); also shares what probes found."""
        return copy_module(self.model, [o for _, _, info in self._declared for o in info.shared])

    def describe(self) -> dict[str, Any]:
        """Capabilities and the modules that declared them (recorded in provenance)."""
        modules = {name or "<model>": info.provenance for name, _, info in self._declared if info.provenance}
        return dict(self.capabilities.as_dict(), model=type(self.model).__name__, modules=modules)
