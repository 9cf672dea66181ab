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
# 1. The aligned barrier shrinks as the networks get wider: two networks trained from different seeds are
#    separated by a loss barrier on the straight line between them; after permuting the hidden units of one
#    to match the other (weight matching) the barrier is lower, and the lower the wider the networks.
#    (That alignment lowers the barrier at all is a consistency check, not a claim: weight matching
#    minimizes the distance between the two networks, so it almost always does.)
# 2. Children spawned from one parent and trained with different minibatch orders: the 0-1 error barrier
#    between them drops to about 0 once the parent has trained past an early transient (Fort et al. 2020 saw
#    the transient in the first 2-3 epochs of ResNet-20 on CIFAR; checked here as two separate verdicts: late
#    children in one basin, and a barrier at t=0 that is clearly higher).
#
# **Rules, fixed before the run.** Every effect has a 95% expanded-percentile bootstrap interval
# (`qlandscape.stats`) over independent pairs: 5 pairs of seeds per width (seeds 2i and 2i + 1, 10 networks
# per width), and 10 children per spawn time compared in 5 disjoint pairs (children 2i and 2i + 1).
# 1: PASS when the interval of barrier(widest) / barrier(narrowest), weight matching, is below 1, FAIL when
# it is at or above 1. 2a: PASS when the interval of the late (last spawn time) mean error barrier is below
# 0.01, FAIL when it is at or above 0.01. 2b: PASS when the interval of barrier(t = 0) - barrier(last) is
# above 0.01, FAIL when it is at or below 0.01. INCONCLUSIVE otherwise.
#
# Everything uses the public API (`ql.train`, `ql.align_weights`, `ql.interpolation_barriers`,
# `ql.run_spawn`). Run as a script (`python notebooks/05_mode_connectivity.py`) or with jupytext;
# `QLANDSCAPE_FAST=1` is a seconds-long smoke run (2 pairs, 4 children: no intervals) whose verdicts mean nothing.

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
OUT = Path(os.environ.get("QLANDSCAPE_OUT", "runs/notebook_mode_connectivity"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

data = ql.load_digits(n_samples=300 if FAST else None, seed=0)
WIDTHS = (8, 32) if FAST else (8, 32, 128, 512)   # two hidden layers of this width
EPOCHS = 3 if FAST else 30
N_POINTS = 5 if FAST else 21
SPAWN_TIMES = (0, 1, 2) if FAST else (0, 1, 2, 4, 8, 16)
SPAWN_EPOCHS = 3 if FAST else 30
N_PAIRS = 2 if FAST else 5                        # independent pairs of networks per width (seeds 2i, 2i + 1)
N_CHILDREN = 2 * N_PAIRS                          # children per spawn time, compared in disjoint pairs
print(f"{'FAST smoke run' if FAST else 'full run'}: {data.x_train.shape[0]} training digits, widths {WIDTHS}, "
      f"{EPOCHS} epochs")

# %% [markdown]
# ## 1. Independent pairs of seeds per width: barriers before and after alignment

# %%
def trained(width: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ql.MLP(data.n_features, (width, width), data.n_classes, "tanh").double()
    x, y = data.train
    out, _ = ql.train(model, (x.double(), y), epochs=EPOCHS, lr=0.05, batch_size=64, seed=seed, progress=False)
    return out


test = (data.x_test.double(), data.y_test)
pairs: dict[int, list[dict]] = {}
curves = {}
for width in WIDTHS:
    pairs[width] = []
    for i in range(N_PAIRS):
        a, b = trained(width, 2 * i), trained(width, 2 * i + 1)
        res = {m: ql.interpolation_barriers(a, b, test, n_points=N_POINTS, align=m) for m in ("weight", "activation")}
        w = res["weight"]
        pairs[width].append(dict(plain=w.barrier_plain, weight=w.barrier_aligned,
                                 activation=res["activation"].barrier_aligned, err_plain=w.error_barrier_plain,
                                 err_weight=w.error_barrier_aligned, merged_plain=w.merged_accuracy_plain,
                                 merged_weight=w.merged_accuracy_aligned, acc_a=w.accuracy_a, acc_b=w.accuracy_b))
        if i == 0:
            curves[width] = res
        print(f"width {width:4d}, seeds {2 * i}/{2 * i + 1}: loss barrier plain {w.barrier_plain:.4f} -> weight "
              f"{w.barrier_aligned:.4f}, activation {res['activation'].barrier_aligned:.4f}; error barrier "
              f"{w.error_barrier_plain:.4f} -> {w.error_barrier_aligned:.4f}; merged accuracy "
              f"{w.merged_accuracy_plain:.3f} -> {w.merged_accuracy_aligned:.3f} (endpoints {w.accuracy_a:.3f}, "
              f"{w.accuracy_b:.3f})")


def barrier(width: int, key: str) -> np.ndarray:
    return np.array([p[key] for p in pairs[width]], dtype=float)


rows = [dict(width=w, **{k: float(barrier(w, k).mean()) for k in ("plain", "weight", "activation")}) for w in WIDTHS]

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
widest = curves[WIDTHS[-1]]
t = widest["weight"].t
axes[0].plot(t, widest["weight"].loss_plain, "o-", color="k", label="no alignment")
axes[0].plot(t, widest["weight"].loss_aligned, "s-", label="weight matching")
axes[0].plot(t, widest["activation"].loss_aligned, "^-", label="activation matching")
axes[0].set(xlabel="t (model A -> model B)", ylabel="test loss",
            title=f"width {WIDTHS[-1]}, seeds 0/1: the straight line")
axes[0].legend()
ws = [r["width"] for r in rows]
for key, marker in (("plain", "o"), ("weight", "s"), ("activation", "^")):
    axes[1].plot(ws, [r[key] for r in rows], marker + "-", label=key)
    for w in ws:
        axes[1].plot([w] * N_PAIRS, barrier(w, key), marker, color=axes[1].lines[-1].get_color(), alpha=0.3, ms=3)
axes[1].set(xscale="log", xlabel="hidden width", ylabel="loss barrier (mean over pairs; pairs faint)",
            title="barrier vs width")
axes[1].legend()
fig.tight_layout()
fig.savefig(OUT / "mode_connectivity_barriers.png", dpi=110)

# %% [markdown]
# ## 3. Spawned children: the error barrier vs spawn time

# %%
torch.manual_seed(0)
parent = ql.MLP(data.n_features, (WIDTHS[-1], WIDTHS[-1]), data.n_classes, "tanh")
spawn = ql.run_spawn(parent, data, ql.SpawnPlan(spawn_times=SPAWN_TIMES, n_children=N_CHILDREN, epochs=SPAWN_EPOCHS,
                                                 lr=0.05, n_points=N_POINTS), progress=False)
# the disjoint pairs (2i, 2i + 1) among the K (K - 1) / 2 pairs run_spawn measured: independent samples
disjoint = [k for k, (i, j) in enumerate(spawn.pairs.tolist()) if i % 2 == 0 and j == i + 1]
assert len(disjoint) == N_PAIRS
err_pairs = spawn.pair_error_barrier[:, disjoint]  # (spawn times, N_PAIRS)
loss_pairs = spawn.pair_loss_barrier[:, disjoint]
for t_s, lb, eb in zip(spawn.spawn_times, loss_pairs, err_pairs):
    print(f"spawn at epoch {int(t_s):2d}: loss barrier {stats.mean(lb).format()}, 0-1 error barrier "
          f"{stats.mean(eb).format()} (mean over {N_PAIRS} disjoint pairs [95% interval])")
fig, ax = plt.subplots(figsize=(5.5, 4))
ax.plot(spawn.spawn_times, err_pairs.mean(1), "o-", label="0-1 error barrier")
ax.plot(spawn.spawn_times, loss_pairs.mean(1), "s--", label="loss barrier")
for k in range(N_PAIRS):
    ax.plot(spawn.spawn_times, err_pairs[:, k], "o", color="C0", alpha=0.3, ms=3)
ax.set(xlabel="spawn time (epochs)", ylabel="barrier between children", title="parent-child spawning")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "mode_connectivity_spawn.png", dpi=110)

# %% [markdown]
# ## Claim checks (rules in the header, fixed before the run)

# %%
narrow, wide = WIDTHS[0], WIDTHS[-1]
late_t = int(spawn.spawn_times[-1])
results = [
    claims.check("1. the weight-matched barrier shrinks with width",
                 stats.ratio_of_means(barrier(wide, "weight"), barrier(narrow, "weight")), claims.Rule(below=1.0),
                 effect=f"barrier(width {wide}) / barrier(width {narrow})"),
    claims.check("2a. children spawned late are in one basin: error barrier ~0",
                 stats.mean(err_pairs[-1]), claims.Rule(below=0.01), effect=f"error barrier at t={late_t}"),
    claims.check("2b. there is an early transient: children spawned at t=0 are separated",
                 stats.mean_difference(err_pairs[0], err_pairs[-1]), claims.Rule(above=0.01),
                 effect=f"error barrier t=0 - t={late_t}"),
]
lowered = {w: stats.ratio_of_means(barrier(w, "weight"), barrier(w, "plain")) for w in WIDTHS}
checks = [claims.consistency(
    "weight matching lowers the loss barrier in every pair at every width (it minimizes the distance between the "
    "networks)", all(bool(np.all(barrier(w, "weight") < barrier(w, "plain"))) for w in WIDTHS),
    "aligned / plain: " + "; ".join(f"width {w}: {e.format()}" for w, e in lowered.items()))]
print("\n".join(claims.report_lines(results, checks)))
print("weight-matched barrier vs width, log-log slope: "
      + stats.log_slope(list(WIDTHS), [barrier(w, "weight") for w in WIDTHS]).format()
      if all(barrier(w, "weight").min() > 0 for w in WIDTHS) else "(a zero barrier: no log-log slope)")
for key in ("plain", "weight", "activation"):
    print(f"  {key:10s} barrier: " + "; ".join(f"width {w} {stats.mean(barrier(w, key)).format()}" for w in WIDTHS))
write_csv(claims.rows(results, checks), OUT / "claims.csv")
if FAST:
    print("(FAST smoke run: tiny models trained for 3 epochs, 2 pairs; these verdicts are not evidence either way)")
