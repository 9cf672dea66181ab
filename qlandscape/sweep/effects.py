"""Effects along a sweep's axes with seed-bootstrap intervals: how much lambda_max changes with the patch
count and with the depth, and whether the seeds decide it.

For every *series* -- rows equal on every :data:`~qlandscape.sweep.report.GROUP_KEYS` but the axis -- with
at least two values on the axis, :func:`axis_effects` gives the ratio of seed means of the metric between
the axis' largest and smallest value (and each intermediate value against the smallest), the log-log
slope over all of the axis' values, each with its interval (:mod:`qlandscape.stats`, expanded percentile
bootstrap over seeds, resampled independently per grid point), and a verdict by a rule fixed here, before
any sweep runs (:data:`AXIS_RULES`): lambda_max *falls* with the patch count (the ratio's interval below 1)
and *rises* with the depth (above 1), Kawase et al. 2025's two claims. A series with a run whose training
did not reach a minimum (:mod:`qlandscape.fit`) is INCONCLUSIVE, whatever its interval.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from .. import claims, stats
from ..claims import Rule
from .report import _groups, _number, _sortable

__all__ = ["AXIS_RULES", "axis_effects", "interval_of_mean", "ratio_columns"]

AXIS_RULES: dict[str, tuple[str, Rule]] = {"patches": ("falls", Rule(below=1.0)), "layers": ("rises", Rule(above=1.0))}
"""axis -> (the claimed direction, the rule on ratio = metric(largest) / metric(smallest))."""


def _values(rows: Iterable[Mapping[str, Any]], metric: str) -> list[float]:
    """The rows' values of ``metric`` that are not missing."""
    return [x for x in (_number(row.get(metric)) for row in rows) if x is not None]


def interval_of_mean(rows: Sequence[Mapping[str, Any]], metric: str = "lambda_max",
                     level: float = stats.DEFAULT_LEVEL) -> Optional[stats.Estimate]:
    """The seed mean of ``metric`` over ``rows`` and its interval (``None`` without a value)."""
    xs = _values(rows, metric)
    return stats.mean(xs, level=level) if xs else None


def _series(rows: Sequence[Mapping[str, Any]], group_keys: Sequence[str], axis: str
            ) -> dict[tuple[Any, ...], dict[Any, list[Mapping[str, Any]]]]:
    keys = [k for k in group_keys if k != axis]
    out: dict[tuple[Any, ...], dict[Any, list[Mapping[str, Any]]]] = {}
    for row in rows:
        out.setdefault(tuple(row.get(k) for k in keys), {}).setdefault(row.get(axis), []).append(row)
    return out


def _ratio(num: list[float], den: list[float], level: float) -> Optional[stats.Estimate]:
    if not num or not den or min(num + den) <= 0:
        return None
    return stats.ratio_of_means(num, den, level=level)


def ratio_columns(summary: list[dict[str, Any]], rows: Sequence[Mapping[str, Any]], group_keys: Sequence[str],
                  metric: str = "lambda_max", level: float = stats.DEFAULT_LEVEL) -> None:
    """Add to each :func:`~qlandscape.sweep.report.summarize` row, in place, for each axis of
    :data:`AXIS_RULES` it varies on: ``<metric>_vs_<axis>_ratio`` / ``_lo`` / ``_hi`` (this row's seed mean over
    the seed mean at the series' smallest axis value; ``None`` at that value, or without positive values),
    and ``<metric>_lo`` / ``<metric>_hi``, the interval of this row's seed mean."""
    members = dict(_groups(rows, group_keys))
    for entry in summary:
        est = interval_of_mean(members.get(tuple(entry.get(k) for k in group_keys), []), metric, level)
        entry[f"{metric}_lo"] = est.lo if est is not None and est.has_interval else None
        entry[f"{metric}_hi"] = est.hi if est is not None and est.has_interval else None
    for axis in AXIS_RULES:
        for key, by_value in _series(rows, group_keys, axis).items():
            values = sorted(v for v in by_value if v is not None)
            if len(values) < 2:
                continue
            base = _values(by_value[values[0]], metric)
            others = [k for k in group_keys if k != axis]
            for entry in summary:
                if tuple(entry.get(k) for k in others) != key or entry.get(axis) not in values:
                    continue
                est = None if entry[axis] == values[0] else _ratio(_values(by_value[entry[axis]], metric), base, level)
                entry[f"{metric}_vs_{axis}_ratio"] = est.value if est is not None else None
                entry[f"{metric}_vs_{axis}_lo"] = est.lo if est is not None and est.has_interval else None
                entry[f"{metric}_vs_{axis}_hi"] = est.hi if est is not None and est.has_interval else None


def axis_effects(rows: Iterable[Mapping[str, Any]], group_keys: Sequence[str], metric: str = "lambda_max",
                 level: float = stats.DEFAULT_LEVEL) -> list[dict[str, Any]]:
    """The effect of each axis of :data:`AXIS_RULES` on ``metric``, one row per series and axis.

    Parameters
    ----------
    rows : iterable of mapping
        Result rows of finished runs.
    group_keys : sequence of str
        The keys that identify an architecture (the axes among them).
    metric : str
        A positive metric of the rows (default ``lambda_max``).
    level : float
        Two-sided confidence level.

    Returns
    -------
    list of dict
        Per series (its keys but the axis) and axis: ``axis``, ``from`` / ``to`` (smallest / largest axis
        value), ``n_seeds`` (``"a/b"``: seeds at ``from`` / at ``to``), ``ratio`` / ``ratio_lo`` / ``ratio_hi``
        (seed mean at ``to`` over the seed mean at ``from``), ``slope`` / ``slope_lo`` / ``slope_hi`` (the
        exponent of metric ~ axis^slope over every axis value), ``claim`` (e.g. "lambda_max falls with
        patches"), ``verdict`` (PASS / FAIL / INCONCLUSIVE by :data:`AXIS_RULES`) and ``note`` (why it is
        INCONCLUSIVE: fewer than 3 seeds, runs not at a minimum, or values that are not positive).
    """
    rows = list(rows)
    out: list[dict[str, Any]] = []
    for axis, (direction, rule) in AXIS_RULES.items():
        others = [k for k in group_keys if k != axis]
        for key, by_value in sorted(_series(rows, group_keys, axis).items(), key=lambda kv: tuple(_sortable(v) for v in kv[0])):
            values = sorted(v for v in by_value if v is not None)
            if len(values) < 2:
                continue
            first, last = values[0], values[-1]
            samples = [_values(by_value[v], metric) for v in values]
            entry: dict[str, Any] = dict(zip(others, key))
            entry.update(axis=axis, **{"from": first, "to": last},
                         n_seeds=f"{len(samples[0])}/{len(samples[-1])}")
            name = f"{metric} {direction} with {axis}"
            positive = all(s and min(s) > 0 for s in samples)
            ratio = _ratio(samples[-1], samples[0], level) if positive else None
            slope = stats.log_slope(values, samples, level=level) if positive else None
            for label, est in (("ratio", ratio), ("slope", slope)):
                entry[label] = est.value if est is not None else None
                entry[f"{label}_lo"] = est.lo if est is not None and est.has_interval else None
                entry[f"{label}_hi"] = est.hi if est is not None and est.has_interval else None
            flagged = sum(1 for v in values for r in by_value[v] if r.get("fit_ok") is False)
            n_runs = sum(len(by_value[v]) for v in values)
            why = f"{flagged} of {n_runs} runs not at a minimum" if flagged else ""
            if ratio is None:
                entry.update(claim=name, verdict="INCONCLUSIVE", note="values missing or not positive")
            else:
                c = claims.check(name, ratio, rule, effect=f"{metric}({last}) / {metric}({first})",
                                 inconclusive_if=why)
                note = c.note or ("" if ratio.has_interval else
                                  f"fewer than {stats.MIN_SAMPLES} seeds at a grid point: no interval")
                entry.update(claim=name, verdict=c.verdict, note=note)
            out.append(entry)
    return out
