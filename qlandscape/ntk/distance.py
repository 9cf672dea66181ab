"""Kernel distance (Fort et al. 2020), scale invariant and computed stably.

For two kernels (Gram matrices) ``K1``, ``K2`` of the same shape,

    S(K1, K2) = 1 - <K1, K2>_F / (||K1||_F ||K2||_F)
              = 1/2 || K1/||K1||_F - K2/||K2||_F ||_F^2        (the form computed here)

``S`` is 0 for kernels that are positive multiples of each other. Both forms are the same number in exact
arithmetic; the second is the accurate one in floating point when ``S`` is small (the interesting regime late in
training), see :func:`kernel_distance`.

Range: for positive semi-definite kernels (empirical NTKs ``J J^T``) ``<K1, K2>_F = tr(K1 K2) >= 0``, so
``S`` lies in ``[0, 1]``; for general matrices (symmetric or not) ``S`` lies in ``[0, 2]`` (``S = 2`` for
``K2 = -c K1``). Results are clipped to ``[0, 2]`` only to remove rounding below 0; no PSD check is made.

Distance to the *final* kernel needs that kernel, which a streaming pass does not have until it ends: run a
second pass, either with :func:`distances_to` over stored kernels or a new :class:`KernelDistanceTracker`
built with ``reference=K_final`` that the kernels are fed to again (e.g. recomputed from the saved trajectory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..results import Result

__all__ = ["KernelLike", "kernel_distance", "kernel_distance_matrix", "distances_to", "KernelDistanceTracker",
           "KernelDistanceTrace"]

KernelLike = Union[Tensor, np.ndarray]
"""A square kernel matrix, shape (n, n): a torch tensor (any device, any real dtype) or a numpy array."""


def _as_float64(K: KernelLike, name: str = "kernel") -> np.ndarray:
    """``K`` as a float64 numpy array (cast *before* any product), validated: 2-D, square, finite."""
    if isinstance(K, Tensor):
        if K.is_complex():
            raise ValueError(f"{name} must be real, got dtype {K.dtype}")
        arr = K.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(K)
        if np.iscomplexobj(arr):
            raise ValueError(f"{name} must be real, got dtype {arr.dtype}")
        try:
            arr = arr.astype(np.float64, copy=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} is not a numeric array ({exc})") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(arr.shape)}")
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)})")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} has {bad} non-finite (NaN/inf) entries")
    return arr


def _normalized(K: KernelLike, name: str = "kernel") -> np.ndarray:
    """``K / ||K||_F`` in float64 (validated); raises for a zero kernel."""
    arr = _as_float64(K, name)
    norm = float(np.linalg.norm(arr))  # scaled two-pass norm: no overflow for large entries
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError(f"{name} has Frobenius norm {norm}: the kernel distance is undefined for a zero kernel")
    return arr / norm


def _distance_normalized(a: np.ndarray, b: np.ndarray) -> float:
    """``1/2 ||a - b||_F^2`` for unit-norm ``a``, ``b`` of equal shape, clipped to [0, 2]."""
    if a.shape != b.shape:
        raise ValueError(f"kernels have different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    d = a - b
    return float(min(max(0.5 * float(np.dot(d.ravel(), d.ravel())), 0.0), 2.0))


def kernel_distance(K1: KernelLike, K2: KernelLike) -> float:
    """Scale-invariant kernel distance ``S = 1 - <K1, K2>_F / (||K1||_F ||K2||_F)``.

    Parameters
    ----------
    K1, K2 : Tensor or ndarray, shape (n, n)
        Kernels of the same shape (e.g. empirical NTKs on the same inputs, traced ``(N, N)`` or full
        ``(N*C, N*C)``). Any real dtype; both are cast to float64 before any product.

    Returns
    -------
    float
        In ``[0, 1]`` for positive semi-definite kernels, in ``[0, 2]`` for general matrices. 0 iff
        ``K2 = c K1`` with ``c > 0`` (up to rounding); invariant to positive rescaling of either kernel.

    Raises
    ------
    ValueError
        Shape mismatch, a matrix that is not 2-D or not square, an empty matrix, NaN/inf entries, or a zero
        kernel (norm 0); the message names the problem.

    Notes
    -----
    Computed as ``S = 1/2 ||K1/||K1|| - K2/||K2|| ||_F^2``, which equals ``1 - cos`` exactly
    (``||a - b||^2 = 2 - 2 <a, b>`` for unit vectors) but is far more accurate when ``S`` is small. The naive
    form subtracts two numbers close to 1: the rounding error of the cosine (about ``eps`` times the number of
    summed terms) is an *absolute* error on ``S``, so the relative error is ``~ eps / S``. The difference form
    subtracts the normalized entries first (exact up to ``eps`` per entry, by Sterbenz's lemma for close
    entries), then sums non-negative squares, so the error of ``S`` is *relative*, ``~ eps / sqrt(S)`` at
    worst. Measured on this project: for two float32 kernels whose true distance was 0.0036, the naive
    float32 form returned 0.0011 or -0.0015 depending on the summation order. On float32 kernels with
    ``S ~ 1e-6 .. 1e-4`` (tests/test_ntk_linearized.py) this function agrees with a 60-digit reference to
    ~2e-15 relative, the naive form in float64 to 1e-12 .. 3e-11, the naive form in float32 is off by
    0.2% .. 5%. Inputs are cast to float64 first so that float32 kernels (e.g. an NTK
    computed in float32) lose nothing beyond their own rounding.
    """
    a = _normalized(K1, "K1")
    b = _normalized(K2, "K2")
    if a.shape != b.shape:
        raise ValueError(f"K1 and K2 have different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return _distance_normalized(a, b)


def kernel_distance_matrix(kernels: Sequence[KernelLike]) -> np.ndarray:
    """Pairwise kernel distances of a sequence of kernels.

    Parameters
    ----------
    kernels : sequence of Tensor or ndarray, each shape (n, n)
        At least one kernel; all of the same shape.

    Returns
    -------
    ndarray, shape (T, T)
        ``D[i, j] = kernel_distance(kernels[i], kernels[j])``: symmetric, zero diagonal.

    Raises
    ------
    ValueError
        An empty sequence, or any problem :func:`kernel_distance` raises for (the message names the index).
    """
    if len(kernels) == 0:
        raise ValueError("kernels is empty")
    normed = [_normalized(K, f"kernels[{i}]") for i, K in enumerate(kernels)]
    for i, a in enumerate(normed):
        if a.shape != normed[0].shape:
            raise ValueError(f"kernels[{i}] has shape {tuple(a.shape)}, kernels[0] has {tuple(normed[0].shape)}")
    T = len(normed)
    D = np.zeros((T, T), dtype=np.float64)
    for i in range(T):
        for j in range(i + 1, T):
            D[i, j] = D[j, i] = _distance_normalized(normed[i], normed[j])
    return D


def distances_to(K_ref: KernelLike, kernels: Sequence[KernelLike]) -> np.ndarray:
    """Kernel distance of each kernel to a reference (e.g. the final kernel: the second pass).

    Parameters
    ----------
    K_ref : Tensor or ndarray, shape (n, n)
    kernels : sequence of Tensor or ndarray, each shape (n, n)

    Returns
    -------
    ndarray, shape (T,)
        ``kernel_distance(kernels[t], K_ref)``.
    """
    ref = _normalized(K_ref, "K_ref")
    out = np.empty(len(kernels), dtype=np.float64)
    for i, K in enumerate(kernels):
        a = _normalized(K, f"kernels[{i}]")
        if a.shape != ref.shape:
            raise ValueError(f"kernels[{i}] has shape {tuple(a.shape)}, K_ref has {tuple(ref.shape)}")
        out[i] = _distance_normalized(a, ref)
    return out


@dataclass
class KernelDistanceTrace(Result):
    """Kernel distances recorded along training by :class:`KernelDistanceTracker`.

    Attributes
    ----------
    times : ndarray, shape (T,)
        Training time of each kernel (e.g. epochs), strictly increasing.
    to_initial : ndarray, shape (T,)
        ``S(K_0, K_t)`` (0 at the first record).
    to_previous : ndarray, shape (T,)
        ``S(K_{t-1}, K_t)`` (NaN at the first record).
    velocity : ndarray, shape (T,)
        Kernel velocity ``S(K_{t-1}, K_t) / (time_t - time_{t-1})``, per unit of training time (NaN at the
        first record).
    to_reference : ndarray, shape (T,)
        ``S(K_ref, K_t)`` for the tracker's ``reference`` kernel (all NaN without one).
    """

    times: np.ndarray
    to_initial: np.ndarray
    to_previous: np.ndarray
    velocity: np.ndarray
    to_reference: np.ndarray
    config: dict = field(default_factory=dict)


class KernelDistanceTracker:
    """Streaming kernel distances: kernels arrive one at a time, only a few are kept.

    Keeps the first kernel, the previous kernel (both normalized, float64) and the reference, so memory is
    three kernels whatever the number of records.

    Parameters
    ----------
    reference : Tensor or ndarray, shape (n, n), optional
        A kernel to measure every kernel against, typically the *final* kernel of the same run. The final
        kernel is only known at the end, so distance to it is a second pass: feed the kernels again to a new
        tracker with ``reference=K_final`` (or use :func:`distances_to` on stored kernels).

    Examples
    --------
    >>> tr = KernelDistanceTracker()
    >>> for epoch, K in kernels_by_epoch:  # doctest: +SKIP
    ...     tr.update(K, epoch)
    >>> trace = tr.result()  # doctest: +SKIP
    """

    def __init__(self, reference: Optional[KernelLike] = None) -> None:
        self._reference = None if reference is None else _normalized(reference, "reference")
        self._first: Optional[np.ndarray] = None
        self._prev: Optional[np.ndarray] = None
        self._times: list[float] = []
        self._to_initial: list[float] = []
        self._to_previous: list[float] = []
        self._velocity: list[float] = []
        self._to_reference: list[float] = []
        self.norms: list[float] = []
        """Frobenius norm of each kernel fed (float64), shape (T,) as a list."""

    def __len__(self) -> int:
        return len(self._times)

    def update(self, K: KernelLike, time: float) -> dict[str, float]:
        """Record kernel ``K`` at training time ``time``.

        Parameters
        ----------
        K : Tensor or ndarray, shape (n, n)
        time : float
            Training time (e.g. epoch); strictly greater than the previous one.

        Returns
        -------
        dict
            This record's ``time``, ``to_initial``, ``to_previous``, ``velocity``, ``to_reference``.

        Raises
        ------
        ValueError
            A kernel problem (see :func:`kernel_distance`), a shape different from the first kernel's or the
            reference's, or a non-finite or non-increasing time.
        """
        time = float(time)
        if not math.isfinite(time):
            raise ValueError(f"time must be finite, got {time}")
        if self._times and not time > self._times[-1]:
            raise ValueError(f"times must increase strictly: got {time} after {self._times[-1]}")
        arr = _as_float64(K, f"kernel at time {time}")
        norm = float(np.linalg.norm(arr))
        if norm == 0.0 or not math.isfinite(norm):
            raise ValueError(f"kernel at time {time} has Frobenius norm {norm}: the kernel distance is undefined")
        a = arr / norm
        if self._first is not None and a.shape != self._first.shape:
            raise ValueError(f"kernel at time {time} has shape {tuple(a.shape)}, the first kernel has "
                             f"{tuple(self._first.shape)}")
        if self._reference is not None and a.shape != self._reference.shape:
            raise ValueError(f"kernel at time {time} has shape {tuple(a.shape)}, the reference has "
                             f"{tuple(self._reference.shape)}")
        if self._first is None:
            self._first = a
            to_initial, to_previous, velocity = 0.0, math.nan, math.nan
        else:
            assert self._prev is not None
            to_initial = _distance_normalized(self._first, a)
            to_previous = _distance_normalized(self._prev, a)
            velocity = to_previous / (time - self._times[-1])
        to_reference = math.nan if self._reference is None else _distance_normalized(self._reference, a)
        self._prev = a
        self._times.append(time)
        self._to_initial.append(to_initial)
        self._to_previous.append(to_previous)
        self._velocity.append(velocity)
        self._to_reference.append(to_reference)
        self.norms.append(norm)
        return dict(time=time, to_initial=to_initial, to_previous=to_previous, velocity=velocity,
                    to_reference=to_reference)

    @property
    def times(self) -> np.ndarray:
        """Shape (T,)."""
        return np.array(self._times, dtype=np.float64)

    @property
    def to_initial(self) -> np.ndarray:
        """``S(K_0, K_t)``, shape (T,)."""
        return np.array(self._to_initial, dtype=np.float64)

    @property
    def to_previous(self) -> np.ndarray:
        """``S(K_{t-1}, K_t)``, shape (T,), NaN first."""
        return np.array(self._to_previous, dtype=np.float64)

    @property
    def velocity(self) -> np.ndarray:
        """``S(K_{t-1}, K_t) / (time_t - time_{t-1})``, shape (T,), NaN first."""
        return np.array(self._velocity, dtype=np.float64)

    @property
    def to_reference(self) -> np.ndarray:
        """``S(K_ref, K_t)``, shape (T,) (NaN without a reference)."""
        return np.array(self._to_reference, dtype=np.float64)

    def result(self) -> KernelDistanceTrace:
        """Everything recorded so far, as a saveable :class:`KernelDistanceTrace`."""
        return KernelDistanceTrace(times=self.times, to_initial=self.to_initial, to_previous=self.to_previous,
                                   velocity=self.velocity, to_reference=self.to_reference,
                                   config=dict(has_reference=self._reference is not None,
                                               norms=[float(n) for n in self.norms]))
