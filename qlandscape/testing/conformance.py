"""Conformance suite every model adapter must pass, shipped in the package.

Run it on any model before trusting the engine's numbers on it (the project's tests run it over
a registry of classical and quantum models)::

    report = qlandscape.testing.check_model(model, "cross_entropy", (x, y))
    report.raise_if_failed()

Each check compares the engine with a route that does not share its code path:

=============================  ==================================================================
check                          reference
=============================  ==================================================================
functional_equals_forward      the module's own ``forward`` (at the start AND at a moved point,
                               loaded into a copy): catches weights the functional path misses
every_parameter_moves_loss     perturbing each parameter tensor changes the loss
gradient_equals_backward       ``loss.backward()`` on a copy of the module, and central
                               differences of the loss along random directions
hvp_equals_reference           a dense Hessian of an independent ``reference(theta)`` (if given),
                               else central differences of gradients
hvp_symmetric_and_linear       ``u.Hv == v.Hu`` and ``H(a u + b v) == a Hu + b Hv``
scan_centre_equals_loss        ``scan_1d`` at 0 equals ``Objective.loss()`` exactly
auto_choices_run               ``second_order="auto"``, ``vectorize="auto"`` and one epoch of
                               :func:`qlandscape.train` run
model_unchanged                parameters, buffers, training flags and ``requires_grad``
=============================  ==================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from ..adapter import ModelAdapter, copy_module
from ..landscape import random_direction, scan_1d
from ..losses import LossSpec
from ..objective import Objective
from ..second_order import FiniteDifferenceOfGradients


@dataclass
class CheckResult:
    """Outcome of one check: ``error`` is compared against ``tol`` (both relative unless stated)."""

    name: str
    passed: bool
    error: float = 0.0
    tol: float = 0.0
    detail: str = ""


@dataclass
class ConformanceReport:
    """All checks run on one model."""

    model: str
    checks: list[CheckResult] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        lines = [f"conformance of {self.model}: {'PASSED' if self.passed else 'FAILED'}"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: error {c.error:.3g} (tol {c.tol:.3g})"
                         + (f" {c.detail}" if c.detail else ""))
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise AssertionError(self.summary())


def _rel(a: Tensor, b: Tensor) -> float:
    scale = max(float(b.abs().max()), 1e-300)
    return float((a - b).abs().max()) / scale


def _state(model: nn.Module) -> dict[str, Any]:
    return dict(
        tensors={k: v.detach().clone() for k, v in model.state_dict().items()},
        flags=[m.training for m in model.modules()],
        requires_grad=[p.requires_grad for p in model.parameters()])


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["flags"] == b["flags"] and a["requires_grad"] == b["requires_grad"]
            and a["tensors"].keys() == b["tensors"].keys()
            and all(torch.equal(v, b["tensors"][k]) for k, v in a["tensors"].items()))


def _load(model: nn.Module, adapter: ModelAdapter, theta: Tensor) -> nn.Module:
    """A copy of ``model`` in the adapter's dtype with the selected parameters set to ``theta``."""
    m = copy_module(model).to(adapter.dtype)
    params = dict(m.named_parameters())
    with torch.no_grad():
        for name, t in adapter.space.unflatten(theta).items():
            params[name].copy_(t)
    return m


def check_model(model: nn.Module, loss: LossSpec, data: tuple[Tensor, Tensor], *,
                reference: Optional[Callable[[Tensor], Tensor]] = None, dtype: torch.dtype = torch.float64,
                n_directions: int = 2, step: float = 0.1, seed: int = 0, train_check: bool = True,
                objective_kwargs: Optional[dict[str, Any]] = None) -> ConformanceReport:
    """Run the conformance checks on ``model``.

    Parameters
    ----------
    model : nn.Module
        The model under test; it must come out unchanged.
    loss : LossSpec
        Per-sample loss (see :func:`qlandscape.make_loss`).
    data : (inputs, targets)
        A small batch (the checks evaluate the full-data loss several dozen times).
    reference : callable, optional
        ``theta (n,) -> scalar`` full-data mean loss written independently of the engine (e.g.
        the same circuit on another simulator, or the network written with plain torch ops),
        differentiable twice by ``torch.autograd``; its dense Hessian is the HVP reference.
    dtype : torch.dtype
        Objective dtype (float64 keeps tolerances tight).
    n_directions : int
        Random directions for gradient/HVP checks.
    step : float
        Size of the moved point used by the functional check (relative to ``max|theta|``).
    train_check : bool
        Also run one epoch of :func:`qlandscape.train` (which copies the model).
    objective_kwargs : dict, optional
        Extra :class:`Objective` arguments (``mode``, ``params``, ...).

    Returns
    -------
    ConformanceReport
        Tolerances: forward 1e-10 relative (float64 rounding); gradient vs backward 1e-9 relative;
        gradient vs central differences 1e-5 (O(h^2) truncation at h = 1e-4 in float64); HVPs vs
        the dense reference 1e-8 for autograd routes, ``100 * eps**(2/3)`` of the model's precision
        for finite differences of gradients; symmetry/linearity 1e-8 (autograd) or the same FD bound.
    """
    before = _state(model)
    kw = dict(objective_kwargs or {})
    x, y = data
    report = ConformanceReport(type(model).__name__)
    gen = torch.Generator().manual_seed(seed)
    ob = Objective(model, loss, (x, y), dtype=dtype, **kw)
    report.provenance = ob.provenance()
    adapter = ob.adapter
    theta0 = ob.theta0
    n = ob.n_params
    xs = adapter.cast(x)
    fd_provider = isinstance(ob.provider, FiniteDifferenceOfGradients)
    hvp_tol = 100 * ob.provider.expected_rel_error(dtype) if fd_provider else 1e-8  # type: ignore[attr-defined]

    def add(name: str, error: float, tol: float, detail: str = "") -> None:
        report.checks.append(CheckResult(name, bool(error <= tol), error, tol, detail))

    # 1. functional evaluation == the module's own forward, at theta0 and at a moved point
    scale = max(1.0, float(theta0.abs().max()))
    moved = theta0 + step * scale * torch.rand(n, generator=gen, dtype=theta0.dtype).to(theta0.device)
    errs = []
    for th in (theta0, moved):
        m = _load(model, adapter, th)
        m.train(ob.mode == "train")
        with torch.no_grad(), adapter.mode(ob.mode == "train"):
            f = adapter.apply(th, xs)
            with adapter.contexts():  # the module's own forward, under the settings it declares
                r = m(xs)
        errs.append(_rel(f, r))
    add("functional_equals_forward", max(errs), 1e-10,
        "the functional path must reach every weight the forward uses (at the start and at a moved point)")

    # 2. every parameter tensor moves the loss
    base = ob.loss()
    still = []
    for name, sl, _ in ob.space.slices():
        th = theta0.clone()
        th[sl] += 0.5 * torch.randn(sl.stop - sl.start, generator=gen, dtype=th.dtype).to(th.device)
        if ob.loss(th) == base:
            still.append(name)
    add("every_parameter_moves_loss", float(len(still)), 0.0, f"unmoved: {still}" if still else "")

    # 3. gradient == .backward() on a copy, and == central differences of the loss
    g = ob.gradient()
    m = _load(model, adapter, theta0)
    m.train(ob.mode == "train")
    ys = adapter.cast(y)
    with adapter.contexts():
        lv = ob.loss_fn.per_sample(m(xs), ys).sum() * ob._scale
    lv.backward()
    named = dict(m.named_parameters())
    grads = {k: named[k].grad for k in ob.space.names}
    g_ref = torch.cat([gk.reshape(-1) if gk is not None else torch.zeros(named[k].numel(), dtype=theta0.dtype)
                       for k, gk in grads.items()])
    add("gradient_equals_backward", _rel(g, g_ref.to(g)), 1e-9)
    h = 1e-4
    fd_errs = []
    for _ in range(n_directions):
        v = torch.randn(n, generator=gen, dtype=theta0.dtype).to(theta0.device)
        v /= v.norm()
        fd = (ob.loss(theta0 + h * v) - ob.loss(theta0 - h * v)) / (2 * h)
        fd_errs.append(abs(fd - float(g @ v)) / max(float(g.norm()), 1e-300))
    add("gradient_equals_finite_differences", max(fd_errs), 1e-5)

    # 4. HVP == dense reference (or FD of gradients when no reference is given)
    V = torch.randn(n_directions, n, generator=gen, dtype=theta0.dtype).to(theta0.device)
    HV = ob.hvp(V)
    if reference is not None:
        H = torch.autograd.functional.hessian(reference, theta0.detach().clone())
        add("hvp_equals_reference", _rel(HV, V @ H), hvp_tol, "dense Hessian of the independent reference")
    else:
        eps = 1e-4
        refs = torch.stack([(ob.gradient(theta0 + eps * v) - ob.gradient(theta0 - eps * v)) / (2 * eps) for v in V])
        add("hvp_equals_finite_differences", _rel(HV, refs), max(hvp_tol, 1e-5),
            "no reference given: central differences of gradients")

    # 5. symmetry and linearity
    u, v = V[0], V[-1] if n_directions > 1 else torch.randn(n, generator=gen, dtype=theta0.dtype)
    Hu, Hv = ob.hvp(u), ob.hvp(v)
    sym = abs(float(u @ Hv) - float(v @ Hu)) / max(float(Hu.norm() * v.norm()), 1e-300)
    lin = _rel(ob.hvp(2.0 * u - 3.0 * v), 2.0 * Hu - 3.0 * Hv)
    add("hvp_symmetric_and_linear", max(sym, lin), max(hvp_tol, 1e-8))

    # 6. scan centre == loss
    d = random_direction(ob.space, theta0, normalization="unit", seed=seed)  # never zero (filter: 1-D-only models)
    s = scan_1d(ob, d, n_points=3, progress=False)
    add("scan_centre_equals_loss", abs(float(s.loss[1]) - base), 0.0, "exact equality")

    # 7. every auto choice runs
    try:
        auto = Objective(model, loss, (x, y), dtype=dtype, batch_size=max(1, x.shape[0] // 2), **kw)
        auto.hvp(V[0])
        auto.evaluate_many(torch.stack([theta0, moved]), vectorize="auto")
        if train_check:
            from ..train import train
            train(model, (x, y), loss=loss, epochs=1, batch_size=x.shape[0], progress=False)
        add("auto_choices_run", 0.0, 0.0, f"second_order={auto.provider.name}")
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        add("auto_choices_run", math.inf, 0.0, f"{type(exc).__name__}: {exc}")

    # 8. the user's model is unchanged
    add("model_unchanged", 0.0 if _same_state(before, _state(model)) else 1.0, 0.0)
    return report
