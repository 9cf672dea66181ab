"""The sweep report: statistics over seeds that never turn a missing value into 0, CSV that reads back exactly,
the markdown table, the figures' panels and lines, and the report directory."""

from __future__ import annotations

import csv
import math
import random
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from qlandscape.sweep.report import (
    GROUP_KEYS,
    METRICS,
    plot_lambda_vs_params,
    plot_lambda_vs_patches,
    render_markdown,
    summarize,
    to_dataframe,
    write_csv,
    write_report,
)

MODELS = ("quantum", "classical")
PATCHES = (1, 4, 9)
LAYERS = (1, 2)
SEEDS = (0, 1, 2)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _lam(model: str, patches: int, layers: int, seed: int) -> float:
    return (3.0 if model == "quantum" else 7.0) * layers / patches * (1.0 + 0.1 * seed + 0.013 * seed ** 2)


def _row(model: str, patches: int, layers: int, seed: int, **extra) -> dict:
    row = {"run_id": f"{model}-p{patches}-L{layers}-s{seed}", "model": model, "patches": patches, "layers": layers,
           "qubits": 4, "ansatz": "hea", "aggregation": "mean", "seed": seed, "n_params": 12 * patches * layers,
           "lr": 0.01, "epochs": 5, "minimum_epoch": 4, "train_loss": 0.5 / (1 + seed), "train_acc": 0.8 + 0.01 * seed,
           "test_loss": 0.6 + 0.02 * seed, "test_acc": 0.75 + 0.03 * seed + 0.001 * patches,
           "lambda_max": _lam(model, patches, layers, seed), "lambda_max_bound": 1e-6, "lambda_max_converged": True,
           "trace": 10.0 * layers + seed, "trace_stderr": 0.1, "grad_var": 1e-3 / patches * (1 + seed),
           "wall_s": 1.5 + seed, "device": "cpu"}
    row.update(extra)
    return row


@pytest.fixture
def rows() -> list[dict]:
    return [_row(m, p, L, s) for m in MODELS for p in PATCHES for L in LAYERS for s in SEEDS]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _find(summary: list[dict], **keys) -> dict:
    hits = [e for e in summary if all(e[k] == v for k, v in keys.items())]
    assert len(hits) == 1, (keys, hits)
    return hits[0]


# ------------------------------------------------------------------------------------------- summarize
def test_summarize_matches_numpy(rows):
    summary = summarize(rows)
    assert len(summary) == len(MODELS) * len(PATCHES) * len(LAYERS)
    for entry in summary:
        group = [r for r in rows if all(r[k] == entry[k] for k in GROUP_KEYS)]
        assert entry["n_seeds"] == len(SEEDS) and entry["n_runs"] == len(SEEDS)
        for m in METRICS:
            ref = np.array([r[m] for r in group], dtype=float)
            assert entry[f"{m}_mean"] == pytest.approx(np.mean(ref), rel=1e-12, abs=1e-12)
            assert entry[f"{m}_std"] == pytest.approx(np.std(ref, ddof=1), rel=1e-12, abs=1e-12)
            assert entry[f"{m}_min"] == np.min(ref) and entry[f"{m}_max"] == np.max(ref)
            assert entry[f"{m}_n"] == len(SEEDS)


def test_summarize_skips_missing_values_never_zeroes_them(rows):
    target = dict(model="quantum", patches=4, layers=2)
    for r in rows:
        if all(r[k] == v for k, v in target.items()):
            if r["seed"] == 1:
                r["lambda_max"] = None
            if r["seed"] == 2:
                r["test_acc"] = float("nan")
            r["grad_var"] = None  # missing for the whole group
    entry = _find(summarize(rows), **target)
    lam = [_lam("quantum", 4, 2, s) for s in (0, 2)]
    assert entry["lambda_max_n"] == 2
    assert entry["lambda_max_mean"] == pytest.approx(np.mean(lam), rel=1e-12)
    assert entry["lambda_max_std"] == pytest.approx(np.std(lam, ddof=1), rel=1e-12)
    assert entry["lambda_max_min"] == min(lam)  # a zeroed None would be the minimum
    acc = [0.75 + 0.03 * s + 0.004 for s in (0, 1)]
    assert entry["test_acc_n"] == 2 and entry["test_acc_mean"] == pytest.approx(np.mean(acc), rel=1e-12)
    assert entry["grad_var_n"] == 0
    assert all(entry[f"grad_var_{s}"] is None for s in ("mean", "std", "min", "max"))
    assert entry["n_seeds"] == 3  # the run still counts


def test_summarize_one_seed_has_no_std(rows):
    one = [r for r in rows if r["seed"] == 0]
    for entry in summarize(one):
        assert entry["n_seeds"] == 1
        assert entry["lambda_max_std"] is None
        assert entry["lambda_max_mean"] == entry["lambda_max_min"] == entry["lambda_max_max"]


def test_summarize_sorted_quantum_first_then_keys(rows):
    shuffled = list(rows) + [_row("other", 4, 1, 0), _row("classical", 4, 1, 0, qubits=None)]
    random.Random(3).shuffle(shuffled)
    summary = summarize(shuffled)
    keys = [tuple(e[k] for k in GROUP_KEYS) for e in summary]
    models = [k[0] for k in keys]
    assert models == ["quantum"] * 6 + ["classical"] * 7 + ["other"]
    for model in ("quantum", "classical"):
        pl = [(k[1], k[2]) for k in keys if k[0] == model and k[3] == 4]
        assert pl == sorted(pl)
    # within classical/patches 4/layers 1, the qubits=None group comes after qubits=4
    same = [k[3] for k in keys if k[:3] == ("classical", 4, 1)]
    assert same == [4, None]


def test_summarize_keeps_architectures_apart(rows):
    rows = rows + [_row("quantum", 4, 1, s, ansatz="strong", lambda_max=100.0) for s in SEEDS]
    summary = summarize(rows)
    hea = _find(summary, model="quantum", patches=4, layers=1, ansatz="hea")
    strong = _find(summary, model="quantum", patches=4, layers=1, ansatz="strong")
    assert strong["lambda_max_mean"] == 100.0 and hea["lambda_max_max"] < 100.0


# ------------------------------------------------------------------------------------------- tables
def test_write_csv_round_trip(tmp_path, rows):
    rows[0]["lambda_max"] = None
    path = write_csv(rows, tmp_path / "results.csv")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        back = list(reader)
    assert header[:len(GROUP_KEYS) + 1] == [*GROUP_KEYS, "seed"]
    rest = header[len(GROUP_KEYS) + 1:]
    assert rest == sorted(rest) and set(header) == set(rows[0])
    assert len(back) == len(rows)
    for orig, got in zip(rows, back):
        for key, value in orig.items():
            if value is None:
                assert got[key] == ""
            elif isinstance(value, float):
                assert float(got[key]) == value  # exact
            else:
                assert got[key] == str(value)


def test_write_csv_summary(tmp_path, rows):
    summary = summarize(rows)
    with open(write_csv(summary, tmp_path / "summary.csv"), newline="") as fh:
        back = list(csv.DictReader(fh))
    assert len(back) == len(summary)
    for orig, got in zip(summary, back):
        assert float(got["lambda_max_mean"]) == orig["lambda_max_mean"]
        assert "seed" not in got


def test_render_markdown(rows):
    rows = [r for r in rows if not (r["model"] == "classical" and r["patches"] == 9 and r["seed"] > 0)]
    summary = summarize(rows)
    text = render_markdown(summary, "My sweep")
    assert text.startswith("# My sweep")
    assert "## quantum" in text and "## classical" in text
    assert text.index("## quantum") < text.index("## classical")
    assert "Columns:" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "patches" not in line]
    assert len(table) == len(summary)
    for entry in summary:
        lam = f"{entry['lambda_max_mean']:.4g}"
        if entry["lambda_max_std"] is not None:
            lam += f" ± {entry['lambda_max_std']:.4g}"
        n_params = str(int(entry["n_params_mean"]))
        hits = [line for line in table if lam in line and f"| {entry['patches']} | {entry['layers']} |" in line]
        assert len(hits) == 1, (entry, lam)
        assert f"{entry['test_acc_mean']:.4g}" in hits[0] and n_params in hits[0]
        assert f"| {entry['n_seeds']} |" in hits[0]
    # a known number at 4 significant digits: quantum, 1 patch, 1 layer
    lam = [_lam("quantum", 1, 1, s) for s in SEEDS]
    assert f"{np.mean(lam):.4g} ± {np.std(lam, ddof=1):.4g}" in text


def test_render_markdown_marks_missing(rows):
    for r in rows:
        if r["model"] == "quantum" and r["patches"] == 1 and r["layers"] == 1:
            r["lambda_max"] = None if r["seed"] else r["lambda_max"]
            r["test_acc"] = None
    text = render_markdown(summarize(rows), "t")
    line = next(ln for ln in text.splitlines() if ln.startswith("| 1 | 1 |"))
    assert "(1/3)" in line and "—" in line and " 0 |" not in line


# ------------------------------------------------------------------------------------------- figures
def _errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_plot_lambda_vs_patches(rows):
    fig = plot_lambda_vs_patches(rows)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["quantum", "classical"]
    assert "largest Hessian eigenvalue at the minimum" in fig._suptitle.get_text()
    for ax, model in zip(fig.axes, MODELS):
        bars = _errorbars(ax)
        assert len(bars) == len(LAYERS)
        assert [b.get_label() for b in bars] == [f"L = {L}" for L in LAYERS]
        assert ax.get_yscale() == "log"
        for bar, L in zip(bars, LAYERS):
            x, y = bar.lines[0].get_data()
            assert list(x) == list(PATCHES)
            ref = [np.mean([_lam(model, p, L, s) for s in SEEDS]) for p in PATCHES]
            np.testing.assert_allclose(y, ref, rtol=1e-12)
        # the individual seeds: one scatter per (line, point)
        n_points = sum(len(c.get_offsets()) for c in ax.collections if c.get_offsets().ndim == 2
                       and type(c).__name__ == "PathCollection")
        assert n_points == len(PATCHES) * len(LAYERS) * len(SEEDS)
        assert {t.get_text() for t in ax.get_legend().get_texts()} == {"L = 1", "L = 2"}
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[1])


def test_plot_lambda_vs_params(rows):
    fig = plot_lambda_vs_params(rows)
    assert len(fig.axes) == 2
    for ax, model in zip(fig.axes, MODELS):
        bars = _errorbars(ax)
        assert [b.get_label() for b in bars] == [f"patches = {p}" for p in PATCHES]
        assert ax.get_xscale() == "log"
        for bar, p in zip(bars, PATCHES):
            x, y = bar.lines[0].get_data()
            assert list(x) == [12 * p * L for L in LAYERS]
            np.testing.assert_allclose(y, [np.mean([_lam(model, p, L, s) for s in SEEDS]) for L in LAYERS])


def test_plot_one_model_one_panel(rows):
    quantum = [r for r in rows if r["model"] == "quantum"]
    for plot in (plot_lambda_vs_patches, plot_lambda_vs_params):
        fig = plot(quantum)
        assert len(fig.axes) == 1 and fig.axes[0].get_title() == "quantum"


def test_plot_linear_y_with_nonpositive_values(rows):
    rows[0]["lambda_max"] = -0.5
    fig = plot_lambda_vs_patches(rows)
    assert all(ax.get_yscale() == "linear" for ax in fig.axes)


def test_plot_labels_name_varying_architecture(rows):
    rows = rows + [_row("quantum", p, L, s, qubits=6) for p in PATCHES for L in LAYERS for s in SEEDS]
    fig = plot_lambda_vs_patches(rows)
    quantum, classical = fig.axes
    labels = [b.get_label() for b in _errorbars(quantum)]
    assert labels == ["L = 1, qubits = 4", "L = 1, qubits = 6", "L = 2, qubits = 4", "L = 2, qubits = 6"]
    assert [b.get_label() for b in _errorbars(classical)] == ["L = 1", "L = 2"]


def test_plot_without_values_still_draws(rows):
    for r in rows:
        r["lambda_max"] = None
    fig = plot_lambda_vs_patches(rows)
    assert len(fig.axes) == 2 and all(not _errorbars(ax) for ax in fig.axes)
    with pytest.raises(ValueError):
        plot_lambda_vs_patches([])


# ------------------------------------------------------------------------------------------- report
def test_write_report(tmp_path, rows):
    out = tmp_path / "report"
    paths = write_report(rows, out, title="Kawase sweep")
    assert set(paths) == {"results", "summary", "effects", "report", "lambda_vs_patches", "lambda_vs_params"}
    assert {p.name for p in paths.values()} == {"results.csv", "summary.csv", "effects.csv", "report.md",
                                                "lambda_vs_patches.png", "lambda_vs_params.png"}
    for p in paths.values():
        assert p.parent == out and p.is_file() and p.stat().st_size > 0
    for name in ("lambda_vs_patches", "lambda_vs_params"):
        assert paths[name].read_bytes()[:8] == PNG_MAGIC
    md = paths["report"].read_text()
    assert md.startswith("# Kawase sweep")
    assert "(lambda_vs_patches.png)" in md and "(lambda_vs_params.png)" in md
    with open(paths["results"], newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    with open(paths["summary"], newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(summarize(rows))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert not plt.get_fignums()  # figures closed


def test_write_report_empty_rows(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        write_report([], tmp_path / "r")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------- pandas
def test_to_dataframe(rows):
    pd = pytest.importorskip("pandas")
    rows[0]["lambda_max"] = None
    df = to_dataframe(rows)
    assert isinstance(df, pd.DataFrame)
    assert len(df) == len(rows) and list(df.columns[:len(GROUP_KEYS) + 1]) == [*GROUP_KEYS, "seed"]
    assert math.isnan(df["lambda_max"].iloc[0])
    assert df["lambda_max"].iloc[1] == rows[1]["lambda_max"]


def test_to_dataframe_without_pandas(monkeypatch, rows):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'pip install "qlandscape\[report\]"'):
        to_dataframe(rows)


# ------------------------------------------------------------------------------------------- intervals and effects
def test_summary_csv_holds_the_seed_intervals_and_the_ratios(tmp_path, rows):
    """summary.csv: each architecture's interval of the seed mean of lambda_max contains the mean, and the
    ratio to the series' smallest patch count is the ratio of the seed means (here exactly 1 / patches)."""
    paths = write_report(rows, tmp_path / "r")
    with open(paths["summary"], newline="") as fh:
        back = list(csv.DictReader(fh))
    for got in back:
        mean = float(got["lambda_max_mean"])
        assert float(got["lambda_max_lo"]) < mean < float(got["lambda_max_hi"])
        if got["patches"] == "1":
            assert got["lambda_max_vs_patches_ratio"] == ""
        else:
            assert float(got["lambda_max_vs_patches_ratio"]) == pytest.approx(1 / int(got["patches"]), rel=1e-12)
            assert float(got["lambda_max_vs_patches_lo"]) <= 1 / int(got["patches"]) <= float(
                got["lambda_max_vs_patches_hi"])


def test_effects_decide_the_papers_two_claims_from_intervals(rows):
    """Synthetic lambda = c * layers / patches * (seed factor): falls 9x with patches and rises 2x with
    layers in every series, so both claims PASS with the ratio 1/9 (2) inside its interval; with one seed the
    same data is INCONCLUSIVE; with a run flagged by the fit check the series is INCONCLUSIVE and says why."""
    from qlandscape.sweep.effects import axis_effects

    effects = axis_effects(rows, GROUP_KEYS)
    assert len(effects) == 2 * 2 + 2 * 3  # patches: 2 models x 2 depths; layers: 2 models x 3 patch counts
    for e in effects:
        want = 1 / 9 if e["axis"] == "patches" else 2.0
        assert e["ratio"] == pytest.approx(want, rel=1e-12) and e["ratio_lo"] <= want <= e["ratio_hi"]
        assert e["verdict"] == "PASS" and e["n_seeds"] == "3/3"
    slope = next(e for e in effects if e["axis"] == "patches")
    assert slope["slope"] == pytest.approx(-1.0, rel=1e-9)
    one = axis_effects([r for r in rows if r["seed"] == 0], GROUP_KEYS)
    assert {e["verdict"] for e in one} == {"INCONCLUSIVE"} and all("fewer than 3" in e["note"] for e in one)
    flagged = [dict(r, fit_ok=False) if (r["model"], r["patches"], r["layers"], r["seed"]) == ("quantum", 9, 1, 0)
               else r for r in rows]
    e = next(e for e in axis_effects(flagged, GROUP_KEYS) if e["model"] == "quantum" and e["axis"] == "patches"
             and e["layers"] == 1)
    assert e["verdict"] == "INCONCLUSIVE" and e["note"] == "1 of 9 runs not at a minimum"


def test_report_says_what_each_column_means(rows):
    """Classical rows show the matched QNN's qubits and ansatz in parentheses, and the legend says so; the
    eigenvalue bound is described as the eigensolver's error, not an interval over seeds."""
    from qlandscape.sweep.effects import axis_effects, ratio_columns

    summary = summarize(rows)
    ratio_columns(summary, rows, GROUP_KEYS)
    text = render_markdown(summary, "t", axis_effects(rows, GROUP_KEYS))
    classical = [ln for ln in text.split("## classical")[1].splitlines() if ln.startswith("| 1 |")]
    assert classical and all("| (4) | (hea) | mean |" in ln for ln in classical)
    quantum = [ln for ln in text.split("## classical")[0].splitlines() if ln.startswith("| 1 |")]
    assert quantum and all("| 4 | hea | mean |" in ln for ln in quantum)
    assert "not an interval over seeds" in text and "the QNN whose parameter count the patch MLP matches" in text
    assert "## Effects" in text and "lambda_max falls with patches | PASS" in text
