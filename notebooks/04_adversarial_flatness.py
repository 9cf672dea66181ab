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
# set shows that the adversarial training worked.
#
# Public API only (`ql.train(attack=...)`, `ql.hessian_eigs`, `ql.hessian_trace`, `ql.epsilon_sharpness`,
# `ql.random_direction`, `ql.scan_1d` / `ql.scan_2d`, `ql.robust_accuracy`). Run as a script
# (`python notebooks/04_adversarial_flatness.py`) or with jupytext; `QLANDSCAPE_FAST=1` is a seconds-long
# smoke run whose verdicts mean nothing.

# %% tags=["parameters"]
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import qlandscape as ql

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
x_train, y_train = data.x_train.double(), data.y_train
x_test, y_test = data.x_test.double(), data.y_test
clamp = ql.valid_range(data.x_train, data.x_test)
train_attack = ql.Attack("pgd", "linf", epsilon=EPSILON, steps=7, clamp=clamp, seed=0)
eval_attack = ql.Attack("pgd", "linf", epsilon=EPSILON, steps=20, clamp=clamp, seed=1)
print(f"{'FAST smoke run' if FAST else 'full run'}: MLP 64-{'-'.join(map(str, HIDDEN))}-10, {EPOCHS} epochs, "
      f"PGD-7 L-inf epsilon {EPSILON} (valid range {clamp[0]:.2f}..{clamp[1]:.2f})")

# %% [markdown]
# ## Train both models from one initialization

# %%
torch.manual_seed(0)
init = ql.MLP(data.n_features, HIDDEN, data.n_classes, "tanh").double()
models = {}
for name, attack in (("standard", None), ("adversarial", train_attack)):
    models[name], _ = ql.train(init, (x_train, y_train), epochs=EPOCHS, lr=0.05, batch_size=64, seed=0,
                               attack=attack, progress=False)

# %% [markdown]
# ## Measure both on the same evaluation data

# %%
results = {}
for name, model in models.items():
    obj = ql.Objective(model, "cross_entropy", (x_train, y_train))
    eig = ql.hessian_eigs(obj, k=1, tol=1e-3, seed=0, progress=False)
    tr = ql.hessian_trace(obj, n_probes=PROBES, seed=0, progress=False)
    sharp = ql.epsilon_sharpness(obj, SHARP_EPS, steps=20, seed=0)
    d1 = ql.random_direction(obj.space, obj.theta0, normalization="filter", seed=1)
    d2 = ql.random_direction(obj.space, obj.theta0, normalization="filter", seed=2)
    results[name] = dict(
        loss=obj.loss(), lambda_max=float(eig.eigenvalues[0]), trace=tr.estimate, trace_err=tr.stderr,
        sharpness=sharp.sharpness, sharpness_rel=sharp.relative,
        clean=float((model(x_test).argmax(1) == y_test).double().mean()),
        robust=ql.robust_accuracy(model, x_test, y_test, eval_attack),
        scan1=ql.scan_1d(obj, d1, span=(-1, 1), n_points=GRID * 2 + 1, progress=False),
        scan2=ql.scan_2d(obj, d1, d2, span=(-1, 1), n_points=GRID, progress=False))
    r = results[name]
    print(f"{name:11s}: train loss {r['loss']:.4f}; test accuracy clean {r['clean']:.3f}, robust {r['robust']:.3f}; "
          f"lambda_max {r['lambda_max']:.4g}; trace {r['trace']:.4g} +- {r['trace_err']:.2g}; "
          f"epsilon-sharpness {r['sharpness']:.4g} (relative {r['sharpness_rel']:.4g})")
print(f"sharpness convention: {sharp.convention}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for name, style in (("standard", "o-"), ("adversarial", "s--")):
    s1 = results[name]["scan1"]
    axes[0].plot(s1.alphas, s1.loss - s1.center_loss, style, label=name)
axes[0].set(xlabel="alpha (filter-normalized direction)", ylabel="loss - loss at the minimum",
            title="1-D surfaces, same direction seed")
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
# ## Claim checks

# %%
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


std, adv = results["standard"], results["adversarial"]
checks = [("adversarial training worked: higher robust test accuracy", adv["robust"] > std["robust"],
           f"robust {std['robust']:.3f} -> {adv['robust']:.3f}")]
# the claim, one verdict per flatness measure (PASS: the adversarial minimum is not flatter by it)
for m, label in (("lambda_max", "top Hessian eigenvalue"), ("trace", "Hessian trace"),
                 ("sharpness", f"epsilon-sharpness (filter ball, {SHARP_EPS})")):
    checks.append((f"adversarial training does not give a flatter minimum by the {label} (Prabhu et al.)",
                   adv[m] >= std[m], f"standard {std[m]:.4g}, adversarial {adv[m]:.4g}"))
up = {name: float(results[name]["scan1"].loss[[0, -1]].mean() - results[name]["scan1"].center_loss)
      for name in results}
checks.append(("along the filter-normalized random direction the adversarial surface is not flatter",
               up["adversarial"] >= up["standard"],
               f"mean loss rise at alpha = +-1: standard {up['standard']:.4g}, adversarial {up['adversarial']:.4g}"))
for claim, ok, numbers in checks:
    print(f"{verdict(ok)}  {claim}  [{numbers}]")
if FAST:
    print("(FAST smoke run: tiny models trained for 3 epochs; these verdicts are not evidence either way)")
