"""The ``hessian`` job: top-k eigenpairs, trace and spectral density of the trained model's Hessian."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..config import RunConfig
from ..curvature import DensityResult, EigResult, TraceResult, hessian_eigs, hessian_trace, spectral_density
from ..objective import Objective
from ..results import Result
from ..rundir import Drawers, open_rundir
from .build import build_objective, model_info
from .steps import built_once, result_step
from .training import train_step

__all__ = ["HESSIAN_PARTS", "run_hessian"]


HESSIAN_PARTS: tuple[str, ...] = ("eigs", "trace", "density")


def run_hessian(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False,
                parts: Sequence[str] = HESSIAN_PARTS) -> dict[str, Result]:
    """Top-k eigenpairs, trace and spectral density of the trained model's Hessian (three steps,
    ``hessian_eigs``, ``hessian_trace`` and ``hessian_density``, each reused on its own).

    ``force`` recomputes them and the training they depend on; ``parts`` chooses which of
    "eigs", "trace" and "density" to compute (the returned dict has those keys).
    """
    unknown = sorted(set(parts) - set(HESSIAN_PARTS))
    if unknown:
        raise ValueError(f"unknown Hessian part(s) {unknown}; choose from {list(HESSIAN_PARTS)}")
    with open_rundir(out) as rd:
        (model, _, ds), trained = train_step(rd, cfg, progress, force)
        upstream = {"train": trained.identity}
        info = model_info(model)
        # built once (its cached graph serves all three steps), each step keyed by what building it read
        objective: Callable[[RunConfig], Objective] = built_once(cfg, lambda c: build_objective(c, model, ds))

        def eigs(c: RunConfig) -> EigResult:
            h = c.hessian
            return hessian_eigs(objective(c), k=h.top_k, which=h.which, method=h.eig_method,  # type: ignore[arg-type]
                                tol=h.tol, seed=h.seed, progress=progress)

        def trace(c: RunConfig) -> TraceResult:
            h = c.hessian
            return hessian_trace(objective(c), method=h.trace_method,  # type: ignore[arg-type]
                                 n_probes=h.trace_probes, seed=h.seed, progress=progress)

        def density(c: RunConfig) -> DensityResult:
            h = c.hessian
            return spectral_density(objective(c), n_probes=h.density_probes, n_steps=h.density_steps,
                                    seed=h.seed, progress=progress)

        def density_figures(res: DensityResult, c: RunConfig) -> Drawers:
            return {"hessian_density.png": res.plot}

        steps: dict[str, Callable[[], Result]] = {
            "eigs": lambda: result_step(rd, "hessian_eigs", EigResult, cfg, upstream, force, info, eigs),
            "trace": lambda: result_step(rd, "hessian_trace", TraceResult, cfg, upstream, force, info, trace),
            "density": lambda: result_step(rd, "hessian_density", DensityResult, cfg, upstream, force, info, density,
                                            figures=density_figures, figure_names=("hessian_density.png",)),
        }
        return {part: step() for part, step in steps.items() if part in parts}
