"""The report of a patch-count sweep: tables and figures from the result rows of finished runs.

A sweep (Kawase 2025) trains a patch quantum network (``model="quantum"``) and its parameter-matched
classical baseline (``model="classical"``) for several patch counts, layer counts and seeds, and measures
the largest Hessian eigenvalue at the trained minimum. Each finished run gives one *row*: a flat dict with
the keys listed in the sweep runner (``run_id``, ``model``, ``patches``, ``layers``, ``qubits``, ``ansatz``,
``aggregation``, ``seed``, ``n_params``, ..., ``lambda_max``, ``trace``, ``grad_var``, ``wall_s``, ...).
A value is ``None`` where the measurement was not requested or failed.

This module only reads rows; it never runs anything:

* :func:`summarize` -- one row per architecture (all :data:`GROUP_KEYS` equal), statistics over seeds;
  a missing value (``None``/NaN) is left out of the statistics and never counted as 0;
* :func:`write_csv`, :func:`render_markdown`, :func:`to_dataframe` (``pandas``, optional extra);
* :func:`plot_lambda_vs_patches`, :func:`plot_lambda_vs_params` -- matplotlib figures, one panel per model;
* :func:`write_report` -- all of the above into a directory, each file written atomically.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..rundir import atomic_write_bytes, png_bytes

log = logging.getLogger("qlandscape")

GROUP_KEYS: tuple[str, ...] = ("model", "patches", "layers", "qubits", "ansatz", "aggregation")
"""Keys that identify an architecture: rows equal on all of them differ only by seed."""

METRICS: tuple[str, ...] = ("lambda_max", "lambda_max_bound", "trace", "train_loss", "train_acc", "test_loss", "test_acc", "grad_var",
                            "n_params", "wall_s")
"""Numeric row values summarized over seeds (``<m>_mean``, ``<m>_std``, ``<m>_min``, ``<m>_max``, ``<m>_n``)."""

MODEL_ORDER: tuple[str, ...] = ("quantum", "classical")
"""Report order of the model kinds (panels, table sections); any other kind follows, alphabetically."""

STAT_SUFFIXES: tuple[str, ...] = ("mean", "std", "min", "max", "n")
"""The statistics :func:`summarize` gives for each metric, as ``<metric>_<suffix>``."""

DEFAULT_TITLE = "Patch-count sweep: largest Hessian eigenvalue at the minimum"

_FIGURES: tuple[str, ...] = ("lambda_vs_patches", "lambda_vs_params")
_TITLE_LAMBDA = "largest Hessian eigenvalue at the minimum"
_LABELS = {"patches": "patches", "layers": "L", "qubits": "qubits", "ansatz": "ansatz", "aggregation": "aggregation"}


# ------------------------------------------------------------------------------------------- helpers
def _number(value: Any) -> Optional[float]:
    """``value`` as a float, or ``None`` when it is missing (``None``, ``""`` or NaN)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    x = float(value)
    return None if math.isnan(x) else x


def _stats(values: Iterable[Any]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof=1), min, max and count of the values that are not missing.

    With no value all are ``None`` (count 0); with one value the standard deviation is ``None``.
    """
    xs = [x for x in (_number(v) for v in values) if x is not None]
    if not xs:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    arr = np.asarray(xs, dtype=float)
    return {"mean": float(np.mean(arr)), "std": float(np.std(arr, ddof=1)) if arr.size > 1 else None,
            "min": float(np.min(arr)), "max": float(np.max(arr)), "n": int(arr.size)}


def _sortable(value: Any) -> tuple[int, Any]:
    """A sort key that orders numbers, then strings, then ``None``, without comparing across types."""
    if value is None:
        return (3, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, bool):
        return (1, str(value))
    return (2, str(value))


def _model_rank(model: Any) -> tuple[int, tuple[int, Any]]:
    return (MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), _sortable(model))


def _group_sort_key(key: Sequence[Any]) -> tuple[Any, ...]:
    return (_model_rank(key[0]), *(_sortable(v) for v in key[1:]))


def _groups(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[tuple[tuple[Any, ...], list[Any]]]:
    """The rows grouped by the values of ``keys`` (missing key = ``None``), in first-seen order."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        out.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return list(out.items())


def _models(rows: Iterable[Mapping[str, Any]]) -> list[Any]:
    """The model kinds present, in report order."""
    return sorted({row.get("model") for row in rows}, key=_model_rank)


def _csv_header(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Union of the rows' keys: the group keys and ``seed`` (those present), then the rest sorted."""
    keys: set[str] = set()
    for row in rows:
        keys.update(row.keys())
    first = [k for k in (*GROUP_KEYS, "seed") if k in keys]
    return first + sorted(keys - set(first))


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # shortest string that reads back to the same float
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _fmt(value: Optional[float]) -> str:
    """4 significant digits; an em dash for a missing value."""
    return "—" if value is None else f"{value:.4g}"


def _fmt_count(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _md_cell(value: Any) -> str:
    return "—" if value is None else str(value).replace("|", "\\|")


# ------------------------------------------------------------------------------------------- tables
def summarize(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Statistics over seeds, one row per architecture.

    Parameters
    ----------
    rows : iterable of mapping
        Result rows of finished runs (see the module docstring). A missing key counts as ``None``.

    Returns
    -------
    list of dict
        One dict per group of rows equal on all :data:`GROUP_KEYS`, with the group keys, ``n_seeds``
        (distinct seeds), ``n_runs`` (rows; larger than ``n_seeds`` only when a seed was run twice, which is
        logged), ``fit_checked`` (runs with a fit verdict; runs of older versions have none), ``fit_flagged``
        (runs whose training did not reach a minimum, :mod:`qlandscape.fit`; they enter the statistics, and
        the report marks them) with ``fit_flags`` (their flags, ``;``-joined), and
        for each metric ``m`` of :data:`METRICS`: ``m_mean``, ``m_std`` (sample standard deviation,
        ddof=1; ``None`` with fewer than two values), ``m_min``, ``m_max`` and ``m_n`` (the number of values
        used). ``None`` and NaN values are left out, never counted as 0; a metric with no value has ``None``
        statistics and ``m_n = 0``. Sorted by model (quantum first, then classical, then others), patches,
        layers, qubits, ansatz, aggregation.
    """
    summary = []
    for key, group in sorted(_groups(rows, GROUP_KEYS), key=lambda item: _group_sort_key(item[0])):
        seeds = {row.get("seed") for row in group}
        if len(seeds) < len(group):
            log.warning("sweep report: %d runs but %d distinct seeds for %s; all runs enter the statistics",
                        len(group), len(seeds), dict(zip(GROUP_KEYS, key)))
        entry: dict[str, Any] = dict(zip(GROUP_KEYS, key))
        entry["n_seeds"] = len(seeds)
        entry["n_runs"] = len(group)
        flagged = [row for row in group if row.get("fit_ok") is False]
        entry["fit_checked"] = sum(1 for row in group if isinstance(row.get("fit_ok"), bool))
        entry["fit_flagged"] = len(flagged)
        entry["fit_flags"] = ";".join(sorted({f for row in flagged for f in (row.get("fit_flags") or [])}))
        for metric in METRICS:
            for suffix, value in _stats(row.get(metric) for row in group).items():
                entry[f"{metric}_{suffix}"] = value
        summary.append(entry)
    return summary


def to_dataframe(rows: Iterable[Mapping[str, Any]]) -> Any:
    """The rows as a :class:`pandas.DataFrame` (columns in the CSV order of :func:`write_csv`).

    Raises
    ------
    ImportError
        When pandas is not installed (it is the optional extra ``qlandscape[report]``).
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError('to_dataframe needs pandas, an optional extra: pip install "qlandscape[report]" '
                          '(or pip install pandas)') from exc
    rows = [dict(row) for row in rows]
    return pd.DataFrame(rows, columns=_csv_header(rows))


def write_csv(rows: Iterable[Mapping[str, Any]], path: Path | str) -> Path:
    """Write rows as CSV, atomically.

    Parameters
    ----------
    rows : iterable of mapping
        Result rows or :func:`summarize` rows.
    path : path-like
        The file to write (its directory is created).

    Returns
    -------
    Path
        ``path``. The header is the union of the rows' keys: :data:`GROUP_KEYS` and ``seed`` (those present),
        then the others sorted. ``None`` is written as an empty cell; floats with ``repr``, so that they read
        back exactly.
    """
    rows = list(rows)
    header = _csv_header(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in header})
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return path


MATCHED_KEYS: tuple[str, ...] = ("qubits", "ansatz")
"""Group keys that describe only the quantum model: on a classical row they are the settings of the QNN its
parameter count is matched to (``aggregation`` is the classical model's own: it aggregates its patch outputs
the same way)."""


def _columns_legend(level: float) -> str:
    return ("Columns: qubits, ansatz = the patch circuit's; on classical rows, in parentheses, those of the QNN whose "
            "parameter count the patch MLP matches (a patch MLP has neither); aggregation = how the patch outputs "
            "become logits, the model's own on both kinds of row. λ_max = largest Hessian eigenvalue of the "
            "training loss at the trained minimum, mean ± sample standard deviation over seeds (no ± with one "
            "value; \"k/n\" when only k of the n seeds have a value); "
            f"{level:.0%} interval = the interval of that mean over seeds (expanded percentile bootstrap, "
            "qlandscape.stats; — with one seed): the uncertainty that comes from the choice of seeds; "
            "λ bound = the largest numerical error bound of λ_max over the runs (certified Lanczos: each run's "
            "|λ_max − reported| ≤ its bound, except with probability at most 1e-3 per verification run (its random start); "
            "one number for a run's top-k eigenvalues, from their joint residual): the error of each run's "
            "eigensolver, not an interval over seeds; train loss = mean training loss at the minimum (the "
            "recorded checkpoint the run analysed); seeds = number of seeds; test acc = mean test accuracy over "
            "seeds; params = number of trainable parameters (the range when seeds differ); fit = whether every "
            "run's training reached a minimum (qlandscape.fit: not diverged, finite, above chance accuracy, "
            "gradient small), else how many did not and why: their λ_max is measured at a point that is not a "
            "minimum. Numbers have 4 significant digits; — = not measured.")


def series_label(entry: Mapping[str, Any], axis: str) -> str:
    """``"model quantum, layers 1, qubits 4, ..."``: an effects row's group keys but ``axis`` (the missing ones left
    out; on classical rows the matched QNN's :data:`MATCHED_KEYS` in parentheses, as in the tables)."""
    parts = []
    for k in GROUP_KEYS:
        v = entry.get(k)
        if k == axis or v is None or v == "":
            continue
        parts.append(f"{k} ({v})" if entry.get("model") == "classical" and k in MATCHED_KEYS else f"{k} {v}")
    return ", ".join(parts)


def _effects_markdown(effects: Sequence[Mapping[str, Any]], level: float) -> list[str]:
    if not effects:
        return []
    lines = [f"## Effects of the patch count and the depth ({level:.0%} seed-bootstrap intervals)", "",
             "ratio = seed-mean λ_max at the axis' largest value over the seed-mean at its smallest; slope = the "
             "exponent of λ_max ~ axis^slope over every value of the axis (log-log least squares); both with "
             "expanded percentile bootstrap intervals over seeds, each grid point resampled on its own. Verdict "
             "by a rule fixed before the run (qlandscape.sweep.effects): λ_max falls with patches = PASS when "
             "the ratio's interval is below 1, FAIL when it is at or above 1; rises with layers = the mirror "
             "image; INCONCLUSIVE when the interval contains 1, with one seed, or when a run of the series is "
             "not at a minimum.", "",
             "| series | axis | from → to | seeds | ratio [interval] | slope [interval] | claim | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for e in effects:
        series = series_label(e, e["axis"])

        def cell(name: str) -> str:
            v = e.get(name)
            if v is None:
                return "—"
            lo, hi = e.get(f"{name}_lo"), e.get(f"{name}_hi")
            return f"{v:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else " [—]")

        verdict = e["verdict"] + (f" ({e['note']})" if e.get("note") else "")
        lines.append(f"| {_md_cell(series)} | {e['axis']} | {e['from']} → {e['to']} | {e['n_seeds']} | "
                     f"{cell('ratio')} | {cell('slope')} | {e['claim']} | {_md_cell(verdict)} |")
    lines.append("")
    return lines


def render_markdown(summary: Sequence[Mapping[str, Any]], title: str = DEFAULT_TITLE,
                    effects: Sequence[Mapping[str, Any]] = (), level: float = 0.95) -> str:
    """A markdown report section: the title, one table per model kind and the effects table.

    Parameters
    ----------
    summary : sequence of mapping
        The output of :func:`summarize` (with :func:`~qlandscape.sweep.effects.ratio_columns` added for the
        interval column; without, it shows —).
    title : str
        Level-1 heading.
    effects : sequence of mapping
        The output of :func:`~qlandscape.sweep.effects.axis_effects` (a section when non-empty).
    level : float
        The intervals' confidence level (for the headings).

    Returns
    -------
    str
        Markdown: a legend that says what every column means; per model (quantum first), rows ordered by
        patches then layers (then qubits, ansatz, aggregation), with λ_max mean ± std over seeds, its
        interval, the eigensolver's error bound, the train loss at the minimum, the number of seeds, the mean
        test accuracy, the number of parameters and the fit verdict; then the effects. Numbers have 4
        significant digits; a missing value is "—".
    """
    lines = [f"# {title}", "", _columns_legend(level), ""]
    if not summary:
        lines += ["_No finished runs._", ""]
        return "\n".join(lines)
    head = ["patches", "layers", "qubits", "ansatz", "aggregation", "seeds", "λ_max", f"{level:.0%} interval",
            "λ bound", "train loss", "test acc", "params", "fit"]
    for model in _models(summary):
        lines += [f"## {model}", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for entry in sorted((e for e in summary if e.get("model") == model),
                            key=lambda e: _group_sort_key([e.get(k) for k in GROUP_KEYS])):
            n_seeds = entry.get("n_seeds")
            lam = _fmt(entry.get("lambda_max_mean"))
            if entry.get("lambda_max_std") is not None:
                lam += f" ± {_fmt(entry['lambda_max_std'])}"
            n_lam = entry.get("lambda_max_n")
            n_rows = entry.get("n_runs", n_seeds)
            if n_lam is not None and n_rows is not None and 0 < n_lam < n_rows:
                lam += f" ({n_lam}/{n_rows})"
            lo, hi = entry.get("n_params_min"), entry.get("n_params_max")
            params = _fmt_count(lo) if lo == hi else f"{_fmt_count(lo)}–{_fmt_count(hi)}"
            cells = []
            for k in GROUP_KEYS[1:]:
                cell = _md_cell(entry.get(k))
                cells.append(f"({cell})" if model == "classical" and k in MATCHED_KEYS and entry.get(k) is not None
                             else cell)
            ci_lo, ci_hi = entry.get("lambda_max_lo"), entry.get("lambda_max_hi")
            interval = "—" if ci_lo is None or ci_hi is None else f"[{_fmt(ci_lo)}, {_fmt(ci_hi)}]"
            flagged = entry.get("fit_flagged") or 0
            fit = (f"**{flagged}/{n_rows} not at a minimum** ({entry.get('fit_flags')})" if flagged
                   else "ok" if entry.get("fit_checked") else "—")
            bound = entry.get("lambda_max_bound_max")
            cells += [_md_cell(n_seeds), lam, interval, "—" if bound is None else f"{bound:.1g}",
                      _fmt(entry.get("train_loss_mean")), _fmt(entry.get("test_acc_mean")), params, fit]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += _effects_markdown(effects, level)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- figures
def _varying(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    """The keys among ``keys`` that take more than one value over ``rows``."""
    return [k for k in keys if len({_sortable(row.get(k)) for row in rows}) > 1]


def _line_label(first: str, values: Mapping[str, Any], extra: Sequence[str]) -> str:
    parts = [f"{_LABELS[first]} = {values[first]}"]
    parts += [f"{_LABELS[k]} = {values[k]}" for k in extra]
    return ", ".join(parts)


def _panels(rows: Sequence[Mapping[str, Any]], suptitle: str) -> tuple[Any, list[tuple[Any, Any]]]:
    """A figure with one panel per model kind present (quantum | classical), sharing the y axis."""
    import matplotlib.pyplot as plt
    models = _models(rows)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.5), sharey=True, squeeze=False)
    fig.suptitle(suptitle)
    return fig, list(zip(models, axes[0]))


def _plain_log_ticks(axis: Any, values: Sequence[float]) -> None:
    """Label a log axis in plain numbers, at 1, 2, 5 times powers of ten when the values span at most three
    decades (powers of ten only otherwise), with no crowded minor-tick labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    narrow = max(values) <= 1e3 * min(values)
    axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _series_plot(rows: Sequence[Mapping[str, Any]], *, metric: str, x_key: str, line_key: str,
                 point_key: str, suptitle: str, xlabel: str, log_x: bool) -> Any:
    """Shared body of the two figures: per model panel, one error-bar line per value of ``line_key`` (and of
    any other varying group key), one point per value of ``point_key`` at x = mean of ``x_key``."""
    if not rows:
        raise ValueError("no finished runs to plot")
    fig, panels = _panels(rows, suptitle)
    others = [k for k in GROUP_KEYS[1:] if k not in (line_key, point_key)]
    all_y: list[float] = []
    all_x: list[float] = []
    for model, ax in panels:
        mine = [row for row in rows if row.get("model") == model]
        extra = _varying(mine, others)
        line_keys = (line_key, *extra)
        lines = sorted(_groups(mine, line_keys), key=lambda item: tuple(_sortable(v) for v in item[0]))
        n_drawn = 0
        for i, (lkey, lrows) in enumerate(lines):
            color = f"C{i % 10}"
            xs, ys, es = [], [], []
            for _, prows in sorted(_groups(lrows, (point_key,)), key=lambda item: _sortable(item[0][0])):
                x = _stats(row.get(x_key) for row in prows)["mean"]
                y = _stats(row.get(metric) for row in prows)
                if x is None or y["mean"] is None:
                    continue
                xs.append(x)
                ys.append(y["mean"])
                es.append(y["std"] if y["std"] is not None else 0.0)
                # the individual seeds, each at its own x
                pts = [(_number(row.get(x_key)), _number(row.get(metric))) for row in prows]
                seeds = [(px, py) for px, py in pts if px is not None and py is not None]
                if seeds:
                    ax.scatter([p[0] for p in seeds], [p[1] for p in seeds], s=14, alpha=0.35, color=color,
                               edgecolors="none", zorder=3)
                    all_x += [p[0] for p in seeds]
                    all_y += [p[1] for p in seeds]
            if not xs:
                continue
            order = np.argsort(xs, kind="stable")
            label = _line_label(line_key, dict(zip(line_keys, lkey)), extra)
            ax.errorbar(np.asarray(xs)[order], np.asarray(ys)[order], yerr=np.asarray(es)[order], color=color,
                        marker="o", capsize=3, label=label, zorder=2)
            all_x += xs
            all_y += ys
            n_drawn += 1
        ax.set_title(str(model))
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        if n_drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, f"no {metric} values", transform=ax.transAxes, ha="center", va="center")
        if x_key == "patches":
            ticks = sorted({x for x in (_number(row.get(x_key)) for row in mine) if x is not None})
            if ticks:
                ax.set_xticks(ticks)
    panels[0][1].set_ylabel(r"$\lambda_{\max}$" if metric == "lambda_max" else metric)
    if all_y and min(all_y) > 0:
        panels[0][1].set_yscale("log")  # shared y: applies to every panel
        for _, ax in panels:
            _plain_log_ticks(ax.yaxis, all_y)
    if log_x and all_x and min(all_x) > 0:
        for _, ax in panels:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis, all_x)
    return fig


def plot_lambda_vs_patches(rows: Iterable[Mapping[str, Any]], metric: str = "lambda_max") -> Any:
    """λ_max against the number of patches, one line per layer count.

    Parameters
    ----------
    rows : iterable of mapping
        Result rows of finished runs.
    metric : str
        The row value on the y axis (default ``lambda_max``).

    Returns
    -------
    matplotlib.figure.Figure
        One panel per model kind present (quantum | classical; a kind with no rows has no panel), sharing the
        y axis (logarithmic when every plotted value is positive). Each line is the mean over seeds with error
        bars of one sample standard deviation, labelled "L = ..." (plus qubits/ansatz/aggregation when these
        vary within the panel, so different architectures are never averaged together); the individual seeds
        are small translucent points.

    Raises
    ------
    ValueError
        With no rows.
    """
    title = _TITLE_LAMBDA if metric == "lambda_max" else metric
    return _series_plot(list(rows), metric=metric, x_key="patches", line_key="layers", point_key="patches",
                        suptitle=f"{title} vs number of patches", xlabel="patches", log_x=False)


def plot_lambda_vs_params(rows: Iterable[Mapping[str, Any]], metric: str = "lambda_max") -> Any:
    """λ_max against the number of parameters (log x), one line per patch count; the points of a line are
    its layer counts.

    Parameters
    ----------
    rows : iterable of mapping
        Result rows of finished runs.
    metric : str
        The row value on the y axis (default ``lambda_max``).

    Returns
    -------
    matplotlib.figure.Figure
        Panels, axes, error bars and labels as in :func:`plot_lambda_vs_patches`, lines labelled
        "patches = ..." (plus qubits/ansatz/aggregation when these vary within the panel).

    Raises
    ------
    ValueError
        With no rows.
    """
    title = _TITLE_LAMBDA if metric == "lambda_max" else metric
    return _series_plot(list(rows), metric=metric, x_key="n_params", line_key="patches", point_key="layers",
                        suptitle=f"{title} vs number of parameters", xlabel="trainable parameters", log_x=True)


# ------------------------------------------------------------------------------------------- report
def write_report(rows: Iterable[Mapping[str, Any]], out_dir: Path | str, title: str = DEFAULT_TITLE,
                 missing: Optional[Mapping[str, str]] = None, expected: Optional[int] = None) -> dict[str, Path]:
    """Write the sweep report into ``out_dir``, every file atomically.

    Parameters
    ----------
    rows : iterable of mapping
        Result rows of finished runs.
    out_dir : path-like
        The report directory (created if missing).
    title : str
        Heading of ``report.md``.
    missing : mapping of str to str, optional
        Runs expected but not in ``rows`` -> why (failed, damaged, not finished): listed in ``report.md``
        right under the title, so a partial table is never read as the whole sweep.
    expected : int, optional
        The number of runs of the spec (for the "k of n runs" line).

    Returns
    -------
    dict of str to Path
        The files written, keyed ``results`` (``results.csv``, all rows), ``summary`` (``summary.csv``,
        :func:`summarize` with the seed intervals of :func:`~qlandscape.sweep.effects.ratio_columns`),
        ``effects`` (``effects.csv``, :func:`~qlandscape.sweep.effects.axis_effects`, when an axis varies),
        ``lambda_vs_patches`` and ``lambda_vs_params`` (PNGs) and ``report`` (``report.md``: the title, the
        column legend, the summary tables, the effects with their verdicts and links to the PNGs). A figure that fails to draw is logged, left out
        (any older file of that name deleted) and not linked, so the tables are never lost to a plot.

    Raises
    ------
    ValueError
        With no rows.
    """
    rows = [dict(row) for row in rows]
    if not rows:
        raise ValueError("no finished runs to report (the sweep has no result rows yet)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .effects import axis_effects, ratio_columns  # (effects builds on this module's helpers)

    summary = summarize(rows)
    ratio_columns(summary, rows, GROUP_KEYS)
    effects = axis_effects(rows, GROUP_KEYS)
    paths: dict[str, Path] = {"results": write_csv(rows, out / "results.csv"),
                              "summary": write_csv(summary, out / "summary.csv")}
    if effects:
        paths["effects"] = write_csv(effects, out / "effects.csv")
    drawers = {"lambda_vs_patches": plot_lambda_vs_patches, "lambda_vs_params": plot_lambda_vs_params}
    for name in _FIGURES:
        target = out / f"{name}.png"
        try:
            data = png_bytes(drawers[name](rows))
        except Exception as exc:  # noqa: BLE001 - a figure must never cost the report
            target.unlink(missing_ok=True)
            log.warning("could not draw %s (%s: %s); the report leaves it out", target, type(exc).__name__, exc)
            continue
        atomic_write_bytes(target, data)
        paths[name] = target
    text = render_markdown(summary, title, effects)
    if missing:
        n = expected if expected is not None else len(rows) + len(missing)
        head, _, rest = text.partition("\n\n")
        block = [f"**Incomplete: {len(missing)} of {n} runs are missing or damaged; the tables hold the other "
                 f"{len(rows)}.**", "", "| run | why |", "|---|---|"]
        block += [f"| {name} | {_md_cell(why)} |" for name, why in sorted(missing.items())]
        text = head + "\n\n" + "\n".join(block) + "\n\n" + rest
    figures = [name for name in _FIGURES if name in paths]
    if figures:
        text += "\n## Figures\n\n" + "\n\n".join(f"![{name}]({name}.png)" for name in figures) + "\n"
    text += ("\nAll runs: [results.csv](results.csv); statistics over seeds, with the intervals: "
             "[summary.csv](summary.csv)" + ("; effects and verdicts: [effects.csv](effects.csv)" if effects else "")
             + ".\n")
    atomic_write_bytes(out / "report.md", text.encode("utf-8"))
    paths["report"] = out / "report.md"
    return paths
