# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A tour of the engine on a classical MLP (digits)
#
# Not a paper's claim (notebooks 01-05 check those): the analyses of the library on one small model,
# the starting point for a new user. Hessian top-k, trace and spectral density at a minimum;
# filter-normalized random-plane and trajectory-PCA scans; and the loss barrier between two
# independently trained solutions.
#
# Run as a script (`python notebooks/00_classical_landscape_tour.py`) or open with jupytext.
# `QLANDSCAPE_FAST=1` shrinks everything to a seconds-long smoke run.

# %%
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # figures show inline in Jupyter, and are saved to OUT either way
    matplotlib.use("Agg")
import numpy as np
import torch

import qlandscape as ql
from qlandscape.landscape.plot import plot_contour, save_figure

FAST = os.environ.get("QLANDSCAPE_FAST", "0") == "1"
OUT = Path(os.environ.get("QLANDSCAPE_OUT", "runs/notebook_classical"))
OUT.mkdir(parents=True, exist_ok=True)
PROGRESS = not FAST
torch.set_num_threads(min(2, os.cpu_count() or 1))

data = ql.load_digits(n_samples=300 if FAST else None, seed=0)
hidden = (16,) if FAST else (128, 128)
epochs = 3 if FAST else 30
grid = 7 if FAST else 25

# %% [markdown]
# ## Train two solutions from different seeds, recording trajectories

# %%
solutions = []
for seed in (0, 1):
    torch.manual_seed(seed)
    model0 = ql.MLP(data.n_features, hidden, data.n_classes, "tanh")
    model, traj = ql.train(model0, data, epochs=epochs, lr=0.05, seed=seed, progress=PROGRESS)
    solutions.append((model, traj))
    print(f"seed {seed}: train loss {traj.train_loss[-1]:.4g}, test accuracy {traj.test_metric[-1]:.3f}")

model, traj = solutions[0]
objective = ql.Objective(model, "cross_entropy", data.train)
print(f"{objective.n_params} parameters, {objective.n_samples} samples, loss {objective.loss():.4g}")

# %% [markdown]
# ## Curvature at the minimum

# %%
eig = ql.hessian_eigs(objective, k=5, tol=1e-4, progress=PROGRESS)
trace = ql.hessian_trace(objective, n_probes=20 if FAST else 100, progress=PROGRESS)
density = ql.spectral_density(objective, n_probes=2 if FAST else 5, n_steps=20 if FAST else 80, progress=PROGRESS)
for r in (eig, trace, density):
    print(r.summary())
save_figure(density.plot(), str(OUT / "density.png"))

# %% [markdown]
# ## Filter-normalized random plane (Li et al. 2018)

# %%
d1 = ql.random_direction(objective.space, objective.theta0, normalization="filter", seed=1)
d2 = ql.random_direction(objective.space, objective.theta0, normalization="filter", seed=2)
scan = ql.scan_2d(objective, d1, d2, span=(-1, 1), n_points=grid, progress=PROGRESS)
assert scan.loss[grid // 2, grid // 2] == objective.loss()  # the centre is exactly the minimum
save_figure(scan.plot(), str(OUT / "random_plane.png"))

# %% [markdown]
# ## Trajectory PCA plane with the optimization path overlaid

# %%
pca = ql.pca_directions(traj.trajectory, k=2)
print("explained variance ratio:", np.round(pca.explained_variance_ratio, 3))
extent = 1.2 * np.abs(pca.coords).max(axis=0)
pscan = ql.scan_2d(objective, pca.directions[0], pca.directions[1],
                   span=((-extent[0], extent[0]), (-extent[1], extent[1])), n_points=grid, progress=PROGRESS)
save_figure(plot_contour(pscan, log=True, trajectory=pca.coords), str(OUT / "pca_plane.png"))

# %% [markdown]
# ## Linear interpolation between the two solutions and its loss barrier

# %%
other = ql.ParamSpace.from_module(solutions[1][0]).from_module_values(solutions[1][0], torch.float64)
interp = ql.interpolate(objective, objective.theta0, other, n_points=11 if FAST else 31, progress=PROGRESS)
print(f"loss barrier {interp.barrier:.4g} at t={interp.barrier_t:.2f}; error barrier {interp.error_barrier:.3f}")
save_figure(interp.plot(), str(OUT / "interpolation.png"))
print(f"figures in {OUT}/")
