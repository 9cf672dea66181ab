"""The linearized (first-order Taylor) model and kernel regression with a frozen kernel (Fort et al. 2020).

* :class:`LinearizedModel`: ``f_lin(x; theta) = f(x; theta_t) + J_t(x) (theta - theta_t)``, an ``nn.Module``
  whose only parameter is ``delta = theta - theta_t``, so :func:`qlandscape.train.train` (and every engine
  routine) trains and analyses it like the network itself. ``J_t(x) delta`` is one ``torch.func.jvp``; the
  Jacobian is never formed.
* :func:`kernel_regression`: closed-form kernel ridge regression with a kernel frozen at ``t`` (the
  infinite-time limit of gradient flow on the MSE loss of the linearized model, from ``f = 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, Optional, Union

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from ..adapter import Capabilities, CapabilityError, ModelAdapter, ModuleInfo, copy_module, model_capabilities
from ..params import ParamSelector
from ..results import Result

__all__ = ["LinearizedModel", "KernelRegressionResult", "kernel_regression"]

ArrayLike = Union[Tensor, np.ndarray]


class LinearizedModel(nn.Module):
    """First-order Taylor expansion of a model around its current parameters ``theta_t``.

    ``forward(x) = f(x; theta_t) + J_t(x) delta``, with ``J_t(x) = d f(x; theta) / d theta`` at ``theta_t``,
    computed in one ``torch.func.jvp`` (primal and tangent in a single forward-mode pass; ``J`` is never
    formed). ``delta`` (shape ``(P,)``, zeros at construction) is the module's only parameter, so the module
    trains with :func:`qlandscape.train.train` unchanged: gradients reach ``delta`` through the tangent
    (reverse-over-forward).

    Parameters
    ----------
    model : nn.Module
        The network at ``theta_t`` (e.g. a trained model). It is never modified: a private copy is made
        (:func:`qlandscape.adapter.copy_module`, which shares declared simulator devices) and read through a
        :class:`~qlandscape.adapter.ModelAdapter` in the model's own dtype.
    params : ParamSelector, optional
        Which parameters are linearized (default: all with ``requires_grad``); the others stay fixed at
        their values at construction.
    example_input : Tensor, optional
        Inputs (one sample is enough) for a forward pass under the registered probes
        (:meth:`ModelAdapter.probe`), which find layers that no module declares (a QNode held in a global);
        without it only the declared capabilities are checked.

    Attributes
    ----------
    delta : nn.Parameter, shape (P,)
        ``theta - theta_t``; trainable.
    theta_t : Tensor (buffer), shape (P,)
        The expansion point, in the model's dtype.

    Raises
    ------
    CapabilityError
        If the model does not declare ``torch_func=True`` (the linearization needs ``torch.func.jvp``); the
        message names the modules responsible.

    Notes
    -----
    * The underlying network always runs in **eval mode** with its buffers frozen at ``t``: BatchNorm uses
      the running statistics of ``t`` (they are not updated), Dropout is off. ``train()`` / ``eval()`` on the
      linearized model do not change this; the linearized model is deterministic.
    * Dtype: the network keeps its dtype; evaluating with ``delta`` in another floating dtype (e.g. an
      :class:`~qlandscape.objective.Objective` in float64 on a float32 model) runs the network in that dtype.
      Moving the module to another *device* after construction is not supported: build it from a model that
      is already on the device wanted.
    * The copy of the network is not a registered submodule (so ``parameters()`` is just ``delta``); what it
      declares (capabilities, shared simulator devices) is passed on through :meth:`qlandscape_module_info`.
    """

    theta_t: Tensor  # a buffer (registered in __init__)
    delta: nn.Parameter

    def __init__(self, model: nn.Module, params: ParamSelector = None, *,
                 example_input: Optional[Tensor] = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        caps, _ = model_capabilities(model)
        _check_torch_func(caps, type(model).__name__)
        net = copy_module(model)  # shares simulator devices; the caller's module is never touched
        net.eval()
        adapter = ModelAdapter(net, params, dtype=None)
        if example_input is not None:
            adapter.probe(adapter.cast(example_input[:1]))
            _check_torch_func(adapter.capabilities, type(model).__name__)
        for p in net.parameters():  # functional_call replaces them all; no gradient may reach the copy
            p.requires_grad_(False)
        self._adapter = adapter  # a plain attribute: the copy is not a submodule
        self._adapters: dict[torch.dtype, ModelAdapter] = {adapter.dtype: adapter}
        self._network_name = type(model).__name__
        theta_t = adapter.theta0.detach().clone()
        self.register_buffer("theta_t", theta_t)
        self.delta = nn.Parameter(torch.zeros_like(theta_t))

    # ------------------------------------------------------------------ properties
    @property
    def n_params(self) -> int:
        """``P``, the length of ``delta``."""
        return int(self.delta.numel())

    @property
    def adapter(self) -> ModelAdapter:
        """The adapter of the private network copy (its ``space`` names the linearized parameters)."""
        return self._adapter

    @property
    def theta(self) -> Tensor:
        """``theta_t + delta`` (detached), shape (P,)."""
        return (self.theta_t + self.delta).detach()

    # ------------------------------------------------------------------ evaluation
    def _adapter_for(self, dtype: torch.dtype) -> ModelAdapter:
        ad = self._adapters.get(dtype)
        if ad is None:
            ad = self._adapters[dtype] = self._adapter.with_dtype(dtype)
        return ad

    def forward(self, x: Tensor) -> Tensor:
        """``f(x; theta_t) + J_t(x) delta``.

        Parameters
        ----------
        x : Tensor, shape (B, ...)
            Inputs as the network takes them.

        Returns
        -------
        Tensor, shape of the network's output, e.g. (B, C)
        """
        delta = self.delta
        if not delta.is_floating_point():
            raise TypeError(f"delta must be floating, got {delta.dtype}")
        adapter = self._adapter_for(delta.dtype)
        theta_t = self.theta_t.to(delta.dtype)
        x = adapter.cast(x)
        out, tangent = torch.func.jvp(lambda th: adapter.apply(th, x), (theta_t,), (delta,))[:2]
        return out + tangent

    def network_output(self, x: Tensor, theta: Optional[Tensor] = None) -> Tensor:
        """The (non-linearized) network ``f(x; theta)``, eval mode; default ``theta = theta_t + delta``.

        Parameters
        ----------
        x : Tensor, shape (B, ...)
        theta : Tensor, shape (P,), optional

        Returns
        -------
        Tensor, shape of the network's output
        """
        theta = self.theta if theta is None else theta
        adapter = self._adapter_for(theta.dtype)
        return adapter.apply(theta, adapter.cast(x))

    def qlandscape_module_info(self) -> ModuleInfo:
        """Declared capabilities: the network's, deterministic (eval mode), one autograd order lower (the
        gradient in ``delta`` is already a mixed second derivative of the network)."""
        caps = self._adapter.capabilities
        order = caps.autograd_order - 1 if math.isfinite(caps.autograd_order) else math.inf
        caps = replace(caps, autograd_order=max(order, 0), stochastic=False,
                       notes=caps.notes + (f"linearized {self._network_name} (eval mode)",))
        shared = tuple(o for _, _, info in self._adapter._declared for o in info.shared)
        return ModuleInfo(capabilities=caps, shared=shared,
                          provenance=dict(linearized=self._network_name, n_params=self.n_params))

    def extra_repr(self) -> str:
        return f"network={self._network_name}, n_params={self.n_params}"


def _check_torch_func(caps: Capabilities, name: str) -> None:
    """Raise :class:`CapabilityError` unless ``caps.torch_func``."""
    if not caps.torch_func:
        why = "; ".join(caps.notes) or "a module declares torch_func=False"
        raise CapabilityError(f"LinearizedModel needs torch.func.jvp through {name}, which its modules do not "
                              f"support ({why}); use a model whose layers run under torch.func (e.g. a "
                              "backprop/statevector simulator instead of an adjoint or parameter-shift QNode)")


# ---------------------------------------------------------------------- kernel regression
@dataclass
class KernelRegressionResult(Result):
    """Predictions of kernel ridge regression with a frozen kernel.

    Attributes
    ----------
    predictions : ndarray, shape (M, C)
        ``K_test_train (K_train + jitter I)^-1 Y`` (float64).
    jitter : float
        Absolute ridge added to the diagonal of ``K_train``.
    relative_jitter : float
        ``jitter / mean(diag(K_train))``.
    accuracy : float
        ``mean(argmax(predictions) == y_test)``; NaN without ``y_test``.
    form : str
        "traced" (``K_train`` shape (N, N)) or "full" (shape (N*C, N*C), sample-major).
    targets : str
        "one_hot_centered" or "one_hot".
    n_classes : int
    mean_diag : float
        ``mean(diag(K_train))``.
    """

    predictions: np.ndarray
    jitter: float
    relative_jitter: float
    accuracy: float = math.nan
    form: str = "traced"
    targets: str = "one_hot_centered"
    n_classes: int = 0
    mean_diag: float = math.nan
    config: dict = field(default_factory=dict)


def _matrix(a: ArrayLike, name: str) -> np.ndarray:
    arr = a.detach().to("cpu", torch.float64).numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has {int(arr.size - np.count_nonzero(np.isfinite(arr)))} non-finite entries")
    return arr


def _labels(y: ArrayLike, name: str) -> np.ndarray:
    arr = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be integer class labels of shape (N,), got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _cholesky(A: np.ndarray) -> Optional[tuple]:
    """``cho_factor(A)`` if ``A`` is numerically positive definite, else None.

    Success of the factorization alone is not enough: on a singular PSD matrix rounding often leaves tiny
    positive pivots, and the solve then amplifies rounding by their inverse. A pivot ``L_ii^2`` below
    ``n * eps * max(diag(A))`` is treated as a failure (the next jitter is tried)."""
    try:
        c, low = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    pivots = np.diag(c) ** 2
    floor = A.shape[0] * np.finfo(np.float64).eps * float(np.max(np.diag(A)))
    if not np.all(np.isfinite(pivots)) or float(np.min(pivots)) <= floor:
        return None
    return c, low


def kernel_regression(K_train: ArrayLike, y_train: ArrayLike, K_test_train: ArrayLike, *,
                      y_test: Optional[ArrayLike] = None, n_classes: Optional[int] = None,
                      jitter: Union[float, Literal["auto"]] = "auto",
                      targets: Literal["one_hot_centered", "one_hot"] = "one_hot_centered",
                      max_relative_jitter: float = 0.1) -> KernelRegressionResult:
    """Kernel ridge regression on one-hot targets with a frozen kernel, in closed form (float64, Cholesky).

    ``f_test = K_test_train (K_train + jitter I)^-1 Y``.

    Two kernel layouts are accepted (detected from ``K_train.shape``):

    * **traced**: ``K_train`` (N, N), ``K_test_train`` (M, N): the output-traced NTK (or any scalar kernel),
      shared by all classes; ``Y`` is (N, C) and the predictions (M, C).
    * **full**: ``K_train`` (N*C, N*C), ``K_test_train`` (M*C, N*C), **sample-major**: row/column ``i*C + c``
      is sample ``i``, output ``c`` (the layout of ``J.reshape(N*C, P) @ J.reshape(N*C, P).T``). Targets
      are flattened sample-major (``Y.reshape(N*C)``) and the solution reshaped to (M, C). For
      ``K_full = kron(K, I_C)`` both forms give the same predictions.

    Parameters
    ----------
    K_train : Tensor or ndarray, shape (N, N) or (N*C, N*C)
        Symmetric positive semi-definite. Asymmetry up to 1e-6 of the largest entry (rounding of a float32
        kernel) is removed by symmetrizing; more raises.
    y_train : Tensor or ndarray of int, shape (N,)
        Class labels in ``[0, C)``.
    K_test_train : Tensor or ndarray, shape (M, N) or (M*C, N*C)
        Kernel between test and training inputs, in the layout of ``K_train``.
    y_test : Tensor or ndarray of int, shape (M,), optional
        Test labels; gives ``accuracy``.
    n_classes : int, optional
        ``C``. Default: ``K_train.shape[0] // N`` in the full form when that is > 1, else
        ``max(y_train, y_test) + 1``.
    jitter : float or "auto"
        Absolute ridge ``>= 0`` added to the diagonal. "auto": 0 first, then ``1e-12 * mean(diag)`` multiplied
        by 10 until the Cholesky factorization succeeds with no pivot below ``n * eps * max(diag)``, up to
        ``max_relative_jitter * mean(diag)``. The jitter used is reported. On a (near-)singular kernel the
        smallest jitter that factorizes leaves rounding of order ``eps * ||K|| / jitter`` in the
        predictions (measured: 3e-4 absolute against min-norm least squares for a rank-4 linear kernel,
        N = 15, relative jitter 1e-12); pass a larger explicit jitter (e.g. 1e-6 of ``mean(diag)``) when
        that matters.
    targets : {"one_hot_centered", "one_hot"}
        "one_hot": ``Y[i, c] = [y_i == c]``; "one_hot_centered": ``Y - 1/C`` (rows sum to 0, as in Fort et
        al. 2020 and neural-tangents).
    max_relative_jitter : float
        Largest relative jitter "auto" tries.

    Returns
    -------
    KernelRegressionResult
        ``predictions`` (M, C), the ``jitter`` used (absolute and relative to ``mean(diag(K_train))``),
        ``accuracy`` when ``y_test`` is given.

    Raises
    ------
    ValueError
        Shape mismatches, non-finite kernels, a non-symmetric ``K_train``, ``mean(diag) <= 0``, labels out of
        ``[0, C)``, a bad ``jitter`` or ``targets``.
    numpy.linalg.LinAlgError
        If ``K_train + jitter I`` is not positive definite (with "auto": even at the largest jitter tried;
        the message names it).
    """
    if targets not in ("one_hot_centered", "one_hot"):
        raise ValueError(f"targets must be 'one_hot_centered' or 'one_hot', got {targets!r}")
    Kt = _matrix(K_train, "K_train")
    Kx = _matrix(K_test_train, "K_test_train")
    ytr = _labels(y_train, "y_train")
    yte = None if y_test is None else _labels(y_test, "y_test")
    N = int(ytr.shape[0])
    if N == 0:
        raise ValueError("y_train is empty")
    n = Kt.shape[0]
    if Kt.shape[1] != n:
        raise ValueError(f"K_train must be square, got shape {tuple(Kt.shape)}")
    if n % N != 0:
        raise ValueError(f"K_train has shape {tuple(Kt.shape)}, which is neither (N, N) nor (N*C, N*C) for "
                         f"N = {N} training labels")
    per = n // N  # outputs per sample in the kernel: 1 (traced) or C (full)
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer))
                                  or n_classes < 1):
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    if per > 1:
        form = "full"
        C = per
        if n_classes is not None and int(n_classes) != C:
            raise ValueError(f"K_train has shape {tuple(Kt.shape)} = (N*C, N*C) with N = {N}, C = {C}, but "
                             f"n_classes = {n_classes}")
    else:
        form = "traced"
        seen = int(max(ytr.max(), -1 if yte is None or yte.size == 0 else yte.max())) + 1
        C = int(n_classes) if n_classes is not None else max(seen, 1)
    for name, lab in (("y_train", ytr), ("y_test", yte)):
        if lab is not None and lab.size and (lab.min() < 0 or lab.max() >= C):
            raise ValueError(f"{name} has labels in [{lab.min()}, {lab.max()}], outside [0, {C}) "
                             f"(n_classes = {C})")
    if Kx.shape[1] != n:
        raise ValueError(f"K_test_train has shape {tuple(Kx.shape)}; its columns must match K_train's {n}")
    if Kx.shape[0] % per != 0:
        raise ValueError(f"K_test_train has {Kx.shape[0]} rows, not a multiple of C = {per} (full form)")
    M = Kx.shape[0] // per
    if yte is not None and yte.shape[0] != M:
        raise ValueError(f"y_test has {yte.shape[0]} labels, K_test_train has {M} test samples")
    scale = float(np.max(np.abs(Kt)))
    asym = float(np.max(np.abs(Kt - Kt.T)))
    if asym > 1e-6 * scale:
        raise ValueError(f"K_train is not symmetric (max |K - K^T| = {asym:.3g}, max |K| = {scale:.3g})")
    Kt = 0.5 * (Kt + Kt.T)
    mean_diag = float(np.mean(np.diag(Kt)))
    if not mean_diag > 0:
        raise ValueError(f"K_train has mean diagonal {mean_diag} <= 0: not a positive semi-definite kernel")

    Y = np.zeros((N, C), dtype=np.float64)
    Y[np.arange(N), ytr] = 1.0
    if targets == "one_hot_centered":
        Y -= 1.0 / C
    rhs = Y if form == "traced" else Y.reshape(N * C, 1)  # sample-major: row i*C + c

    if isinstance(jitter, str):
        if jitter != "auto":
            raise ValueError(f"jitter must be a number >= 0 or 'auto', got {jitter!r}")
        if not (max_relative_jitter > 0 and math.isfinite(max_relative_jitter)):
            raise ValueError(f"max_relative_jitter must be a positive finite number, got {max_relative_jitter!r}")
        candidates = [0.0]
        rel = 1e-12
        while rel <= max_relative_jitter * (1 + 1e-9):
            candidates.append(rel * mean_diag)
            rel *= 10.0
    else:
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float, np.floating, np.integer)) \
                or not (jitter >= 0 and math.isfinite(jitter)):
            raise ValueError(f"jitter must be a finite number >= 0 or 'auto', got {jitter!r}")
        candidates = [float(jitter)]
    factor, used = None, math.nan
    eye = np.eye(n)
    for j in candidates:
        factor = _cholesky(Kt + j * eye)
        used = j
        if factor is not None:
            break
    if factor is None:
        what = "up to " if len(candidates) > 1 else ""
        raise np.linalg.LinAlgError(
            f"K_train + jitter * I is not (numerically) positive definite with jitter {what}{used:.3g} "
            f"({used / mean_diag:.3g} of mean(diag) = {mean_diag:.3g}); the kernel is not PSD or is too "
            "ill-conditioned: pass a larger jitter")
    alpha = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
    pred = Kx @ alpha
    predictions = pred if form == "traced" else pred.reshape(M, C)
    accuracy = math.nan
    if yte is not None and M > 0:
        accuracy = float(np.mean(np.argmax(predictions, axis=1) == yte))
    return KernelRegressionResult(predictions=np.ascontiguousarray(predictions), jitter=float(used),
                                  relative_jitter=float(used / mean_diag), accuracy=accuracy, form=form,
                                  targets=targets, n_classes=C, mean_diag=mean_diag,
                                  config=dict(N=N, M=M, jitter_requested=jitter))
