# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Classical vs quantum landscapes: the patch QNN and its parameter-matched patch MLP
#
# The patch QNN of Kawase (2025) (`../shared/papers/kawase2025.md`; here its `"digits"` analogue: 8x8 digits,
# four 4x4 patches, one 4-qubit circuit of L=2 layers per patch, class scores averaged over patches, x10) and the
# classical patch MLP with the same patches, aggregation and positional bias whose parameter count is closest
# (`ql.PatchMLP.matched_to`) are trained on the same digits with the same optimizer (Adam, lr 0.02 cosine-annealed
# to 0 over the run, so that the end is close to a stationary point; "the minimum" is the checkpoint with the
# lowest training loss, as in Kawase's code), and measured at their minima with the same tools: the Hessian's top
# eigenvalues (Lanczos), trace (Hutchinson), spectral density (stochastic Lanczos quadrature), filter-normalized
# 1-D / 2-D scans along the same direction seeds, and, at initialization, the barren-plateau diagnostic (variance
# over random initializations of the training-loss gradient).
# Both models have a few hundred parameters, so the exact dense Hessian spectrum is computed too and serves as
# the reference for the estimators.
#
# Claims checked (the rules were fixed before the first full run; each verdict is PASS / FAIL / INCONCLUSIVE from
# a 95% bootstrap interval of the effect, `qlandscape.stats`, decided by `qlandscape.claims`):
#
# 1. Kawase 2025 v2 (abstract, `kawase2025.md`, "v2 additions"): the full Hessian spectrum at the minimum is a
#    bulk near zero plus about C = 10 outliers (the number of classes), as in classical deep networks. Rule: in
#    the dense spectrum, take the 30 largest eigenvalues (the positive ones among them), find the largest gap
#    between consecutive ones on a log scale; the outliers are the eigenvalues above it. The effect is the mean
#    outlier count over 5 training seeds (seed-bootstrap interval): PASS if the interval lies inside [8, 11],
#    FAIL if it lies outside. One verdict for the QNN, one for the classical baseline.
#    (A first full run used 3 seeds, whose expanded interval is only the range of the resamples; the seeds were
#    raised to 5, the library's convention, for the run the README quotes. The rules did not change.)
# 2. Barren plateaus (McClean et al. 2018, Nat. Commun. 9, 4812): the gradient variance at random initialization
#    falls with the number of qubits. The 4x4 patches (16 features, two encodings) allow 1, 2, 4 or 8 qubits per
#    patch, but a 10-class readout needs at least 4 (3 Paulis per qubit), so the sweep runs on a binary digits
#    task (0 vs 1) with the same local readout `<X0>, <Z0>` at every size; the 10-class task adds 4 and 8 qubits.
#    The 16 pixels of a patch are spread over its qubits, so width is confounded with the features each qubit
#    encodes (and the circuit's depth in rotations per qubit).
#    Rule: each step 1 -> 2 -> 4 -> 8 qubits is one part, its effect the ratio of the mean variance over the
#    circuit angles (positional bias excluded) at the larger width to that at the smaller, with an interval from
#    resampling the 20 random initializations; PASS if every step's interval is below 1 (FAIL if one step's
#    Bonferroni interval is above 1). The fitted exponential rate is reported (McClean: exponential decay for
#    deep random circuits; Cerezo et al. 2021: at most polynomial for a local cost at shallow depth, as here).
# 3. The patch design keeps gradients trainable (Kawase 2025's motivation): with `sum` aggregation (no 1/P
#    factor; coefficient 10/4, so P = 4 is the same function as the preset) the gradient variance per circuit
#    angle does not fall with the number of patches P = 4, 9, 25: effect variance(P=25) / variance(P=4), interval
#    over initializations; PASS if it is above 0.5.
#
# Consistency checks (they hold by construction when the code is right, so they are printed apart from the
# claims and are no evidence for them):
#
# - With the preset's `mean` aggregation each patch enters with weight 10/P, so the variance per angle falls
#   like 1/P^2 by construction: the fitted log-log slope is in [-2.5, -1.5].
# - Correctness of the estimators: Lanczos top-10 eigenvalues equal the dense ones to 1e-6 relative; the
#   Hutchinson and SLQ trace estimates are within 3 of their own standard errors of the exact trace.
#
# Public API only (`ql.PatchQNN`, `ql.PatchMLP.matched_to`, `ql.train`, `ql.Objective`, `ql.dense_hessian`,
# `ql.dense_eigs`, `ql.hessian_eigs`, `ql.hessian_trace`, `ql.spectral_density`, `ql.random_direction`,
# `ql.scan_1d` / `ql.scan_2d`, `ql.gradient_variance`). Run as a script
# (`python notebooks/02_classical_vs_quantum.py`) or with jupytext; `QLANDSCAPE_FAST=1` is a seconds-long smoke
# run whose verdicts mean nothing.

# %% tags=["parameters"]
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # figures show inline in Jupyter, and are saved to OUT either way
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import qlandscape as ql
from qlandscape import claims, stats
from qlandscape.landscape.plot import plot_contour
from qlandscape.sweep.report import write_csv

FAST = os.environ.get("QLANDSCAPE_FAST", "0") == "1"
OUT = Path(os.environ.get("QLANDSCAPE_OUT", "runs/notebook_classical_vs_quantum"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

# 600 digits (480 training) as the digits-small sweep preset: the exact QNN Hessian costs one HVP per parameter
data = ql.load_digits(n_samples=300 if FAST else 600, seed=0)
LAYERS = 1 if FAST else 2
EPOCHS = 2 if FAST else 60
LR = 0.02                       # Adam, batches of 50 (the digits-small preset), cosine-annealed to 0
N_ANALYSIS = 32 if FAST else None   # training samples the Hessian sees (None: all)
TOP_K = 3 if FAST else 10
SLQ_PROBES, SLQ_STEPS = (3, 20) if FAST else (10, 60)
HUTCH_PROBES = 20 if FAST else 100
GRID_1D, GRID_2D = (5, 5) if FAST else (41, 21)
N_INITS = 3 if FAST else 20     # initializations per gradient-variance point
GV_SAMPLES = 50 if FAST else 200
QUBITS = (1, 2) if FAST else (1, 2, 4, 8)
QUBITS_10 = (4,) if FAST else (4, 8)
PATCHES = (4, 9) if FAST else (4, 9, 25)
SEEDS = (0,) if FAST else (0, 1, 2, 3, 4)   # training seeds for the spectrum claim (the figures use the first)
x_train, y_train = data.train
analysis = (x_train, y_train) if N_ANALYSIS is None else (x_train[:N_ANALYSIS], y_train[:N_ANALYSIS])
print(f"{'FAST smoke run' if FAST else 'full run'}: {x_train.shape[0]} training / {data.x_test.shape[0]} test digits, "
      f"L={LAYERS}, {EPOCHS} epochs; Hessian on {analysis[0].shape[0]} training samples")

# %% [markdown]
# ## The two models: same patches, aggregation and positional bias; matched parameter counts

# %%
def outlier_count(lam: np.ndarray) -> tuple[int, float]:
    """Eigenvalues above the largest log-gap among the positive ones of the 30 largest, and that gap (log10)."""
    top = lam[:30][lam[:30] > 0]
    gaps = np.log10(top[:-1]) - np.log10(top[1:])
    n_out = int(np.argmax(gaps)) + 1
    return n_out, float(gaps[n_out - 1])


models, curv = {}, {}               # the first seed's models and measurements (figures, estimator checks)
outliers: dict[str, list[int]] = {"patch QNN": [], "patch MLP": []}
for seed in SEEDS:
    qnn = ql.PatchQNN("digits", n_patches=4, layers=LAYERS, n_qubits=4, device="auto", seed=seed)
    mlp = ql.PatchMLP.matched_to(qnn, seed=seed)
    if seed == SEEDS[0]:
        print(qnn.extra_repr())
        print(mlp.extra_repr(), mlp.matched_info)
    for name, model in (("patch QNN", qnn), ("patch MLP", mlp)):
        trained, tr = ql.train(model.double(), data, epochs=EPOCHS, lr=LR, optimizer="adam", batch_size=50,
                               seed=seed, schedule="cosine", select="lowest_train_loss", progress=False)
        i = tr.selected
        obj = ql.Objective(trained, "cross_entropy", analysis, dtype=torch.float64)
        H = ql.dense_hessian(obj)
        lam = ql.dense_eigs(H, k=obj.n_params).eigenvalues          # every eigenvalue, descending
        n_out, gap = outlier_count(lam)
        outliers[name].append(n_out)
        print(f"seed {seed} {name}: {model.n_params} parameters; minimum at epoch {tr.epochs_at_records()[i]:.0f}: "
              f"train loss {tr.train_loss[i]:.4f}, accuracy {tr.train_metric[i]:.3f}; test accuracy "
              f"{tr.test_metric[i]:.3f} ({tr.wall_time_s:.1f} s); {n_out} outliers (gap x{10 ** gap:.3g}, "
              f"lambda_{n_out} = {lam[n_out - 1]:.4g} -> lambda_{n_out + 1} = {lam[n_out]:.4g})")
        if seed != SEEDS[0]:
            continue
        models[name] = trained
        exact = ql.hessian_trace(H, method="exact", progress=False)
        eig = ql.hessian_eigs(obj, k=TOP_K, method="lanczos", tol=1e-8, seed=0, progress=False)
        hutch = ql.hessian_trace(obj, method="hutchinson", n_probes=HUTCH_PROBES, seed=0, progress=False)
        slq = ql.spectral_density(obj, n_probes=SLQ_PROBES, n_steps=SLQ_STEPS, seed=0, progress=False)
        curv[name] = dict(lam=lam, eig=eig, exact=exact.estimate, hutch=hutch, slq=slq, n_out=n_out, loss=obj.loss(),
                          gap=gap, obj=obj, test=float(tr.test_metric[i]))
        print(f"   loss {obj.loss():.4f}, |gradient| {float(obj.gradient().norm()):.2g}; dense top-{TOP_K} "
              f"{np.array2string(lam[:TOP_K], precision=4)}; lambda_min {lam[-1]:.4g}; {int(np.sum(lam < 0))} "
              f"negative eigenvalues of {lam.size}")
        print(f"   exact trace {exact.estimate:.5g}; Hutchinson {hutch.estimate:.5g} +- {hutch.stderr:.2g}; "
              f"SLQ {slq.trace_estimate:.5g} +- {slq.trace_stderr:.2g}; Lanczos {eig.n_hvp} HVPs, "
              f"converged={eig.converged}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
for ax, (name, c) in zip(axes[:2], curv.items()):
    slq = c["slq"]
    ax.hist(c["lam"], bins=80, range=(slq.grid[0], slq.grid[-1]), density=True, color="0.75",
            label=f"dense eigenvalues ({c['lam'].size})")
    ax.plot(slq.grid, np.clip(slq.density, 1e-8, None), color="C0", label=f"SLQ ({SLQ_PROBES} probes x {SLQ_STEPS})")
    ax.set(yscale="log", ylim=(1e-6, None), xlabel="eigenvalue", ylabel="density", title=f"{name}: Hessian spectrum")
    ax.legend(fontsize="small")
for i, (name, c) in enumerate(curv.items()):
    ranks = np.arange(1, 31)
    axes[2].semilogy(ranks, np.clip(c["lam"][:30], 1e-12, None), "o-" if i == 0 else "s--", ms=3, color=f"C{i}",
                     label=f"{name} (dense; {c['n_out']} above the largest gap)")
    axes[2].semilogy(np.arange(1, TOP_K + 1), c["eig"].eigenvalues, "x", color="k", ms=7,
                     label="Lanczos top-k" if i == 0 else None)
    axes[2].axvline(c["n_out"] + 0.5, color=f"C{i}", lw=0.8, ls=":")
axes[2].set(xlabel="rank", ylabel="eigenvalue", title="the 30 largest eigenvalues")
axes[2].legend(fontsize="small")
fig.tight_layout()
fig.savefig(OUT / "classical_vs_quantum_spectra.png", dpi=110)

# %% [markdown]
# ## 1-D and 2-D filter-normalized random-direction scans (same seeds, same grid)
#
# The library's default for 1-D tensors applies: the QNN's angle vectors are mostly 1-D, so each is rescaled
# as a whole to the norm of the circuit's angles (`one_d="auto"` -> "layer"); the MLP's biases are left still.

# %%
scans = {}
for name, c in curv.items():
    obj = c["obj"]
    d1 = ql.random_direction(obj.space, obj.theta0, normalization="filter", seed=1)
    d2 = ql.random_direction(obj.space, obj.theta0, normalization="filter", seed=2)
    scans[name] = (ql.scan_1d(obj, d1, span=(-1, 1), n_points=GRID_1D, progress=False),
                   ql.scan_2d(obj, d1, d2, span=(-1, 1), n_points=GRID_2D, progress=False))
    s1 = scans[name][0]
    print(f"{name}: loss at the minimum {s1.center_loss:.4f}; along d1 at alpha=-1 / +1: {s1.loss[0]:.4f} / "
          f"{s1.loss[-1]:.4f}")

fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
for i, (name, (s1, _)) in enumerate(scans.items()):
    axes[0].plot(s1.alphas, s1.loss, "o-" if i == 0 else "s--", ms=3, label=name)
axes[0].set(xlabel="alpha (filter-normalized direction, seed 1)", ylabel="training loss", yscale="log",
            title="1-D scans through the minima")
axes[0].legend()
for ax, (name, (_, s2)) in zip(axes[1:], scans.items()):
    plot_contour(s2, ax=ax, levels=20, log=True)
    ax.set_title(f"{name}: 2-D scan (log10 loss)")
fig.tight_layout()
fig.savefig(OUT / "classical_vs_quantum_scans.png", dpi=110)

# %% [markdown]
# ## Barren-plateau diagnostic: gradient variance at initialization
#
# `ql.gradient_variance` draws `N_INITS` seeds, builds a fresh model per seed, and takes the gradient of the
# mean cross-entropy over the first `GV_SAMPLES` training digits; reported is the variance over initializations,
# averaged over the circuit angles (`params="circuits.*"`) or the patch MLPs' weights (`"patch_nets.*"`).

# %%
gv_data = (x_train[:GV_SAMPLES], y_train[:GV_SAMPLES])
binary = ql.load_digits(classes=(0, 1), n_samples=None, seed=0)
gv_binary = (binary.x_train[:GV_SAMPLES], binary.y_train[:GV_SAMPLES])


def circuit_variance(data_xy, **kw) -> ql.GradientVarianceResult:
    return ql.gradient_variance(lambda s: ql.PatchQNN("digits", layers=LAYERS, device="auto", seed=s, **kw),
                                "cross_entropy", data_xy, n_inits=N_INITS, seed=0, params="circuits.*",
                                progress=False)


gv_qubits = {n: circuit_variance(gv_binary, n_patches=4, n_qubits=n, n_classes=2, observables=("X0", "Z0"))
             for n in QUBITS}
gv_qubits10 = {n: circuit_variance(gv_data, n_patches=4, n_qubits=n) for n in QUBITS_10}
var_qubits = {n: r.mean_variance for n, r in gv_qubits.items()}
var_qubits10 = {n: r.mean_variance for n, r in gv_qubits10.items()}
print("binary task, <X0>,<Z0> readout: " + ", ".join(f"{n} qubits {v:.4g}" for n, v in var_qubits.items()))
print("10 classes, default readout:    " + ", ".join(f"{n} qubits {v:.4g}" for n, v in var_qubits10.items()))

var_patches, gv_patches = {}, {}
for agg, coef in (("mean", 10.0), ("sum", 2.5)):
    q_row, m_row = {}, {}
    for P in PATCHES:
        q_row[P] = circuit_variance(gv_data, n_patches=P, n_qubits=4, aggregation=agg, coefficient=coef)
        ref = ql.PatchQNN("digits", n_patches=P, layers=LAYERS, n_qubits=4, device="auto", aggregation=agg,
                          coefficient=coef)
        m_row[P] = ql.gradient_variance(lambda s, ref=ref: ql.PatchMLP.matched_to(ref, seed=s), "cross_entropy",
                                        gv_data, n_inits=N_INITS, seed=0, params="patch_nets.*", progress=False)
    gv_patches[f"patch QNN, {agg}"], gv_patches[f"patch MLP, {agg}"] = q_row, m_row
var_patches = {key: {P: r.mean_variance for P, r in row.items()} for key, row in gv_patches.items()}
for key, row in var_patches.items():
    print(f"{key:16s}: " + ", ".join(f"P={P} {v:.4g}" for P, v in row.items()))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
axes[0].semilogy(list(var_qubits), list(var_qubits.values()), "o-", label="2 classes, readout <X0>, <Z0>")
axes[0].semilogy(list(var_qubits10), list(var_qubits10.values()), "s--", label="10 classes, default readout")
axes[0].set(xlabel="qubits per patch (4 patches, 4x4 pixels)", ylabel="mean Var[dL/d angle] at init",
            title="gradient variance vs qubits", xticks=sorted(set(QUBITS) | set(QUBITS_10)))
axes[0].legend()
for i, (key, row) in enumerate(var_patches.items()):
    axes[1].loglog(list(row), list(row.values()), "o-" if "QNN" in key else "s--", color=f"C{i // 2}", label=key)
Ps = np.array(PATCHES, dtype=float)
first = var_patches["patch QNN, mean"][PATCHES[0]]
axes[1].loglog(Ps, first * (Ps / Ps[0]) ** -2.0, ":", color="0.5", label="1/P^2 from P=4")
axes[1].set(xlabel="patches P (4 qubits)", ylabel="mean Var[dL/d theta] at init", xticks=list(PATCHES),
            xticklabels=[str(p) for p in PATCHES], title="gradient variance vs patches")
axes[1].tick_params(axis="x", which="minor", labelbottom=False)
axes[1].legend(fontsize="small")
fig.tight_layout()
fig.savefig(OUT / "classical_vs_quantum_gradvar.png", dpi=110)

# %% [markdown]
# ## Claim checks

# %%
def variance_ratio(num: ql.GradientVarianceResult, den: ql.GradientVarianceResult) -> stats.Estimate:
    """Mean-over-parameters gradient variance of ``num`` / that of ``den``, with an interval from resampling
    each side's random initializations (independent groups: different models)."""
    return stats.bootstrap_rows([num.rows(), den.rows()],
                                lambda a, b: float(a.var(0, ddof=1).mean() / b.var(0, ddof=1).mean()))


results_claims = []
for name in curv:
    results_claims.append(claims.check(
        f"{name}: the Hessian spectrum is a bulk plus about C=10 outliers (eigenvalues above the largest log-gap "
        "among the top 30; Kawase 2025 v2)", stats.mean(outliers[name]), claims.Rule(within=(8.0, 11.0)),
        effect=f"mean outlier count over seeds (counts {outliers[name]})"))
steps = list(zip(QUBITS[:-1], QUBITS[1:]))
results_claims.append(claims.all_of(
    "barren plateau: the circuit-angle gradient variance at init falls at every step of the qubit sweep "
    "(McClean et al. 2018)",
    [claims.check(f"{a} -> {b} qubits", variance_ratio(gv_qubits[b], gv_qubits[a]), claims.Rule(below=1.0),
                  effect=f"variance({b}) / variance({a})") for a, b in steps], effect="every step falls"))
vq = np.array(list(var_qubits.values()))
rate = float(np.polyfit(np.array(QUBITS, dtype=float), np.log(vq), 1)[0])
q_sum = gv_patches["patch QNN, sum"]
results_claims.append(claims.check(
    f"sum aggregation: the circuit-angle gradient variance does not fall with the patch count (P={PATCHES[-1]} vs "
    f"P={PATCHES[0]})", variance_ratio(q_sum[PATCHES[-1]], q_sum[PATCHES[0]]), claims.Rule(above=0.5),
    effect=f"variance(P={PATCHES[-1]}) / variance(P={PATCHES[0]})"))

consistency = []
q_mean = var_patches["patch QNN, mean"]
slope = float(np.polyfit(np.log(Ps), np.log(list(q_mean.values())), 1)[0])
m_slope = float(np.polyfit(np.log(Ps), np.log(list(var_patches["patch MLP, mean"].values())), 1)[0])
consistency.append(claims.consistency(
    "mean aggregation weights each patch 10/P, so the circuit-angle gradient variance falls ~1/P^2 (log-log slope "
    "in [-2.5, -1.5])", -2.5 <= slope <= -1.5,
    f"slope {slope:.3f} (patch MLP: {m_slope:.3f}); " + ", ".join(f"P={P}: {v:.3g}" for P, v in q_mean.items())))
rel = {n: float(np.max(np.abs(c["eig"].eigenvalues - c["lam"][:TOP_K]) / np.abs(c["lam"][:TOP_K])))
       for n, c in curv.items()}
consistency.append(claims.consistency(
    f"[library] Lanczos top-{TOP_K} equal the dense eigenvalues to 1e-6 relative", all(r <= 1e-6 for r in rel.values()),
    "; ".join(f"{n}: max rel. diff {r:.2g}" for n, r in rel.items())))
for label, key, value, err in (("Hutchinson", "hutch", "estimate", "stderr"),
                               ("SLQ", "slq", "trace_estimate", "trace_stderr")):
    z = {n: abs(getattr(c[key], value) - c["exact"]) / getattr(c[key], err) for n, c in curv.items()}
    consistency.append(claims.consistency(
        f"[library] the {label} trace is within 3 standard errors of the exact trace", all(v <= 3 for v in z.values()),
        "; ".join(f"{n}: {getattr(c[key], value):.5g} +- {getattr(c[key], err):.2g} vs {c['exact']:.5g} "
                  f"({z[n]:.2f} SE)" for n, c in curv.items())))
print("\n".join(claims.report_lines(results_claims, consistency)))
print("  qubit sweep: " + ", ".join(f"n={n}: {v:.3g}" for n, v in var_qubits.items())
      + f"; fitted rate {rate:.3f} per qubit (ln); 10 classes: "
      + ", ".join(f"n={n}: {v:.3g}" for n, v in var_qubits10.items()))
print("  sum aggregation: " + ", ".join(f"P={P}: {v:.3g}" for P, v in var_patches["patch QNN, sum"].items()))
for name, c in curv.items():
    print(f"  {name} (seed {SEEDS[0]}): top-12 {np.array2string(c['lam'][:12], precision=3)}; trace {c['exact']:.4g}; "
          f"test accuracy {c['test']:.3f}")
write_csv(claims.rows(results_claims, consistency), OUT / "claims.csv")
if FAST:
    print("(FAST smoke run: tiny models trained for 2 epochs on few samples; these verdicts are not evidence either way)")
