"""Parent-child spawning (Fort et al. 2020; Frankle et al. 2020): when do SGD-noise children share one basin?

A parent network is trained from the given initialization; at each spawn time ``t`` (in epochs) its weights are
copied into ``K`` children that differ only in SGD noise (the minibatch order, seeded per child). Each child is
trained to the same total number of epochs, and for every pair of children the straight line between their final
weights is scanned: a loss / 0-1 error barrier near 0 means the children fell into one linearly connected basin.
The disagreement (fraction of evaluation points where the children's argmax predictions differ) measures how
different the two functions are.

The experiment is a set of independent jobs (:func:`spawn_jobs`, :func:`run_job`): one parent job that records
a checkpoint every epoch, one child job per ``(t, k)`` that starts from the parent's checkpoint at ``t``, and one
barrier job per ``t``. :func:`run_spawn` runs them, the child jobs on an optional
``concurrent.futures.Executor``, and can resume from a cache directory.

Training state
--------------
A child starts from the parent's full training state at ``t``, as in Frankle et al. (2020): its parameters and its
optimizer state (SGD momentum buffers, Adam moments and step counts, kept by the parent job at every spawn time;
``copy_optimizer=False`` copies the parameters only, so the children's momentum restarts from zero). The learning
rate is constant (the only schedule used here), so nothing else carries over. Only the minibatch order differs
between children.

Deviations from Frankle et al. (2020)
-------------------------------------
* Buffers (BatchNorm running statistics) are not part of the flat parameter vector: every child and every
  evaluation uses the buffers of the ``model`` passed in. Models whose buffers change during training are
  therefore not treated faithfully.
* Barriers are reported for *all* ``K (K - 1) / 2`` pairs of children (Frankle et al. use one pair per
  replicate), and their mean over pairs.
* Barrier definition (Frankle et al. 2020, eq. 1): ``max_alpha R(alpha w + (1 - alpha) w') - (R(w) + R(w')) / 2``
  on a grid of ``n_points`` values of alpha in ``[0, 1]`` (endpoints included), for the loss and for the 0-1 error
  ``R = 1 - accuracy``. It is >= 0 by construction. :attr:`InterpolationResult.barrier` of
  :func:`qlandscape.landscape.scan.interpolate` instead subtracts the straight line between the endpoint values;
  the two agree when the endpoints have equal values.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import numbers
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..adapter import ModelAdapter, copy_module
from ..config import SpawnConfig, TrainConfig
from ..data import Dataset
from ..landscape.scan import interpolate
from ..objective import Objective
from ..params import ParamSpace
from ..progress import progress_bar
from ..results import Result, ResultFileError, atomic_write_bytes
from ..train import TrainResult, train
from .dynamics import refuse_running_statistics

__all__ = ["SpawnPlan", "SpawnResult", "spawn_jobs", "run_job", "train_parent", "train_child", "child_barriers",
           "run_spawn", "spawn_result", "save_theta", "load_theta"]

OPTIMIZERS = ("sgd", "adam")
EVAL_SPLITS = ("test", "train")
CHILD_SEED_STRIDE = 1000
"""Derived child seeds are ``parent_seed * CHILD_SEED_STRIDE + 1 + k``, so at most ``CHILD_SEED_STRIDE - 1``
children (no collision with another parent seed's children or with any parent seed's own order)."""


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))  # type: ignore


@dataclass(frozen=True)
class SpawnPlan:
    """A parent-child spawning experiment (JSON-able: :meth:`to_dict` / :meth:`from_dict`).

    Parameters
    ----------
    spawn_times : tuple of int
        Epochs at which children are spawned from the parent, each in ``[0, epochs]``; distinct, stored sorted.
        ``t = 0`` spawns from the initialization; ``t = epochs`` makes children that are copies of the parent.
    n_children : int
        Children per spawn time ``K``, >= 2.
    epochs : int
        Total training epochs of every child (parent epochs + child epochs), >= 1.
    lr, optimizer, momentum, weight_decay, batch_size
        Training hyper-parameters of parent and children (:func:`qlandscape.train.train`; constant schedule,
        cross-entropy loss).
    parent_seed : int
        Minibatch-order seed of the parent, >= 0.
    child_seeds : tuple of int, optional
        Minibatch-order seeds of the ``K`` children (the same at every spawn time, so children at different
        times differ only in their starting point). None derives ``parent_seed * 1000 + 1 + k``
        (``k = 0..K-1``); equal seeds give identical children.
    n_points : int
        Points on the interpolation line between two children, endpoints included, >= 2.
    eval_split : {"test", "train"}
        Split on which barriers, errors and disagreement are measured.
    copy_optimizer : bool
        Children start from the parent's optimizer state at ``t`` as well as its parameters (default, as Frankle
        et al.); False: parameters only, a fresh optimizer.
    """

    spawn_times: tuple[int, ...]
    n_children: int = SpawnConfig.n_children  # defaults: the [spawn] and [train] sections', their one source
    epochs: int = 10
    lr: float = TrainConfig.lr
    optimizer: str = TrainConfig.optimizer
    momentum: float = TrainConfig.momentum
    weight_decay: float = TrainConfig.weight_decay
    batch_size: int = TrainConfig.batch_size
    parent_seed: int = 0
    child_seeds: Optional[tuple[int, ...]] = None
    n_points: int = SpawnConfig.n_points
    eval_split: str = "test"
    copy_optimizer: bool = SpawnConfig.copy_optimizer

    def __post_init__(self) -> None:
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        times = self.spawn_times
        if _is_int(times):
            times = (times,)  # type: ignore[assignment]
        if isinstance(times, (str, bytes)) or not hasattr(times, "__iter__"):
            raise ValueError(f"spawn_times must be a sequence of integer epochs, got {self.spawn_times!r}")
        times = tuple(times)
        if not times:
            raise ValueError("spawn_times must name at least one epoch")
        bad = [t for t in times if not _is_int(t) or not 0 <= t <= self.epochs]
        if bad:
            raise ValueError(f"spawn_times must be integer epochs in [0, epochs={self.epochs}], got {bad}")
        if len(set(times)) != len(times):
            raise ValueError(f"spawn_times must be distinct, got {list(times)}")
        object.__setattr__(self, "spawn_times", tuple(sorted(int(t) for t in times)))
        if not _is_int(self.n_children) or self.n_children < 2:
            raise ValueError(f"n_children must be an integer >= 2, got {self.n_children!r}")
        if self.child_seeds is None and self.n_children >= CHILD_SEED_STRIDE:
            raise ValueError(f"n_children must be < {CHILD_SEED_STRIDE} with derived seeds, got {self.n_children}; "
                             "pass child_seeds explicitly")
        if not _is_real(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if not _is_real(self.momentum) or self.momentum < 0:
            raise ValueError(f"momentum must be a finite number >= 0, got {self.momentum!r}")
        if not _is_real(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not _is_int(self.parent_seed) or self.parent_seed < 0:
            raise ValueError(f"parent_seed must be an integer >= 0, got {self.parent_seed!r}")
        if self.child_seeds is not None:
            seeds = tuple(self.child_seeds) if hasattr(self.child_seeds, "__iter__") else None
            if seeds is None or len(seeds) != self.n_children or not all(_is_int(s) and s >= 0 for s in seeds):
                raise ValueError(f"child_seeds must be {self.n_children} (n_children) integers >= 0, "
                                 f"got {self.child_seeds!r}")
            object.__setattr__(self, "child_seeds", tuple(int(s) for s in seeds))
        if not _is_int(self.n_points) or self.n_points < 2:
            raise ValueError(f"n_points must be an integer >= 2, got {self.n_points!r}")
        if self.eval_split not in EVAL_SPLITS:
            raise ValueError(f"eval_split must be one of {list(EVAL_SPLITS)}, got {self.eval_split!r}")
        if not isinstance(self.copy_optimizer, bool):
            raise ValueError(f"copy_optimizer must be true or false, got {self.copy_optimizer!r}")

    @property
    def seeds(self) -> tuple[int, ...]:
        """Minibatch-order seeds of the ``K`` children."""
        if self.child_seeds is not None:
            return self.child_seeds
        return tuple(self.parent_seed * CHILD_SEED_STRIDE + 1 + k for k in range(self.n_children))

    @property
    def parent_epochs(self) -> int:
        """Epochs the parent is trained: the latest spawn time."""
        return max(self.spawn_times)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """All pairs ``(i, j)``, ``i < j``, of child indices, in lexicographic order."""
        return list(itertools.combinations(range(self.n_children), 2))

    def train_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`qlandscape.train.train` shared by parent and children."""
        return dict(loss="cross_entropy", lr=float(self.lr), optimizer=self.optimizer, momentum=float(self.momentum),
                    weight_decay=float(self.weight_decay), batch_size=int(self.batch_size), record_every=1,
                    schedule="constant", select="last")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary (tuples become lists)."""
        d = asdict(self)
        d["spawn_times"] = list(self.spawn_times)
        d["child_seeds"] = None if self.child_seeds is None else list(self.child_seeds)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpawnPlan":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError (naming them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SpawnPlan field(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        if d.get("spawn_times") is not None and not _is_int(d["spawn_times"]):
            d["spawn_times"] = tuple(d["spawn_times"])
        if d.get("child_seeds") is not None:
            d["child_seeds"] = tuple(d["child_seeds"])
        return cls(**d)


@dataclass
class SpawnResult(Result):
    """Barriers and disagreement between SGD-noise children as a function of the spawn time.

    ``S`` spawn times, ``K`` children, ``P = K (K - 1) / 2`` pairs, ``m = n_points`` points per line. Errors are
    0-1 error rates in ``[0, 1]``; losses are mean cross-entropies (nats); times are epochs. All are measured on
    the plan's ``eval_split`` in float64.

    Attributes
    ----------
    spawn_times : ndarray of int, shape (S,)
    loss_barrier, error_barrier, disagreement : ndarray, shape (S,)
        Means over the ``P`` pairs of the per-pair values below.
    pair_loss_barrier, pair_error_barrier : ndarray, shape (S, P)
        ``max_alpha R(alpha) - (R(0) + R(1)) / 2`` along the line between the pair's children (Frankle et al.).
    pair_disagreement : ndarray, shape (S, P)
        Fraction of evaluation points where the two children's argmax predictions differ.
    pair_distance : ndarray, shape (S, P)
        Euclidean distance between the two children's flat parameter vectors.
    pairs : ndarray of int, shape (P, 2)
        Child indices ``(i, j)`` of each pair; alpha = 0 is child ``i``, alpha = 1 child ``j``.
    alpha : ndarray, shape (m,)
        Interpolation coefficients, ``linspace(0, 1, m)``.
    loss_curves, error_curves : ndarray, shape (S, P, m)
        Loss and 0-1 error along each line.
    child_loss, child_error : ndarray, shape (S, K)
        Final loss and 0-1 error of each child.
    parent_loss, parent_error : ndarray, shape (S,)
        Loss and 0-1 error of the parent at each spawn time.
    child_seeds : ndarray of int, shape (K,)
    plan : dict
        :meth:`SpawnPlan.to_dict`.
    info : dict
        Wall times (s), parameter count, evaluation split size, and the deviations from Frankle et al.
    """

    spawn_times: np.ndarray
    loss_barrier: np.ndarray
    error_barrier: np.ndarray
    disagreement: np.ndarray
    pair_loss_barrier: np.ndarray
    pair_error_barrier: np.ndarray
    pair_disagreement: np.ndarray
    pair_distance: np.ndarray
    pairs: np.ndarray
    alpha: np.ndarray
    loss_curves: np.ndarray
    error_curves: np.ndarray
    child_loss: np.ndarray
    child_error: np.ndarray
    parent_loss: np.ndarray
    parent_error: np.ndarray
    child_seeds: np.ndarray
    plan: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- helpers


def _check_data(data: Dataset, plan: SpawnPlan) -> tuple[Tensor, Tensor]:
    """The evaluation split of ``data``, after checking both splits are usable."""
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a qlandscape.data.Dataset (train and test splits), got {type(data).__name__}")
    for split in ("train", plan.eval_split):
        x, y = getattr(data, split)
        if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(f"data.{split} must be non-empty with matching sizes, got {x.shape[0]} inputs and "
                             f"{y.shape[0]} targets")
    return getattr(data, plan.eval_split)


def _space(model: nn.Module) -> ParamSpace:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    refuse_running_statistics(model, "parent-child spawning")  # children start from parameter-only checkpoints
    return ParamSpace.from_module(model)


def _check_theta(theta: Union[np.ndarray, Tensor], space: ParamSpace, what: str) -> np.ndarray:
    arr = np.asarray(theta.detach().cpu() if isinstance(theta, Tensor) else theta, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != space.size:
        raise ValueError(f"{what} has shape {arr.shape}, but the model has {space.size} parameters (a different "
                         "model than the one the parent was trained with?)")
    return arr


def _load_theta(model: nn.Module, theta: np.ndarray) -> nn.Module:
    """A copy of ``model`` whose selected parameters hold ``theta`` (cast to each parameter's dtype)."""
    space = _space(model)
    theta = _check_theta(theta, space, "parameter vector")
    out = copy_module(model)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for name, value in space.unflatten(torch.from_numpy(theta)).items():
            params[name].copy_(value.to(params[name].dtype))
    return out


def _spawn_point(parent: Union[TrainResult, np.ndarray, Tensor], t: int, space: ParamSpace) -> np.ndarray:
    """The parent's flat parameters at epoch ``t``: row ``t`` of a trajectory recorded every epoch, or the
    vector itself."""
    if isinstance(parent, TrainResult):
        traj = np.asarray(parent.trajectory)
        if traj.ndim != 2 or traj.shape[1] != space.size:
            raise ValueError(f"the parent trajectory has shape {traj.shape}, but the model has {space.size} "
                             "parameters (a different model than the one the parent was trained with?)")
        if (parent.config.get("record_every", 1) != 1 or parent.config.get("record_steps", 0)
                or not 0 <= t < traj.shape[0]):
            raise ValueError(f"the parent trajectory has {traj.shape[0]} records (record_every="
                             f"{parent.config.get('record_every')}, record_steps={parent.config.get('record_steps', 0)}"
                             f"); spawn time t={t} needs a record at the end of every epoch and none inside "
                             "epochs, up to t (train_parent)")
        return traj[t].astype(np.float64)
    return _check_theta(parent, space, "the parent's spawn point")


def _spawn_start(parent: Any, t: int, space: ParamSpace, plan: SpawnPlan
                 ) -> tuple[np.ndarray, Optional[dict[str, np.ndarray]]]:
    """``(theta, optimizer_state)`` of the parent at epoch ``t`` (state None with ``copy_optimizer=False``)."""
    if isinstance(parent, tuple):
        if len(parent) != 2:
            raise ValueError("a spawn point given as a tuple must be (theta, optimizer_state)")
        theta, state = _check_theta(parent[0], space, "the parent's spawn point"), parent[1]
    else:
        theta = _spawn_point(parent, t, space)
        if isinstance(parent, TrainResult):
            state = parent.optimizer_state_at(t) if plan.copy_optimizer else None
        elif plan.copy_optimizer and t > 0:
            raise ValueError(f"copy_optimizer=True needs the parent's optimizer state at t={t}: pass the parent's "
                             "TrainResult (train_parent) or (theta, optimizer_state), or use copy_optimizer=False")
        else:
            state = None
    if not plan.copy_optimizer:
        return theta, None
    if state is None or not isinstance(state, dict):
        raise ValueError(f"copy_optimizer=True needs the parent's optimizer state at t={t} as a dict, got "
                         f"{type(state).__name__}")
    return theta, state


def _frankle_barrier(curve: np.ndarray) -> float:
    """``max(curve) - (curve[0] + curve[-1]) / 2``; NaN if any value is NaN."""
    if np.isnan(curve).any():
        return float("nan")
    return float(np.max(curve) - (curve[0] + curve[-1]) / 2)


def _predictions(adapter: ModelAdapter, theta: np.ndarray, x: Tensor, chunk: int = 4096) -> Tensor:
    """Argmax predictions (eval mode, the adapter's dtype) of the model at ``theta``."""
    th = adapter.cast(torch.from_numpy(theta))
    out = []
    with torch.no_grad(), adapter.mode(False):
        for s in range(0, x.shape[0], chunk):
            logits = adapter.apply(th, adapter.cast(x[s:s + chunk]))
            if logits.dim() != 2:
                raise ValueError(f"the model's outputs must be (B, n_classes) logits, got shape {tuple(logits.shape)}")
            out.append(logits.argmax(dim=-1))
    return torch.cat(out)


def _evaluate(model: nn.Module, eval_data: tuple[Tensor, Tensor], theta: np.ndarray) -> tuple[float, float]:
    """(loss, 0-1 error) at ``theta`` on ``eval_data``, float64."""
    obj = Objective(model, "cross_entropy", eval_data, dtype=torch.float64)
    loss, acc = obj.evaluate(obj.as_theta(torch.from_numpy(theta)), check_finite=False)
    return float(loss), float(1.0 - acc)


# -------------------------------------------------------------------------------------------------------- jobs


def spawn_jobs(plan: SpawnPlan) -> list[dict[str, Any]]:
    """The experiment as independent jobs, in an order that respects their dependencies.

    Returns
    -------
    list of dict
        JSON-able job descriptions, each with ``kind``, ``id`` and ``needs`` (ids of the jobs whose output it
        takes):

        * ``{"kind": "parent", "id": "parent", "epochs": E_p, "seed": s}``: train the parent ``E_p = max(t)``
          epochs, recording every epoch (:func:`train_parent`);
        * ``{"kind": "child", "id": "child_t{t}_k{k}", "t": t, "k": k, "seed": s_k, "epochs": E - t}`` for each
          spawn time and child (:func:`train_child`; needs the parent);
        * ``{"kind": "barrier", "id": "barrier_t{t}", "t": t}`` for each spawn time (:func:`child_barriers`;
          needs that time's ``K`` children).
    """
    jobs: list[dict[str, Any]] = [dict(kind="parent", id="parent", epochs=plan.parent_epochs, seed=plan.parent_seed,
                                       needs=[])]
    for t in plan.spawn_times:
        for k, seed in enumerate(plan.seeds):
            jobs.append(dict(kind="child", id=_child_id(t, k), t=t, k=k, seed=seed, epochs=plan.epochs - t,
                             needs=["parent"]))
    for t in plan.spawn_times:
        jobs.append(dict(kind="barrier", id=f"barrier_t{t}", t=t, needs=[_child_id(t, k)
                                                                         for k in range(plan.n_children)]))
    return jobs


def _child_id(t: int, k: int) -> str:
    return f"child_t{t}_k{k}"


def run_job(job: dict[str, Any], model: nn.Module, data: Dataset, plan: SpawnPlan,
            inputs: Optional[dict[str, Any]] = None) -> Any:
    """Run one job of :func:`spawn_jobs` (a pure function of its arguments).

    Parameters
    ----------
    job : dict
        One entry of ``spawn_jobs(plan)``.
    model : nn.Module
        The initialization of the parent (every job must get the same one; it is not modified).
    data : Dataset
    plan : SpawnPlan
    inputs : dict, optional
        Outputs of the jobs named in ``job["needs"]``, by id.

    Returns
    -------
    TrainResult (parent), ndarray of shape (n,) (child's final parameters) or dict (barriers, see
    :func:`child_barriers`).
    """
    inputs = inputs or {}
    missing = [n for n in job.get("needs", []) if n not in inputs]
    if missing:
        raise ValueError(f"job {job.get('id')!r} needs the outputs of {missing}")
    kind = job.get("kind")
    if kind == "parent":
        return train_parent(model, data, plan)
    if kind == "child":
        return train_child(model, data, plan, inputs["parent"], int(job["t"]), int(job["k"]))
    if kind == "barrier":
        return child_barriers(model, data, plan, [inputs[n] for n in job["needs"]])
    raise ValueError(f"unknown job kind {kind!r}; use 'parent', 'child' or 'barrier'")


def train_parent(model: nn.Module, data: Dataset, plan: SpawnPlan, *, progress: bool = False) -> TrainResult:
    """Train the parent ``plan.parent_epochs`` epochs from ``model`` with seed ``plan.parent_seed``.

    Returns
    -------
    TrainResult
        Recorded every epoch: ``trajectory[t]`` (shape ``(n,)``) is the parent's flat parameters after ``t``
        epochs, the spawn point of time ``t``; with ``plan.copy_optimizer`` the optimizer state at every spawn
        time ``t >= 1`` is kept too (``optimizer_state_at(t)``).
    """
    _space(model)
    _check_data(data, plan)
    keep = [t for t in plan.spawn_times if t >= 1] if plan.copy_optimizer else []
    _, result = train(model, data, epochs=plan.parent_epochs, seed=plan.parent_seed, progress=progress,
                      keep_optimizer_state=keep, **plan.train_kwargs())
    return result


def train_child(model: nn.Module, data: Dataset, plan: SpawnPlan,
                parent: Union[TrainResult, tuple[np.ndarray, Optional[dict[str, np.ndarray]]], np.ndarray, Tensor],
                t: int, k: int, *, progress: bool = False) -> np.ndarray:
    """Train child ``k`` spawned at epoch ``t`` to the end and return its final flat parameters.

    The parent's parameters at ``t`` are loaded into a copy of ``model`` (buffers stay ``model``'s) and trained
    ``plan.epochs - t`` more epochs with minibatch seed ``plan.seeds[k]``, starting from the parent's optimizer
    state at ``t`` (``plan.copy_optimizer``, the default; otherwise a fresh optimizer).

    Parameters
    ----------
    model : nn.Module
        Same architecture as the parent's (its parameter values are replaced).
    parent : TrainResult, (ndarray, dict) or ndarray of shape (n,)
        The parent's :func:`train_parent` result (row ``t`` and the optimizer state kept at ``t``), or directly
        ``(theta_t, optimizer_state_t)`` (cheaper to send to a worker process), or ``theta_t`` alone (only with
        ``copy_optimizer=False`` or ``t = 0``).
    t : int
        Spawn time in epochs, one of ``plan.spawn_times``.
    k : int
        Child index in ``[0, n_children)``.

    Returns
    -------
    ndarray, shape (n,), float64
    """
    space = _space(model)
    if not _is_int(t) or t not in plan.spawn_times:
        raise ValueError(f"spawn time t={t!r} is not one of the plan's spawn_times {list(plan.spawn_times)}")
    if not _is_int(k) or not 0 <= k < plan.n_children:
        raise ValueError(f"child index k={k!r} must be in [0, n_children={plan.n_children})")
    _check_data(data, plan)
    theta, state = _spawn_start(parent, int(t), space, plan)
    start = _load_theta(model, theta)
    trained, _ = train(start, data, epochs=plan.epochs - int(t), seed=plan.seeds[k], progress=progress,
                       optimizer_state=state, **plan.train_kwargs())
    return space.from_module_values(trained).to(torch.float64).numpy()


def child_barriers(model: nn.Module, data: Dataset, plan: SpawnPlan,
                   children: list[Union[np.ndarray, Tensor]]) -> dict[str, np.ndarray]:
    """Barriers and disagreement for every pair of children (one spawn time).

    Parameters
    ----------
    model : nn.Module
        Architecture (and buffers) of the children.
    children : list of ndarray, each shape (n,)
        Final flat parameters of the ``K >= 2`` children.

    Returns
    -------
    dict of ndarray
        ``pairs`` (P, 2); ``alpha`` (m,); ``loss_curves``, ``error_curves`` (P, m); ``loss_barrier``,
        ``error_barrier``, ``disagreement``, ``distance`` (P,); ``child_loss``, ``child_error`` (K,).
        Barriers follow Frankle et al. (``max - mean of endpoints``), errors are 0-1 error rates in ``[0, 1]``.
    """
    space = _space(model)
    x, y = _check_data(data, plan)
    if len(children) < 2:
        raise ValueError(f"need at least 2 children, got {len(children)}")
    thetas = [_check_theta(c, space, f"child {i}") for i, c in enumerate(children)]
    obj = Objective(model, "cross_entropy", (x, y), dtype=torch.float64)
    adapter = ModelAdapter(model, dtype=torch.float64)
    preds = [_predictions(adapter, th, x) for th in thetas]
    pairs = list(itertools.combinations(range(len(thetas)), 2))
    m = plan.n_points
    loss_curves, error_curves = np.zeros((len(pairs), m)), np.zeros((len(pairs), m))
    alpha = np.linspace(0.0, 1.0, m)
    for p, (i, j) in enumerate(pairs):
        res = interpolate(obj, thetas[i], thetas[j], n_points=m, progress=False)
        alpha = np.asarray(res.t)
        loss_curves[p] = res.loss
        error_curves[p] = 1.0 - np.asarray(res.metric)
    child_loss, child_error = np.zeros(len(thetas)), np.zeros(len(thetas))
    for i, th in enumerate(thetas):
        loss, acc = obj.evaluate(obj.as_theta(torch.from_numpy(th)), check_finite=False)
        child_loss[i], child_error[i] = loss, 1.0 - acc
    return dict(
        pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2), alpha=alpha, loss_curves=loss_curves,
        error_curves=error_curves,
        loss_barrier=np.array([_frankle_barrier(c) for c in loss_curves]),
        error_barrier=np.array([_frankle_barrier(c) for c in error_curves]),
        disagreement=np.array([float((preds[i] != preds[j]).double().mean()) for i, j in pairs]),
        distance=np.array([float(np.linalg.norm(thetas[i] - thetas[j])) for i, j in pairs]),
        child_loss=child_loss, child_error=child_error)


# ------------------------------------------------------------------------------------------------ orchestration


def _child_path(cache: Path, t: int, k: int) -> Path:
    return cache / f"{_child_id(t, k)}.npy"


def save_theta(path: Union[str, Path], theta: np.ndarray) -> None:
    """Write a flat parameter vector ``theta`` (n,) to ``path`` as ``.npy`` (float64, no pickle), atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(theta, dtype=np.float64), allow_pickle=False)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_theta(path: Union[str, Path]) -> np.ndarray:
    """Read an array written by :func:`save_theta`.

    Raises
    ------
    ResultFileError
        The file is missing, truncated or not an ``.npy`` array (object arrays are not loaded).
    """
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ResultFileError(f"{path} is missing") from None
    except (OSError, ValueError, EOFError):
        raise ResultFileError(f"{path} is not a readable .npy array (truncated or corrupted)") from None


def _save_child(cache: Path, t: int, k: int, theta: np.ndarray) -> None:
    save_theta(_child_path(cache, t, k), theta)


def _load_child(cache: Path, t: int, k: int, space: ParamSpace) -> Optional[np.ndarray]:
    path = _child_path(cache, t, k)
    if not path.exists():
        return None
    try:
        arr = load_theta(path)
    except ResultFileError:
        return None  # a damaged cache entry is recomputed
    return _check_theta(arr, space, f"cached child {path}")


def _open_cache(cache_dir: Union[str, Path], plan: SpawnPlan) -> Path:
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    plan_file = cache / "plan.json"
    if plan_file.exists():
        stored = json.loads(plan_file.read_text())
        if stored != plan.to_dict():
            raise ValueError(f"{cache} holds another spawn plan ({stored}); use a fresh cache_dir for {plan.to_dict()}")
    else:
        atomic_write_bytes(plan_file, json.dumps(plan.to_dict(), indent=2, sort_keys=True).encode())
    return cache


def run_spawn(model: nn.Module, data: Dataset, plan: SpawnPlan, *, executor: Any = None,
              cache_dir: Optional[Union[str, Path]] = None, progress: bool = True) -> SpawnResult:
    """Run the whole spawning experiment: the parent, all ``(t, k)`` children, then barriers per spawn time.

    Parameters
    ----------
    model : nn.Module
        The parent's initialization (not modified).
    data : Dataset
        Training data (train split) and evaluation data (``plan.eval_split``).
    plan : SpawnPlan
    executor : concurrent.futures.Executor, optional
        Child jobs are submitted as ``executor.submit(train_child, model, data, plan, (theta_t, state_t), t, k)``; with a
        process pool, ``model`` and ``data`` must be picklable (a model holding native simulator state may not
        be: use a thread pool, None, or a :mod:`qlandscape.sweep` run per job). None runs them here, in order.
        The parent and the barriers always run in this process.
    cache_dir : path, optional
        Resume directory: the parent (``parent.{npz,json}``, a TrainResult) and each child
        (``child_t{t}_k{k}.npy``) are written there as they finish and reused by a later call with the same
        plan (a different plan raises ValueError). The model is not fingerprinted: use one directory per model.
    progress : bool
        Progress bar over child jobs.

    Returns
    -------
    SpawnResult
    """
    start = time.perf_counter()
    space = _space(model)
    eval_x, eval_y = _check_data(data, plan)
    cache = _open_cache(cache_dir, plan) if cache_dir is not None else None

    parent: Optional[TrainResult] = None
    if cache is not None and (cache / "parent.json").exists():
        try:
            parent = TrainResult.load(cache / "parent")
        except ValueError:
            parent = None
    if parent is None:
        parent = train_parent(model, data, plan, progress=False)
        if cache is not None:
            parent.save(cache / "parent")
    starts = {t: _spawn_start(parent, t, space, plan) for t in plan.spawn_times}
    parent_wall = time.perf_counter() - start

    children: dict[tuple[int, int], np.ndarray] = {}
    todo = []
    for t in plan.spawn_times:
        for k in range(plan.n_children):
            cached = _load_child(cache, t, k, space) if cache is not None else None
            if cached is not None:
                children[t, k] = cached
            else:
                todo.append((t, k))
    bar = progress_bar(len(todo), "spawn children", progress)

    def done(t: int, k: int, theta: np.ndarray) -> None:
        children[t, k] = _check_theta(theta, space, f"child t={t} k={k}")
        if cache is not None:
            _save_child(cache, t, k, children[t, k])
        bar.update(1)

    if executor is None:
        for t, k in todo:
            done(t, k, train_child(model, data, plan, starts[t], t, k))
    else:
        futures = {executor.submit(train_child, model, data, plan, starts[t], t, k): (t, k) for t, k in todo}
        for fut, (t, k) in futures.items():
            done(t, k, fut.result())
    bar.close()
    children_wall = time.perf_counter() - start - parent_wall

    result = spawn_result(model, data, plan, parent, children, info=dict(
        parent_wall_s=parent_wall, children_wall_s=children_wall, children_trained=len(todo),
        children_cached=len(plan.spawn_times) * plan.n_children - len(todo)))
    result.info["wall_time_s"] = time.perf_counter() - start
    return result


def spawn_result(model: nn.Module, data: Dataset, plan: SpawnPlan, parent: TrainResult,
                 children: dict[tuple[int, int], np.ndarray], *, info: Optional[dict[str, Any]] = None) -> SpawnResult:
    """The experiment's result from a trained parent and its trained children: barriers, disagreement and
    distances for every pair of children at every spawn time, and the parent's loss and error there.

    :func:`run_spawn` ends with it; a caller that trains the parent (:func:`train_parent`) and the children
    (:func:`train_child`) itself, e.g. as resumable steps of a job, calls it directly.

    Parameters
    ----------
    model : nn.Module
        The parent's initialization (its buffers are used for every evaluation).
    data : Dataset
    plan : SpawnPlan
    parent : TrainResult
        :func:`train_parent`'s result.
    children : dict
        ``{(t, k): flat parameters (n,)}`` for every spawn time ``t`` of the plan and ``k < plan.n_children``.
    info : dict, optional
        Extra entries for :attr:`SpawnResult.info` (timings, how many children were trained or reused).

    Returns
    -------
    SpawnResult
    """
    space = _space(model)
    eval_x, eval_y = _check_data(data, plan)
    missing = [(t, k) for t in plan.spawn_times for k in range(plan.n_children) if (t, k) not in children]
    if missing:
        raise ValueError(f"children {missing} are missing: spawn_result needs every (t, k) of the plan")
    children = {key: _check_theta(theta, space, f"child t={key[0]} k={key[1]}") for key, theta in children.items()}
    points = {t: _spawn_point(parent, t, space) for t in plan.spawn_times}
    S, K, P, m = len(plan.spawn_times), plan.n_children, len(plan.pairs), plan.n_points
    out = {name: np.zeros(shape) for name, shape in [
        ("pair_loss_barrier", (S, P)), ("pair_error_barrier", (S, P)), ("pair_disagreement", (S, P)),
        ("pair_distance", (S, P)), ("loss_curves", (S, P, m)), ("error_curves", (S, P, m)),
        ("child_loss", (S, K)), ("child_error", (S, K)), ("parent_loss", (S,)), ("parent_error", (S,))]}
    alpha = np.linspace(0.0, 1.0, m)
    for s, t in enumerate(plan.spawn_times):
        b = child_barriers(model, data, plan, [children[t, k] for k in range(K)])
        alpha = b["alpha"]
        out["pair_loss_barrier"][s], out["pair_error_barrier"][s] = b["loss_barrier"], b["error_barrier"]
        out["pair_disagreement"][s], out["pair_distance"][s] = b["disagreement"], b["distance"]
        out["loss_curves"][s], out["error_curves"][s] = b["loss_curves"], b["error_curves"]
        out["child_loss"][s], out["child_error"][s] = b["child_loss"], b["child_error"]
        out["parent_loss"][s], out["parent_error"][s] = _evaluate(model, (eval_x, eval_y), points[t])
    info = dict(n_params=space.size, n_eval=int(eval_x.shape[0]), n_train=int(data.train[0].shape[0]),
                **(info or {}),
                barrier_definition="max_alpha R(alpha) - (R(0) + R(1)) / 2 (Frankle et al. 2020)",
                training_state=("parameters and optimizer state copied from the parent" if plan.copy_optimizer
                                else "parameters copied from the parent; fresh optimizer (copy_optimizer=False)"),
                deviations=["buffers are the initial model's, not trained", "all K(K-1)/2 child pairs"])
    return SpawnResult(
        spawn_times=np.array(plan.spawn_times, dtype=np.int64),
        loss_barrier=out["pair_loss_barrier"].mean(axis=1), error_barrier=out["pair_error_barrier"].mean(axis=1),
        disagreement=out["pair_disagreement"].mean(axis=1), pairs=np.array(plan.pairs, dtype=np.int64),
        alpha=alpha, child_seeds=np.array(plan.seeds, dtype=np.int64), plan=plan.to_dict(), info=info,
        **{k: v for k, v in out.items()})
