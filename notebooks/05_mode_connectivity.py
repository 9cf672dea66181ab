# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Mode connectivity and merging: barriers before and after permutation alignment
#
# Claims checked (the model-merging survey, Khan et al., "SoK: On Finding Common Ground in Loss Landscapes
# Using Deep Model Merging Techniques", and the works it summarizes: Entezari et al. 2022, Ainsworth et al.
# 2023 "Git Re-Basin", Frankle et al. 2020):
#
# 1. Two networks trained from different seeds are separated by a loss barrier on the straight line between
#    them; after permuting the hidden units of one to match the other (weight matching or activation
#    matching) the barrier is much lower.
# 2. The aligned barrier shrinks as the networks get wider.
# 3. Children spawned from one parent and trained with different minibatch orders: the 0-1 error barrier
#    between them drops to about 0 once the parent has trained past an early transient (Fort et al. 2020 saw
#    the transient in the first 2-3 epochs of ResNet-20 on CIFAR; checked here as two separate verdicts: late
#    children in one basin, and a barrier at t=0 that is clearly higher).
#
# Everything uses the public API (`ql.train`, `ql.align_weights`, `ql.interpolation_barriers`,
# `ql.run_spawn`). Run as a script (`python notebooks/05_mode_connectivity.py`) or with jupytext;
# `QLANDSCAPE_FAST=1` is a seconds-long smoke run whose verdicts mean nothing.

# %% tags=["parameters"]
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import qlandscape as ql

FAST = os.environ.get("QLANDSCAPE_FAST", "0") == "1"
OUT = Path(os.environ.get("QLANDSCAPE_OUT", "runs/notebook_mode_connectivity"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

data = ql.load_digits(n_samples=300 if FAST else None, seed=0)
WIDTHS = (8, 32) if FAST else (8, 32, 128, 512)   # two hidden layers of this width
EPOCHS = 3 if FAST else 30
N_POINTS = 5 if FAST else 21
SPAWN_TIMES = (0, 1, 2) if FAST else (0, 1, 2, 4, 8, 16)
SPAWN_EPOCHS = 3 if FAST else 30
print(f"{'FAST smoke run' if FAST else 'full run'}: {data.x_train.shape[0]} training digits, widths {WIDTHS}, "
      f"{EPOCHS} epochs")

# %% [markdown]
# ## 1-2. Two seeds per width: barriers before and after alignment

# %%
def trained(width: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ql.MLP(data.n_features, (width, width), data.n_classes, "tanh").double()
    x, y = data.train
    out, _ = ql.train(model, (x.double(), y), epochs=EPOCHS, lr=0.05, batch_size=64, seed=seed, progress=False)
    return out


test = (data.x_test.double(), data.y_test)
rows = []
curves = {}
for width in WIDTHS:
    a, b = trained(width, 0), trained(width, 1)
    res = {m: ql.interpolation_barriers(a, b, test, n_points=N_POINTS, align=m) for m in ("weight", "activation")}
    w = res["weight"]
    rows.append(dict(width=width, plain=w.barrier_plain, weight=w.barrier_aligned,
                     activation=res["activation"].barrier_aligned, err_plain=w.error_barrier_plain,
                     err_weight=w.error_barrier_aligned, merged_plain=w.merged_accuracy_plain,
                     merged_weight=w.merged_accuracy_aligned, acc_a=w.accuracy_a, acc_b=w.accuracy_b))
    curves[width] = res
    print(f"width {width:4d}: loss barrier plain {w.barrier_plain:.4f} -> weight {w.barrier_aligned:.4f}, "
          f"activation {res['activation'].barrier_aligned:.4f}; error barrier {w.error_barrier_plain:.4f} -> "
          f"{w.error_barrier_aligned:.4f}; merged accuracy {w.merged_accuracy_plain:.3f} -> "
          f"{w.merged_accuracy_aligned:.3f} (endpoints {w.accuracy_a:.3f}, {w.accuracy_b:.3f})")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
widest = curves[WIDTHS[-1]]
t = widest["weight"].t
axes[0].plot(t, widest["weight"].loss_plain, "o-", color="k", label="no alignment")
axes[0].plot(t, widest["weight"].loss_aligned, "s-", label="weight matching")
axes[0].plot(t, widest["activation"].loss_aligned, "^-", label="activation matching")
axes[0].set(xlabel="t (model A -> model B)", ylabel="test loss", title=f"width {WIDTHS[-1]}: the straight line")
axes[0].legend()
ws = [r["width"] for r in rows]
for key, marker in (("plain", "o"), ("weight", "s"), ("activation", "^")):
    axes[1].plot(ws, [r[key] for r in rows], marker + "-", label=key)
axes[1].set(xscale="log", xlabel="hidden width", ylabel="loss barrier", title="barrier vs width")
axes[1].legend()
fig.tight_layout()
fig.savefig(OUT / "mode_connectivity_barriers.png", dpi=110)

# %% [markdown]
# ## 3. Spawned children: the error barrier vs spawn time

# %%
torch.manual_seed(0)
parent = ql.MLP(data.n_features, (WIDTHS[-1], WIDTHS[-1]), data.n_classes, "tanh")
spawn = ql.run_spawn(parent, data, ql.SpawnPlan(spawn_times=SPAWN_TIMES, n_children=2, epochs=SPAWN_EPOCHS, lr=0.05,
                                                 n_points=N_POINTS), progress=False)
for t_s, lb, eb in zip(spawn.spawn_times, spawn.loss_barrier, spawn.error_barrier):
    print(f"spawn at epoch {int(t_s):2d}: loss barrier {lb:.4f}, 0-1 error barrier {eb:.4f}")
fig, ax = plt.subplots(figsize=(5.5, 4))
ax.plot(spawn.spawn_times, spawn.error_barrier, "o-", label="0-1 error barrier")
ax.plot(spawn.spawn_times, spawn.loss_barrier, "s--", label="loss barrier")
ax.set(xlabel="spawn time (epochs)", ylabel="barrier between children", title="parent-child spawning")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "mode_connectivity_spawn.png", dpi=110)

# %% [markdown]
# ## Claim checks

# %%
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


checks = []
lower = all(r["weight"] < r["plain"] and r["activation"] < r["plain"] for r in rows)
checks.append(("alignment lowers the loss barrier at every width", lower,
               "; ".join(f"w{r['width']}: {r['plain']:.3f} -> {r['weight']:.3f} / {r['activation']:.3f}"
                         for r in rows)))
aligned = [r["weight"] for r in rows]
checks.append(("the weight-matched barrier shrinks with width (widest < narrowest)", aligned[-1] < aligned[0],
               " -> ".join(f"{v:.3f}" for v in aligned)))
late, early = float(spawn.error_barrier[-1]), float(spawn.error_barrier[0])
checks.append(("children spawned late are in one basin: error barrier ~0 (<= 0.01)", late <= 0.01,
               f"t={int(spawn.spawn_times[-1])}: {late:.4f}"))
checks.append(("there is an early transient: children spawned at t=0 are separated (error barrier at t=0 exceeds "
               "the late one by > 0.01)", early - late > 0.01, f"t=0: {early:.4f}, t={int(spawn.spawn_times[-1])}: "
               f"{late:.4f}"))
for claim, ok, numbers in checks:
    print(f"{verdict(ok)}  {claim}  [{numbers}]")
if FAST:
    print("(FAST smoke run: tiny models trained for 3 epochs; these verdicts are not evidence either way)")
