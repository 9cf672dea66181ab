"""Epsilon-sharpness: the largest loss increase within a small ball around the weights.

    S_eps(theta0) = max_{delta in B_eps(theta0)} L(theta0 + delta) - L(theta0)

(Keskar et al. 2017), estimated from below by projected gradient ascent on the engine's
:class:`~qlandscape.objective.Objective` (its full-data loss and gradient; no second loss
implementation). The ball is relative to the weights, so that a rescaling of a layer that leaves
the function unchanged does not change the radius in units of that layer's weights:

``normalization="filter"`` (default; Keskar-style relative radius per filter, with the groups of
    Li et al.'s filter normalization, :func:`qlandscape.landscape.normalize_direction`): for every
    filter ``f`` (slice along dim 0 of a weight with >= 2 dims), ``||delta_f||_2 <= epsilon *
    ||theta0_f||_2``. 1-D parameters (biases, norm scales) follow the landscape's ``one_d`` policy
    (:func:`qlandscape.landscape.resolve_one_d`): ``"zero"`` holds them fixed (the default
    ``"auto"`` resolves to it while 1-D tensors are at most half of the parameters), ``"filter"``
    makes each entry its own group (``|delta_i| <= epsilon * |theta0_i|``), ``"layer"`` one group
    per tensor. ``"keep"`` has no radius and is refused. The boundary of this ball is exactly the
    set of ``epsilon`` times the filter-normalized directions of the landscape scans.
``normalization="global"``: ``||delta||_2 <= epsilon * ||theta0||_2``.

Groups whose weights in ``theta0`` are all zero have radius 0 and are not moved (counted in
``n_fixed``). Ascent: restart 0 starts at ``delta = 0``, restart ``r >= 1`` on the boundary along
``epsilon`` times a random normalized direction (seed ``seed + r``); each step moves every group by
``step_size * radius_g`` along its normalized gradient, then projects onto the ball. The result is
the best point over all iterates (a lower bound on the true maximum; exact for the closed-form
quadratic cases in the tests).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np
import torch
from torch import Tensor

from ..landscape.directions import normalize_direction, resolve_one_d, safe_ratio
from ..objective import Objective
from ..params import ParamSpace
from ..results import Result

SharpnessNormalization = Literal["filter", "global"]

__all__ = ["SharpnessResult", "epsilon_sharpness", "sharpness_groups"]


@dataclass
class SharpnessResult(Result):
    """Epsilon-sharpness of an objective at its reference point.

    Attributes
    ----------
    sharpness : float
        ``loss_max - loss0`` (>= 0; exactly 0 for ``epsilon = 0``), in loss units.
    relative : float
        ``sharpness / (1 + loss0)``: Keskar et al.'s normalization (they also multiply by 100).
    loss0, loss_max : float
        Loss at ``theta0`` and the largest loss found in the ball.
    delta_norm : float
        ``||delta||_2`` of the maximizing perturbation, in parameter units.
    epsilon : float
        Relative radius of the ball.
    normalization : str
        "filter" or "global".
    one_d : str
        The resolved 1-D policy ("zero", "filter", "layer"), or "n/a" for "global".
    convention : str
        The ball in words.
    history : ndarray, shape (restarts, steps + 1)
        Loss at every iterate of every restart (column 0: the start); shape ``(restarts, 1)`` for
        ``epsilon = 0``, where no ascent is run.
    delta : ndarray, shape (n,)
        The maximizing perturbation.
    steps, restarts, seed : int
    step_size : float
        Step length as a fraction of each group's radius.
    n_groups : int
        Number of constrained groups with a positive radius.
    n_fixed : int
        Parameters held fixed (excluded 1-D tensors, zero-weight groups).
    provenance : dict
        The objective's provenance and the work done (``work``: loss/gradient passes).
    """

    sharpness: float
    relative: float
    loss0: float
    loss_max: float
    delta_norm: float
    epsilon: float
    normalization: str
    one_d: str
    convention: str
    history: np.ndarray
    delta: np.ndarray
    steps: int
    step_size: float
    restarts: int
    seed: int
    n_groups: int
    n_fixed: int
    provenance: dict = field(default_factory=dict)


def sharpness_groups(space: ParamSpace, theta: Tensor, normalization: SharpnessNormalization = "filter",
                     one_d: str = "auto") -> tuple[Tensor, Tensor, str]:
    """The groups of the relative ball and their unit radii.

    Parameters
    ----------
    space : ParamSpace
    theta : Tensor, shape (n,)
        Reference weights.
    normalization : {"filter", "global"}
    one_d : str
        1-D policy for "filter" (see the module doc).

    Returns
    -------
    index : Tensor, shape (n,), int64
        Group of each parameter, or -1 for parameters held fixed.
    radius : Tensor, shape (G,)
        ``||theta_g||_2`` per group (the radius at ``epsilon = 1``).
    one_d : str
        The resolved 1-D policy ("n/a" for "global").
    """
    if normalization not in ("filter", "global"):
        raise ValueError(f"normalization must be 'filter' or 'global', got {normalization!r}")
    if theta.shape != (space.size,):
        raise ValueError(f"theta has shape {tuple(theta.shape)}, expected ({space.size},)")
    if normalization == "global":
        index = torch.zeros(space.size, dtype=torch.long, device=theta.device)
        return index, theta.norm().reshape(1), "n/a"
    policy = resolve_one_d(space, one_d)  # type: ignore[arg-type]
    if policy == "keep":
        raise ValueError("one_d='keep' leaves 1-D parameters unnormalized, so they have no relative radius; use "
                         "one_d='zero' (hold them fixed), 'filter' (per entry) or 'layer' (per tensor)")
    index = torch.full((space.size,), -1, dtype=torch.long)
    next_group = 0
    for _, sl, shape in space.slices():
        numel = sl.stop - sl.start
        if len(shape) >= 2:
            rows, per_row = int(shape[0]), numel // max(int(shape[0]), 1)
            ids = torch.arange(next_group, next_group + rows).repeat_interleave(per_row)
        elif policy == "zero":
            continue
        elif policy == "filter":
            ids = torch.arange(next_group, next_group + numel)
        else:  # "layer"
            ids = torch.full((numel,), next_group, dtype=torch.long)
        index[sl] = ids
        next_group = int(ids.max()) + 1 if numel else next_group
    index = index.to(theta.device)
    radius = _group_norms(theta, index, next_group)
    return index, radius, policy


def _group_norms(v: Tensor, index: Tensor, n_groups: int) -> Tensor:
    """Euclidean norm of ``v`` (shape ``(n,)``) over each group, shape ``(G,)``; fixed entries ignored."""
    moved = index >= 0
    sq = torch.zeros(n_groups, dtype=v.dtype, device=v.device)
    return sq.index_add_(0, index[moved], v[moved] ** 2).sqrt()


def _project(delta: Tensor, index: Tensor, radius: Tensor) -> Tensor:
    """``delta`` with each group scaled into its ball of ``radius`` and fixed entries zeroed."""
    norms = _group_norms(delta, index, radius.shape[0])
    factor = torch.where(norms > radius, safe_ratio(radius, norms), torch.ones_like(norms))
    out = torch.zeros_like(delta)
    moved = index >= 0
    out[moved] = delta[moved] * factor[index[moved]]
    return out


def _ascent_step(delta: Tensor, grad: Tensor, index: Tensor, radius: Tensor, step_size: float) -> Tensor:
    """Move each group by ``step_size * radius_g`` along its normalized gradient, then project."""
    gnorm = _group_norms(grad, index, radius.shape[0])
    scale = step_size * safe_ratio(radius, gnorm)  # 0 where the group's gradient vanishes
    moved = index >= 0
    out = delta.clone()
    out[moved] = delta[moved] + scale[index[moved]] * grad[moved]
    return _project(out, index, radius)


def _start(objective: Objective, epsilon: float, normalization: str, one_d: str, index: Tensor,
           radius: Tensor, restart: int, seed: int) -> Tensor:
    """Restart 0: ``delta = 0``; later restarts: ``epsilon`` times a random normalized direction."""
    theta0 = objective.theta0
    if restart == 0:
        return torch.zeros_like(theta0)
    gen = torch.Generator(device="cpu").manual_seed(seed + restart)
    d = torch.randn(objective.n_params, generator=gen, dtype=torch.float64).to(theta0.device, theta0.dtype)
    with warnings.catch_warnings():  # zero-weight groups are reported as n_fixed
        warnings.simplefilter("ignore", RuntimeWarning)
        if normalization == "global":
            d = normalize_direction(d, theta0, objective.space, "model")
        else:
            d = normalize_direction(d, theta0, objective.space, "filter", one_d)  # type: ignore[arg-type]
    return _project(epsilon * d, index, radius)  # on the boundary; projection only removes rounding


def _convention(normalization: str, one_d: str) -> str:
    if normalization == "global":
        return "global: ||delta||_2 <= epsilon * ||theta0||_2"
    ones = {"zero": "1-D parameters held fixed", "filter": "1-D parameters per entry: |delta_i| <= epsilon * "
            "|theta0_i|", "layer": "1-D parameters per tensor: ||delta_t||_2 <= epsilon * ||theta0_t||_2"}[one_d]
    return ("filter (Keskar-style relative radius per filter, Li et al. groups): ||delta_f||_2 <= epsilon * "
            f"||theta0_f||_2 for every filter f (slice along dim 0 of a weight with >= 2 dims); {ones}")


def _check_args(epsilon: float, steps: int, step_size: Optional[float], restarts: int, seed: int) -> float:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating, np.integer)) \
            or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0 (a radius relative to the weights), got {epsilon!r}")
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not is_int(restarts) or restarts < 1:
        raise ValueError(f"restarts must be an int >= 1, got {restarts!r}")
    if not is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if step_size is None:
        return 2.5 / int(steps)
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float, np.floating, np.integer)) \
            or not math.isfinite(step_size) or step_size <= 0:
        raise ValueError(f"step_size must be a finite number > 0 (a fraction of each group's radius), or None for "
                         f"2.5 / steps, got {step_size!r}")
    return float(step_size)


def epsilon_sharpness(objective: Objective, epsilon: float, *, steps: int = 20, step_size: Optional[float] = None,
                      restarts: int = 1, seed: int = 0, normalization: SharpnessNormalization = "filter",
                      one_d: str = "auto") -> SharpnessResult:
    """Largest increase of the full-data loss within the relative ball of radius ``epsilon``.

    Parameters
    ----------
    objective : Objective
        The loss; evaluated at ``objective.theta0 + delta`` through its own ``loss`` and ``gradient``.
    epsilon : float
        Relative radius (>= 0; e.g. 1e-3 to 5e-2), see the module doc for the ball.
    steps : int
        Projected gradient-ascent steps per restart (one gradient and one loss pass each).
    step_size : float, optional
        Step length as a fraction of each group's radius (default ``2.5 / steps``).
    restarts : int
        Restart 0 starts at ``theta0``, the others on the boundary along random directions.
    seed : int
        Seed of the random restarts (restart ``r`` uses ``seed + r``).
    normalization : {"filter", "global"}
    one_d : {"auto", "zero", "filter", "layer"}
        1-D parameters under "filter" (see the module doc); recorded resolved in the result.

    Returns
    -------
    SharpnessResult

    Raises
    ------
    ValueError
        For ``epsilon < 0`` or non-finite, bad ``steps``/``restarts``/``step_size``, an unknown
        normalization, or a ball with no room (every radius 0 while ``epsilon > 0``: all weights that
        may move are zero, or every parameter is 1-D under ``one_d="zero"``).
    NonFiniteLossError
        If the loss or gradient is not finite at ``theta0`` or at a point in the ball.
    """
    step_size = _check_args(epsilon, steps, step_size, restarts, seed)
    epsilon, steps, restarts, seed = float(epsilon), int(steps), int(restarts), int(seed)
    before = objective.counters.as_dict()
    theta0 = objective.theta0
    index, unit_radius, resolved = sharpness_groups(objective.space, theta0, normalization, one_d)
    radius = epsilon * unit_radius
    live = unit_radius > 0
    moved = index >= 0
    n_fixed = int((~moved).sum()) + int((~live[index[moved]]).sum())
    if epsilon > 0 and not bool(live.any()):
        raise ValueError(f"the {normalization} ball has radius 0 everywhere: the weights that may move are all zero"
                         + (" or every parameter is 1-D and one_d resolves to 'zero'" if resolved == "zero" else "")
                         + "; use one_d='filter' or 'layer', or normalization='global' with nonzero weights")
    loss0 = objective.loss()
    best_loss, best_delta = loss0, torch.zeros_like(theta0)
    if epsilon == 0:
        history = np.full((restarts, 1), loss0)
    else:
        history = np.empty((restarts, steps + 1))
        for r in range(restarts):
            delta = _start(objective, epsilon, normalization, resolved, index, radius, r, seed)
            value = loss0 if r == 0 else objective.loss(theta0 + delta)
            history[r, 0] = value
            if value > best_loss:
                best_loss, best_delta = value, delta.clone()
            for k in range(steps):
                delta = _ascent_step(delta, objective.gradient(theta0 + delta), index, radius, step_size)
                value = objective.loss(theta0 + delta)
                history[r, k + 1] = value
                if value > best_loss:
                    best_loss, best_delta = value, delta.clone()
    sharp = best_loss - loss0
    return SharpnessResult(
        sharpness=float(sharp), relative=float(sharp / (1.0 + loss0)), loss0=float(loss0), loss_max=float(best_loss),
        delta_norm=float(best_delta.norm()), epsilon=epsilon, normalization=normalization, one_d=resolved,
        convention=_convention(normalization, resolved), history=history,
        delta=best_delta.detach().cpu().numpy(), steps=steps, step_size=step_size, restarts=restarts, seed=seed,
        n_groups=int(live.sum()), n_fixed=n_fixed,
        provenance=dict(objective.provenance(), work=objective.counters.since(before)))
