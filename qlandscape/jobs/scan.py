"""The ``scan`` job: a 1D or 2D loss-landscape scan of the trained model, in the configured directions."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..config import RANDOM_DIRECTIONS, RunConfig
from ..curvature import hessian_eigs
from ..landscape import (
    LandscapeScan,
    eigenvector_directions,
    pca_directions,
    random_direction,
    resolve_one_d,
    scan_1d,
    scan_2d,
    trajectory_spans,
)
from ..objective import Objective
from ..rundir import Drawers, open_rundir
from .build import build_objective, model_info
from .steps import result_step
from .training import train_step

__all__ = ["scan_directions", "run_scan"]


def scan_directions(cfg: RunConfig, objective: Objective, trajectory: Optional[np.ndarray],
                    progress: bool = True, center: int = -1,
                    ) -> tuple[list[torch.Tensor], dict[str, Any], Optional[np.ndarray]]:
    """Directions for the configured scan, a description of them, and (for PCA) the
    trajectory's coordinates in the scan plane, whose origin is checkpoint ``center`` (the trained
    model's: :attr:`TrainResult.minimum`)."""
    s = cfg.scan  # ScanConfig has checked dims (1 or 2) and the direction kind
    info: dict[str, Any] = {"directions": s.directions, "seed": s.seed}
    coords = None
    if s.directions in RANDOM_DIRECTIONS:
        dirs = [random_direction(objective.space, objective.theta0, normalization=s.directions,  # type: ignore[arg-type]
                                 one_d=s.one_d, seed=s.seed + i) for i in range(s.dims)]  # type: ignore[arg-type]
        info.update(normalization=s.directions, one_d=resolve_one_d(objective.space, s.one_d))  # type: ignore[arg-type]
    elif s.directions == "eigenvector":
        eig = hessian_eigs(objective, k=s.dims, tol=cfg.hessian.tol, seed=s.seed, progress=progress)
        dirs = eigenvector_directions(eig, s.dims)
        info.update(eigenvalues=eig.eigenvalues.tolist())
    elif s.directions == "pca":
        if trajectory is None or trajectory.shape[0] < s.dims + 1:
            raise ValueError("PCA directions need a training trajectory with more checkpoints than scan.dims")
        if objective.n_params != trajectory.shape[1]:
            raise ValueError("PCA directions need objective.params to cover all parameters")
        pca = pca_directions(trajectory, k=s.dims, center=center)
        dirs = [torch.as_tensor(pca.directions[i]) for i in range(s.dims)]
        info.update(explained_variance_ratio=pca.explained_variance_ratio.tolist())
        coords = pca.coords
    else:
        raise ValueError(f"unknown scan.directions {s.directions!r}; use filter, layer, model, unit, none, "
                         "eigenvector or pca")
    if s.dims == 2 and s.directions in RANDOM_DIRECTIONS:
        info["cosine_d1_d2"] = float(torch.nn.functional.cosine_similarity(dirs[0], dirs[1], dim=0))
    return dirs, info, coords


def _scan_figures(name: str, trajectory: np.ndarray, center: int, res: LandscapeScan, cfg: RunConfig) -> Drawers:
    """``<name>.png`` (curve or contours, a PCA scan with its trajectory) and, in 2D, ``<name>_surface.png``."""
    log_plot = cfg.scan.log_plot
    if res.loss.ndim == 1:
        return {f"{name}.png": res.plot}

    def contour() -> Any:
        from ..landscape.plot import plot_contour
        coords = pca_directions(trajectory, k=2, center=center).coords if res.info.get("directions") == "pca" else None
        return plot_contour(res, log=log_plot, trajectory=coords)

    return {f"{name}.png": contour, f"{name}_surface.png": lambda: res.plot_surface(log=log_plot)}


def run_scan(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False,
             name: str = "scan") -> LandscapeScan:
    """1D or 2D loss-landscape scan of the trained model; writes ``out/<name>.{npz,json}`` and PNGs.

    ``force`` recomputes it and the training it depends on.
    """
    with open_rundir(out) as rd:
        (model, tr, ds), trained = train_step(rd, cfg, progress, force)

        def compute(cfg: RunConfig) -> LandscapeScan:
            s = cfg.scan
            objective = build_objective(cfg, model, ds)
            dirs, info, coords = scan_directions(cfg, objective, tr.trajectory, progress, center=tr.minimum)
            spans: list[tuple[float, float]] = [(-s.fixed_span(), s.fixed_span())] * s.dims
            if s.resolved_span_mode() == "trajectory":
                assert coords is not None
                spans = trajectory_spans(coords, s.margin)
                info.update(span_mode="trajectory", margin=s.margin, spans=[list(sp) for sp in spans])
            if s.dims == 1:
                return scan_1d(objective, dirs[0], span=spans[0], n_points=s.n_points, float32=s.float32,
                               info=info, progress=progress)
            return scan_2d(objective, dirs[0], dirs[1], span=(spans[0], spans[1]), n_points=s.n_points,
                           float32=s.float32, info=info, progress=progress)

        return result_step(rd, name, LandscapeScan, cfg, {"train": trained.identity}, force, model_info(model),
                            compute, figures=functools.partial(_scan_figures, name, tr.trajectory, tr.minimum),
                            figure_names=(f"{name}.png", f"{name}_surface.png"))
