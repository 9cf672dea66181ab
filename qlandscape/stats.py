"""Effect sizes with seed-bootstrap intervals: the numbers a claim is decided on.

A result measured on a few training seeds (lambda_max at the minimum, a test accuracy, a barrier) is a
sample, and a claim about it ("lambda_max falls with the number of patches") is a claim about the
population of seeds. This module turns samples into an :class:`Estimate`: the effect on the observed
seeds (a ratio of means, a log-log slope, a mean paired difference) and a confidence interval from the
nonparametric bootstrap over seeds (:func:`scipy.stats.bootstrap`: each group's seeds are resampled with
replacement, independently per group, or jointly when the groups are *paired*, i.e. seed ``i`` of every
group shares something, such as its initialization). :mod:`qlandscape.claims` decides claims from these
intervals.

Conventions
-----------
* ``method="expanded"`` (default): Hesterberg's expanded percentile interval (Hesterberg 2015, "What
  teachers should know about the bootstrap", The American Statistician 69(4)): the percentile interval of
  the resamples at the wider level ``1 - 2 Phi(-sqrt(n / (n - 1)) t_{n-1, 1 - alpha/2})``, ``n`` the smallest
  group's size. The plain percentile interval is too narrow for few seeds: measured on a ratio of two
  lognormal means (sigma 0.3, 400 replications, test ``test_interval_coverage_with_few_seeds``) a nominal
  95% percentile interval covers 0.79 / 0.89 / 0.93 of the time with 3 / 5 / 8 seeds per group, BCa 0.78 /
  0.88 / 0.90, the expanded interval 0.90 / 0.965 / 0.97. ``"percentile"`` and ``"BCa"`` (Efron 1987) are
  available; where BCa is undefined the percentile interval is used and :attr:`Estimate.method` says so.
* Too few samples for an interval -- a group with fewer than :data:`MIN_SAMPLES` (3) values, where every
  bootstrap interval is just the values' range -- gives an estimate with ``lo = hi = nan``
  (:attr:`Estimate.has_interval` is false); a claim on it is INCONCLUSIVE, never decided on a point.
  With 3 seeds the expanded interval is the range of the resample statistics (its level rounds to 1): a
  claim then passes only when every resample agrees, which is conservative; five seeds (or independent
  pairs) per group are what the notebooks use (notebook 03's spawning claims: 3 pairs of children).
* Every resample giving the same number (identical seeds) gives the interval ``[value, value]``.
* Deterministic: the resamples come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["DEFAULT_LEVEL", "DEFAULT_RESAMPLES", "MIN_SAMPLES", "Estimate", "bootstrap", "bootstrap_rows", "expanded_level", "log_slope", "mean",
           "mean_difference", "ratio_of_means"]

DEFAULT_LEVEL = 0.95
"""Two-sided confidence level of every interval unless one is given."""

MIN_SAMPLES = 3
"""The fewest values per group that get an interval: with two, every bootstrap interval is just their range."""

DEFAULT_RESAMPLES = 9999
"""Bootstrap resamples (the Monte Carlo error of a 95% percentile end is then ~0.2% of the spread)."""

Statistic = Callable[..., Any]


@dataclass(frozen=True)
class Estimate:
    """An effect size and its bootstrap confidence interval.

    Attributes
    ----------
    value : float
        The statistic on the observed samples.
    lo, hi : float
        The interval's ends at ``level`` (``nan`` when there is no interval).
    level : float
        Two-sided confidence level, in (0, 1).
    method : str
        How the interval was made, e.g. ``"expanded seed bootstrap"``, ``"percentile seed bootstrap (BCa
        undefined)"`` or ``"no interval (a group has one value)"``.
    n : tuple of int
        The number of values in each group (seeds).
    paired : bool
        Whether the groups were resampled jointly.
    """

    value: float
    lo: float
    hi: float
    level: float
    method: str
    n: tuple[int, ...]
    paired: bool = False
    _at_level: Optional[Callable[[float], tuple[float, float]]] = field(default=None, repr=False, compare=False)

    @property
    def has_interval(self) -> bool:
        """True when ``lo`` and ``hi`` are finite numbers."""
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def interval(self, level: float) -> tuple[float, float]:
        """The interval at another two-sided ``level`` from the same resamples (``(nan, nan)`` without one)."""
        _check_level(level)
        if not self.has_interval or self._at_level is None:
            return (math.nan, math.nan)
        return self._at_level(level)

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        """``{prefix}value``, ``{prefix}lo``, ``{prefix}hi``, ``{prefix}level``, ``{prefix}method``,
        ``{prefix}n`` (``;``-joined group sizes): a flat row for a CSV file."""
        return {f"{prefix}value": self.value, f"{prefix}lo": self.lo if self.has_interval else None,
                f"{prefix}hi": self.hi if self.has_interval else None, f"{prefix}level": self.level,
                f"{prefix}method": self.method, f"{prefix}n": ";".join(str(k) for k in self.n)}

    def format(self, digits: int = 3) -> str:
        """``"0.231 [0.195, 0.270]"``, or ``"0.231 [no interval]"``."""
        v = f"{self.value:.{digits}g}"
        if not self.has_interval:
            return f"{v} [no interval]"
        return f"{v} [{self.lo:.{digits}g}, {self.hi:.{digits}g}]"


def _check_level(level: float) -> None:
    if not (isinstance(level, (int, float)) and 0.0 < float(level) < 1.0):
        raise ValueError(f"level must be a number in (0, 1), e.g. 0.95, got {level!r}")


def expanded_level(level: float, n: int) -> float:
    """The percentile level of Hesterberg's expanded interval for a nominal two-sided ``level`` and ``n``
    values per group (``n >= 2``): ``1 - 2 Phi(-sqrt(n / (n - 1)) t_{n-1, (1 + level) / 2})``."""
    from scipy import stats

    _check_level(level)
    if n < 2:
        raise ValueError(f"the expanded interval needs n >= 2 values per group, got {n}")
    z = math.sqrt(n / (n - 1)) * float(stats.t.ppf(0.5 + level / 2, n - 1))
    return float(1.0 - 2.0 * stats.norm.cdf(-z))


def _as_samples(samples: Sequence[ArrayLike]) -> list[np.ndarray]:
    if isinstance(samples, np.ndarray) or not isinstance(samples, Sequence) or not samples:
        raise ValueError("samples must be a non-empty sequence of 1-D arrays, one per group (a group's values are "
                         "its seeds)")
    out = []
    for i, s in enumerate(samples):
        a = np.asarray(s, dtype=float)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"group {i}: expected a non-empty 1-D array of values (one per seed), got shape "
                             f"{a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"group {i}: values must be finite, got {a.tolist()} (drop missing runs first and "
                             "say so)")
        out.append(a)
    return out


def _rng_kw(seed: int) -> dict[str, Any]:
    """scipy >= 1.15 takes ``rng``, older versions ``random_state``."""
    from scipy import stats

    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def bootstrap(samples: Sequence[ArrayLike], statistic: Statistic, *, paired: bool = False,
              level: float = DEFAULT_LEVEL, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              method: str = "expanded") -> Estimate:
    """A statistic of one or more groups of values and its seed-bootstrap interval.

    Parameters
    ----------
    samples : sequence of array_like, each shape (n_g,)
        One 1-D array per group; a group's entries are its seeds' values (finite).
    statistic : callable
        ``statistic(*groups, axis=-1) -> float or ndarray``, vectorized: given arrays whose last axis holds
        a resample of each group, it returns one value per resample (numpy reductions with ``axis=axis``).
    paired : bool
        Resample the groups jointly (all groups must have the same length; entry ``i`` of each group belongs
        to seed ``i``). Default False: independently per group.
    level : float
        Two-sided confidence level in (0, 1).
    n_resamples : int
        Bootstrap resamples, >= 100.
    seed : int
        Seed of the resampling.
    method : {"expanded", "percentile", "BCa"}
        Interval construction (module docstring); BCa falls back to percentile where it is undefined.

    Returns
    -------
    Estimate
        Without an interval when any group has fewer than :data:`MIN_SAMPLES` values.

    Raises
    ------
    ValueError
        For empty, non-1-D or non-finite groups, paired groups of different lengths, a bad level, method or
        resample count, or a statistic that is not finite on the observed samples.
    """
    from scipy import stats

    groups = _as_samples(samples)
    _check_level(level)
    if method not in ("expanded", "percentile", "BCa"):
        raise ValueError(f"method must be 'expanded', 'percentile' or 'BCa', got {method!r}")
    if not isinstance(n_resamples, int) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an integer >= 100, got {n_resamples!r}")
    if paired and len({g.size for g in groups}) > 1:
        raise ValueError(f"paired groups must have one value per seed each, got sizes {[g.size for g in groups]}")
    value = float(statistic(*groups, axis=-1))
    if not math.isfinite(value):
        raise ValueError(f"the statistic is {value} on the observed samples {[g.tolist() for g in groups]}")
    sizes = tuple(int(g.size) for g in groups)
    if min(sizes) < MIN_SAMPLES:
        return Estimate(value, math.nan, math.nan, float(level),
                        f"no interval (a group has fewer than {MIN_SAMPLES} values)", sizes, paired)

    def run(conf: float, how: str, previous: Any = None) -> Any:
        if how == "expanded":
            conf, how = expanded_level(conf, min(sizes)), "percentile"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's "cannot be calculated" / degenerate-data warnings: handled
            return stats.bootstrap(tuple(groups), statistic, vectorized=True, paired=paired,
                                   n_resamples=0 if previous is not None else n_resamples,
                                   bootstrap_result=previous, confidence_level=conf, method=how, **_rng_kw(seed))

    res = run(level, method)
    how = method
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    draws = np.asarray(res.bootstrap_distribution, dtype=float)
    if not np.all(np.isfinite(draws)):
        raise ValueError("the statistic is not finite on some resamples of the seeds (e.g. a mean of 0 in a "
                         "denominator); use a statistic that is defined on every resample")
    if float(np.ptp(draws)) == 0.0:  # every resample gives the same number: the interval is that point
        return Estimate(value, value, value, float(level), "seed bootstrap (every resample equal)", sizes, paired,
                        lambda lv: (value, value))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        how = "percentile"
        res = run(level, how, res)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    label = (f"{how} seed bootstrap" + (" (BCa undefined)" if how != method else "")
             + (", paired" if paired else ""))

    def at_level(lv: float) -> tuple[float, float]:
        r = run(lv, how, res)
        return float(r.confidence_interval.low), float(r.confidence_interval.high)

    return Estimate(value, lo, hi, float(level), label, sizes, paired, at_level)


def bootstrap_rows(groups: Sequence[ArrayLike], statistic: Callable[..., float], **kwargs: Any) -> Estimate:
    """Like :func:`bootstrap`, for groups whose units are the *rows* of 2-D arrays (e.g. the gradient at each
    random initialization, shape ``(n_inits, n_params)``): each group's rows are resampled with replacement.

    Parameters
    ----------
    groups : sequence of array_like, each shape (n_g, ...)
        One array per group; its first axis indexes the units that are resampled.
    statistic : callable
        ``statistic(*arrays) -> float`` on arrays of the groups' shapes (called once per resample, not
        vectorized; e.g. ``lambda a, b: a.var(0, ddof=1).mean() / b.var(0, ddof=1).mean()``).
    **kwargs
        As :func:`bootstrap` (``paired=True``: the same rows are drawn for every group).
    """
    arrays = [np.asarray(g, dtype=float) for g in groups]
    for i, a in enumerate(arrays):
        if a.ndim < 1 or a.shape[0] == 0:
            raise ValueError(f"group {i}: expected an array with at least one row, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"group {i}: values must be finite")

    def on_indices(*idx: np.ndarray, axis: int = -1) -> Any:
        if idx[0].ndim == 1:
            return statistic(*(a[i.astype(np.intp)] for a, i in zip(arrays, idx)))
        flat = [i.reshape(-1, i.shape[-1]) for i in idx]
        out = np.array([statistic(*(a[i.astype(np.intp)] for a, i in zip(arrays, rows))) for rows in zip(*flat)])
        return out.reshape(idx[0].shape[:-1])

    return bootstrap([np.arange(a.shape[0], dtype=float) for a in arrays], on_indices, **kwargs)


def _mean(x: np.ndarray, axis: int = -1) -> Any:
    return np.mean(x, axis=axis)


def mean(values: ArrayLike, **kwargs: Any) -> Estimate:
    """The mean over seeds and its interval (keywords as :func:`bootstrap`)."""
    return bootstrap([values], _mean, **kwargs)


def _ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def ratio_of_means(numerator: ArrayLike, denominator: ArrayLike, **kwargs: Any) -> Estimate:
    """``mean(numerator) / mean(denominator)`` over seeds and its interval.

    Parameters
    ----------
    numerator, denominator : array_like, shape (n_1,), (n_2,)
        Values >= 0 (numerator) and > 0 (denominator), one per seed (e.g. lambda_max at 16 and at 4 patches).
    **kwargs
        As :func:`bootstrap` (``paired=True`` needs ``n_1 == n_2``).

    Raises
    ------
    ValueError
        When a numerator value is negative or a denominator value is not positive: a ratio of means with
        signs mixed is no effect size.
    """
    for name, v, ok in (("numerator", numerator, lambda a: a >= 0), ("denominator", denominator, lambda a: a > 0)):
        a = np.asarray(v, dtype=float)
        if a.size and np.any(~ok(a)):
            raise ValueError(f"ratio_of_means needs a non-negative numerator and a positive denominator, {name} has "
                             f"{a.tolist()}; for signed quantities use mean_difference")
    return bootstrap([numerator, denominator], _ratio, **kwargs)


def _difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def mean_difference(a: ArrayLike, b: ArrayLike, **kwargs: Any) -> Estimate:
    """``mean(a) - mean(b)`` over seeds and its interval; with ``paired=True`` the mean paired difference."""
    return bootstrap([a, b], _difference, **kwargs)


def log_slope(x: Sequence[float], samples: Sequence[ArrayLike], **kwargs: Any) -> Estimate:
    """The exponent ``alpha`` of ``mean_g ~ x_g^alpha``: the least-squares slope of ``log mean_g`` on
    ``log x_g``, and its interval from resampling each group's seeds.

    Parameters
    ----------
    x : sequence of float, length G >= 2
        Positive, distinct abscissae (patch counts, qubits, widths).
    samples : sequence of array_like, length G
        Positive values of each group (seeds).
    **kwargs
        As :func:`bootstrap`.
    """
    xs = np.asarray(x, dtype=float)
    if xs.ndim != 1 or xs.size < 2 or xs.size != len(samples) or np.any(~(xs > 0)) or np.unique(xs).size != xs.size:
        raise ValueError(f"log_slope needs >= 2 distinct positive x, one per group; got x={list(x)} for "
                         f"{len(samples)} groups")
    for i, s in enumerate(samples):
        if np.any(~(np.asarray(s, dtype=float) > 0)):
            raise ValueError(f"log_slope needs positive values; group {i} has {np.asarray(s).tolist()}")
    lx = np.log(xs)
    w = (lx - lx.mean()) / np.sum((lx - lx.mean()) ** 2)

    def slope(*groups: np.ndarray, axis: int = -1) -> Any:
        logs = np.stack([np.log(np.mean(g, axis=axis)) for g in groups], axis=-1)
        return logs @ w

    return bootstrap(list(samples), slope, **kwargs)
