# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # NTK dynamics: deep learning versus kernel learning (Fort et al. 2020)
#
# Claims checked (`../shared/papers/fort2020.md`):
#
# 1. The empirical NTK moves fastest early in training and then slows: the kernel velocity
#    S(K_t, K_t+dt) / dt is larger in the first epochs than later.
# 2. The kernel at an intermediate time beats the initial kernel: kernel regression (and the linearized model
#    trained from time t) with the NTK frozen at t is more accurate than with the NTK at initialization.
# 3. Parent-child spawning: children spawned from one parent at epoch t and trained on with different minibatch
#    orders end in one basin (0-1 error barrier between them ~0) once t is past an early transient; children
#    spawned at t = 0 are separated.
#
# The distance to the final kernel is drawn too.
#
# For an MLP and for the patch QNN, through the public API (`ql.train(record_steps=...)` for checkpoints
# inside epochs, `ql.ntk_dynamics`, `ql.kernel_learning_curve`, `ql.run_spawn`; the MLP's spawning at width 512
# is in `05_mode_connectivity.py` too). Run as a script or with jupytext; `QLANDSCAPE_FAST=1` is a seconds-long
# smoke run whose verdicts mean nothing.

# %% tags=["parameters"]
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import qlandscape as ql

FAST = os.environ.get("QLANDSCAPE_FAST", "0") == "1"
OUT = Path(os.environ.get("QLANDSCAPE_OUT", "runs/notebook_ntk"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

data = ql.load_digits(n_samples=300 if FAST else None, seed=0)
EPOCHS = 3 if FAST else 20
N_KERNEL = 30 if FAST else 200          # inputs the kernels are computed on
N_TRAIN, N_TEST = (60, 40) if FAST else (500, 300)
BATCH = 64
STEPS_PER_EPOCH = -(-data.x_train.shape[0] // BATCH)
RECORD_STEPS = max(1, round(0.4 * STEPS_PER_EPOCH))   # the paper's dt = 0.4 epochs
print(f"{'FAST smoke run' if FAST else 'full run'}: {data.x_train.shape[0]} training digits, {EPOCHS} epochs, "
      f"a checkpoint every {RECORD_STEPS} steps ({RECORD_STEPS / STEPS_PER_EPOCH:.2f} epochs)")

SPAWN_TIMES = (0, 1) if FAST else (0, 1, 2, 4, 8)   # epochs; children train to epoch EPOCHS
MODELS = {
    "MLP 64-128-128-10": lambda: ql.MLP(data.n_features, (16,) if FAST else (128, 128), data.n_classes, "tanh"),
    "patch QNN (4 patches, 4 qubits, L=2)": lambda: ql.PatchQNN("digits", n_patches=4, layers=1 if FAST else 2,
                                                                device="auto"),
}
LR = {name: 0.05 if name.startswith("MLP") else 0.1 for name in MODELS}   # SGD, momentum 0.9

# %% [markdown]
# ## Train with checkpoints every 0.4 epochs; kernels along the trajectory

# %%
results = {}
for name, build in MODELS.items():
    torch.manual_seed(0)
    model0 = build().double()
    lr = LR[name]
    trained, tr = ql.train(model0, data, epochs=EPOCHS, lr=lr, batch_size=BATCH, seed=0, record_steps=RECORD_STEPS,
                           progress=False)
    x, y = data.train
    dyn = ql.ntk_dynamics(model0, tr, x[:N_KERNEL].double(), targets=y[:N_KERNEL], progress=False)
    every = max(1, (len(tr.steps) - 1) // (4 if FAST else 8))
    cps = sorted(set(list(range(0, len(tr.steps), every)) + [len(tr.steps) - 1]))
    kl = ql.kernel_learning_curve(model0, tr, data, checkpoints=cps, n_train=N_TRAIN, n_test=N_TEST,
                                  linearized_epochs=2 if FAST else 10, progress=False)
    results[name] = dict(tr=tr, dyn=dyn, kl=kl)
    print(f"{name}: test accuracy {tr.test_metric[-1]:.3f}; kernel distance init -> final "
          f"{dyn.kernel_to_initial[-1]:.4f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4))
for name, r in results.items():
    d, k = r["dyn"], r["kl"]
    axes[0].plot(d.times_epochs[1:], d.velocity[1:], "o-", ms=3, label=name)
    axes[1].plot(d.times_epochs, d.kernel_to_final, "o-", ms=3, label=name)
    axes[2].plot(k.times_epochs, k.regression_accuracy, "o-", label=f"{name}: kernel regression")
    if np.isfinite(k.linearized_accuracy).any():
        axes[2].plot(k.times_epochs, k.linearized_accuracy, "s--", label=f"{name}: linearized")
    axes[2].axhline(k.network_accuracy, ls=":", color=axes[2].lines[-1].get_color())
axes[0].set(yscale="log", xlabel="epoch", ylabel="kernel velocity (per epoch)", title="kernel velocity")
axes[1].set(xlabel="epoch", ylabel="S(K_t, K_final)", title="distance to the final kernel")
axes[2].set(xlabel="epoch t of the frozen kernel", ylabel="test accuracy", title="kernel learning at time t "
            "(dotted: trained network)")
for ax in axes:
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "ntk_dynamics.png", dpi=110)

# %% [markdown]
# ## Parent-child spawning: the error barrier between two children vs spawn time
#
# One parent per model (the same initialization and training settings as above); at each spawn time two
# children copy its weights and optimizer state and train to epoch EPOCHS with different minibatch orders;
# the barrier is measured on the test split along the straight line between them.

# %%
for name, build in MODELS.items():
    torch.manual_seed(0)
    lr = LR[name]
    plan = ql.SpawnPlan(spawn_times=SPAWN_TIMES, n_children=2, epochs=EPOCHS, lr=lr, batch_size=BATCH,
                        n_points=5 if FAST else 11)
    results[name]["spawn"] = sp = ql.run_spawn(build().double(), data, plan, progress=False)
    print(f"{name}: error barrier vs spawn time " + ", ".join(
        f"t={int(t)}: {e:.4f}" for t, e in zip(sp.spawn_times, sp.error_barrier)))

fig, ax = plt.subplots(figsize=(5.5, 4))
for name, r in results.items():
    ax.plot(r["spawn"].spawn_times, r["spawn"].error_barrier, "o-", label=name)
ax.set(xlabel="spawn time (epochs)", ylabel="0-1 error barrier between children", title="parent-child spawning")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "ntk_spawn.png", dpi=110)

# %% [markdown]
# ## Claim checks

# %%
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


checks = []
for name, r in results.items():
    d, k = r["dyn"], r["kl"]
    t, v = d.times_epochs, d.velocity
    early = float(np.nanmean(v[(t > 0) & (t <= 2)]))
    late = float(np.nanmean(v[t >= t[-1] / 2]))
    checks.append((f"{name}: the kernel moves faster in epochs 0-2 than in the second half", early > late,
                   f"mean velocity {early:.4g} vs {late:.4g} per epoch"))
    # the paper's intermediate time: 15-45% of training (its t ~ 3-4 of 200 epochs is earlier still); the
    # checkpoint nearest 20% of training
    mid = int(np.argmin(np.abs(k.times_epochs[1:] - 0.2 * EPOCHS))) + 1
    checks.append((f"{name}: the kernel at t = {k.times_epochs[mid]:.1f} epochs beats the initial kernel "
                   "(kernel regression)", k.regression_accuracy[mid] > k.regression_accuracy[0],
                   f"test accuracy {k.regression_accuracy[0]:.3f} at t=0 vs {k.regression_accuracy[mid]:.3f}; "
                   f"trained network {k.network_accuracy:.3f}"))
    sp = r["spawn"]
    late, early = float(sp.error_barrier[-1]), float(sp.error_barrier[0])
    checks.append((f"{name}: children spawned at t = {int(sp.spawn_times[-1])} share one basin (error barrier "
                   "<= 0.01)", late <= 0.01, f"{late:.4f}"))
    checks.append((f"{name}: ... after an early transient (the barrier at t = 0 exceeds the late one by > 0.01)",
                   early - late > 0.01, f"t=0: {early:.4f}, t={int(sp.spawn_times[-1])}: {late:.4f}"))
for claim, ok, numbers in checks:
    print(f"{verdict(ok)}  {claim}  [{numbers}]")
if FAST:
    print("(FAST smoke run: tiny settings; these verdicts are not evidence either way)")
