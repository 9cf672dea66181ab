# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Adversarial training vs flatness
#
# Claim checked (Prabhu et al., "Understanding Adversarial Robustness Through Loss Landscape Geometries"):
# adversarial training does **not** make the minimum flatter. Two networks of the same architecture, the
# same initialization and the same minibatch order are trained on the digits, one on clean batches and one
# on PGD adversarial batches (Madry et al. 2018). Both are measured on the same evaluation data (the
# training set) with the same tools: the Hessian's top eigenvalue and trace, epsilon-sharpness in a
# filter-normalized ball (a lower bound on the largest loss increase, by projected gradient ascent), and
# filter-normalized 1-D / 2-D surfaces along the same random direction seeds; robust accuracy on the test
# set shows that the adversarial training worked. The pair is trained for each of 5 seeds (initialization
# and minibatch order), so every comparison is paired by seed.
#
# **Rules, fixed before the run.** Each effect is the ratio adversarial / standard of the seed means of a
# measure, with its 95% expanded-percentile bootstrap interval over seeds, resampled as pairs
# (`qlandscape.stats.ratio_of_means(..., paired=True)`). "Not flatter" allows a 10% tolerance: PASS when the
# interval lies above 0.9 (the adversarial minimum is at most 10% flatter), FAIL when it lies at or below
# 0.9 (flatter by more than 10%), INCONCLUSIVE when it contains 0.9. "The adversarial training worked":
# PASS when the interval of the mean paired difference of robust test accuracy lies above 0.
#
# Public API only (`ql.train(attack=...)`, `ql.hessian_eigs`, `ql.hessian_trace`, `ql.epsilon_sharpness`,
# `ql.random_direction`, `ql.scan_1d` / `ql.scan_2d`, `ql.robust_accuracy`). Run as a script
# (`python notebooks/04_adversarial_flatness.py`) or with jupytext; `QLANDSCAPE_FAST=1` is a seconds-long
# smoke run (2 seeds, tiny models) whose verdicts mean nothing.

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
from qlandscape.sweep.report import write_csv

FAST = os.environ.get("QLANDSCAPE_FAST", "0") == "1"
OUT = Path(os.environ.get("QLANDSCAPE_OUT", "runs/notebook_adversarial"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

data = ql.load_digits(n_samples=300 if FAST else None, seed=0)
HIDDEN = (16,) if FAST else (128, 128)
EPOCHS = 3 if FAST else 30
EPSILON = 0.3            # L-inf radius in standardized input units
PROBES = 10 if FAST else 100
SHARP_EPS = 0.05         # relative radius of the filter-normalized ball
GRID = 5 if FAST else 21
SEEDS = [0, 1] if FAST else [0, 1, 2, 3, 4]
x_train, y_train = data.x_train.double(), data.y_train
x_test, y_test = data.x_test.double(), data.y_test
clamp = ql.valid_range(data.x_train, data.x_test)
train_attack = ql.Attack("pgd", "linf", epsilon=EPSILON, steps=7, clamp=clamp, seed=0)
eval_attack = ql.Attack("pgd", "linf", epsilon=EPSILON, steps=20, clamp=clamp, seed=1)
print(f"{'FAST smoke run' if FAST else 'full run'}: MLP 64-{'-'.join(map(str, HIDDEN))}-10, {EPOCHS} epochs, "
      f"PGD-7 L-inf epsilon {EPSILON} (valid range {clamp[0]:.2f}..{clamp[1]:.2f})")

# %% [markdown]
# ## For each seed: train both models from one initialization, measure both on the same evaluation data

# %%
runs = {"standard": [], "adversarial": []}
for seed in SEEDS:
    torch.manual_seed(seed)
    init = ql.MLP(data.n_features, HIDDEN, data.n_classes, "tanh").double()
    for name, attack in (("standard", None), ("adversarial", train_attack)):
        model, _ = ql.train(init, (x_train, y_train), epochs=EPOCHS, lr=0.05, batch_size=64, seed=seed,
                            attack=attack, progress=False)
        obj = ql.Objective(model, "cross_entropy", (x_train, y_train))
        eig = ql.hessian_eigs(obj, k=1, tol=1e-3, seed=0, progress=False)
        tr = ql.hessian_trace(obj, n_probes=PROBES, seed=0, progress=False)
        sharp = ql.epsilon_sharpness(obj, SHARP_EPS, steps=20, seed=0)
        d1 = ql.random_direction(obj.space, obj.theta0, normalization="filter", seed=1)
        d2 = ql.random_direction(obj.space, obj.theta0, normalization="filter", seed=2)
        scan1 = ql.scan_1d(obj, d1, span=(-1, 1), n_points=GRID * 2 + 1, progress=False)
        r = dict(seed=seed, loss=obj.loss(), lambda_max=float(eig.eigenvalues[0]), trace=tr.estimate,
                 trace_err=tr.stderr, sharpness=sharp.sharpness, sharpness_rel=sharp.relative,
                 clean=float((model(x_test).argmax(1) == y_test).double().mean()),
                 robust=ql.robust_accuracy(model, x_test, y_test, eval_attack), scan1=scan1,
                 rise=float(scan1.loss[[0, -1]].mean() - scan1.center_loss),
                 scan2=ql.scan_2d(obj, d1, d2, span=(-1, 1), n_points=GRID, progress=False) if seed == SEEDS[0]
                 else None)
        runs[name].append(r)
        print(f"seed {seed} {name:11s}: train loss {r['loss']:.4f}; test accuracy clean {r['clean']:.3f}, robust "
              f"{r['robust']:.3f}; lambda_max {r['lambda_max']:.4g}; trace {r['trace']:.4g} +- {r['trace_err']:.2g}; "
              f"epsilon-sharpness {r['sharpness']:.4g} (relative {r['sharpness_rel']:.4g}); 1-D rise {r['rise']:.4g}")
print(f"sharpness convention: {sharp.convention}")
results = {name: rs[0] for name, rs in runs.items()}  # the first seed's scans for the figure

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for name, style in (("standard", "o-"), ("adversarial", "s--")):
    s1 = results[name]["scan1"]
    axes[0].plot(s1.alphas, s1.loss - s1.center_loss, style, label=name)
axes[0].set(xlabel="alpha (filter-normalized direction)", ylabel="loss - loss at the minimum",
            title=f"1-D surfaces, same direction seed (training seed {SEEDS[0]})")
axes[0].legend()
lo = min(float(results[n]["scan2"].loss.min()) for n in results)
hi = max(float(results[n]["scan2"].loss.max()) for n in results)
for ax, name in zip(axes[1:], ("standard", "adversarial")):
    s2 = results[name]["scan2"]
    cs = ax.contourf(s2.alphas, s2.betas, s2.loss.T, levels=20, vmin=lo, vmax=hi)
    ax.set(title=f"{name} (2-D, filter-normalized)", xlabel="d1", ylabel="d2")
fig.colorbar(cs, ax=axes[1:].tolist(), label="training loss")
fig.savefig(OUT / "adversarial_flatness.png", dpi=110)

# %% [markdown]
# ## Claim checks (rules in the header, fixed before the run)

# %%
def per_seed(name: str, key: str) -> np.ndarray:
    return np.array([r[key] for r in runs[name]], dtype=float)


NOT_FLATTER = claims.Rule(above=0.9)
results_claims = [claims.check(
    "adversarial training worked: higher robust test accuracy (PGD-20)",
    stats.mean_difference(per_seed("adversarial", "robust"), per_seed("standard", "robust"), paired=True),
    claims.Rule(above=0.0), effect="robust accuracy adversarial - standard")]
for key, label in (("lambda_max", "top Hessian eigenvalue"), ("trace", "Hessian trace"),
                   ("sharpness", f"epsilon-sharpness (filter ball, {SHARP_EPS})"),
                   ("rise", "mean loss rise at alpha = +-1 along a filter-normalized random direction")):
    results_claims.append(claims.check(
        f"adversarial training does not give a flatter minimum (by more than 10%) by the {label} (Prabhu et al.)",
        stats.ratio_of_means(per_seed("adversarial", key), per_seed("standard", key), paired=True), NOT_FLATTER,
        effect=f"{key} adversarial / standard"))
checks: list = []  # no line of this notebook holds by construction
print("\n".join(claims.report_lines(results_claims, checks)))
for key in ("robust", "clean", "lambda_max", "trace", "sharpness", "rise"):
    print(f"  {key:10s} standard {stats.mean(per_seed('standard', key)).format()} -> adversarial "
          f"{stats.mean(per_seed('adversarial', key)).format()} (seed means [95% interval])")
write_csv(claims.rows(results_claims, checks), OUT / "claims.csv")
if FAST:
    print("(FAST smoke run: tiny models trained for 3 epochs, 2 seeds; these verdicts are not evidence either way)")
