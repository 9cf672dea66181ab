"""A training loop that records a trajectory of checkpoints (for PCA directions and
NTK dynamics). It trains a *copy* of the given model; the caller's module is unchanged."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .adapter import copy_module
from .data import Dataset
from .losses import LossFunction, LossSpec, make_loss
from .objective import NonFiniteLossError, Objective
from .params import ParamSpace
from .progress import progress_bar
from .results import Result


@dataclass
class TrainResult(Result):
    """Trajectory and learning curves.

    Attributes
    ----------
    trajectory : ndarray, shape (T, n)
        Flat parameter vectors (all parameters, :class:`ParamSpace` order) at each record.
    steps : ndarray of int, shape (T,)
        Optimizer steps taken at each record (0 = initialization).
    train_loss, train_metric, test_loss, test_metric : ndarray, shape (T,)
        Full-data mean loss / accuracy at each record (NaN when not available).
    param_names : list of str
    config : dict
    wall_time_s : float
    lr : ndarray, shape (T,)
        Learning rate in effect during the last epoch before each record (NaN at record 0, the
        initialization). Empty, shape (0,), in results saved before this field existed.
    selected : int
        Index into the records of the checkpoint whose weights the trained model holds (``T - 1`` for
        ``select="last"``); -1 in results saved before this field existed (they hold the last one) and in
        the partial result of a :class:`NonFiniteLossError`.
    """

    trajectory: np.ndarray
    steps: np.ndarray
    train_loss: np.ndarray
    train_metric: np.ndarray
    test_loss: np.ndarray
    test_metric: np.ndarray
    param_names: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    lr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    selected: int = -1

    @property
    def minimum(self) -> int:
        """Index of the record the trained model holds: ``selected``, or the last record when unset."""
        return self.selected if self.selected >= 0 else len(self.train_loss) - 1


SCHEDULES: tuple[str, ...] = ("constant", "cosine")
"""``schedule`` values of :func:`train`."""

SELECTIONS: tuple[str, ...] = ("last", "lowest_train_loss")
"""``select`` values of :func:`train`."""


def _state_copy(model: nn.Module) -> dict:
    """A deep copy of ``model.state_dict()`` (parameters and buffers), detached from the live module."""
    return {k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
            for k, v in model.state_dict().items()}


def _full_eval(model: nn.Module, loss_fn: LossFunction, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Full-data mean loss and metric in eval mode, through the same Objective the analyses use."""
    return Objective(model, loss_fn, (x, y), dtype=None, batch_size=4096).evaluate(check_finite=False)


def train(model: nn.Module, data: Union[Dataset, tuple[Tensor, Tensor]], *, loss: LossSpec = "cross_entropy",
          epochs: int = 50, lr: float = 0.05, optimizer: Literal["sgd", "adam"] = "sgd",
          momentum: float = 0.9, weight_decay: float = 0.0, batch_size: int = 64,
          record_every: int = 1, test: Optional[tuple[Tensor, Tensor]] = None, seed: int = 0,
          progress: bool = True, schedule: Literal["constant", "cosine"] = "constant",
          t_max: Optional[int] = None,
          select: Literal["last", "lowest_train_loss"] = "last") -> tuple[nn.Module, TrainResult]:
    """Train a copy of ``model`` with mini-batch SGD/Adam and record checkpoints.

    Parameters
    ----------
    model : nn.Module
        Initial model (not modified).
    data : Dataset or (inputs, targets)
        Training data; with a :class:`Dataset`, its test split is evaluated too.
    epochs, lr, optimizer, momentum, weight_decay, batch_size : training hyper-parameters.
    record_every : int
        Record a checkpoint every this many epochs (and always at 0 and at the end).
    seed : int
        Seeds the shuffling order; the result is deterministic on CPU.
    schedule : {"constant", "cosine"}
        Learning-rate schedule. "constant": ``lr`` throughout. "cosine":
        ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=t_max, eta_min=0)`` stepped once after every
        epoch and never reset, so epoch ``k`` (0-based) trains with ``lr * (1 + cos(pi * k / t_max)) / 2``:
        the rate falls to 0 at epoch ``t_max`` and rises again, a period of ``2 * t_max`` epochs (as in
        Kawase et al. 2025, with ``t_max=5`` and Adam).
    t_max : int, optional
        Half-period of the cosine schedule in epochs, >= 1; None means ``epochs``. Unused by "constant".
    select : {"last", "lowest_train_loss"}
        Which weights the returned model holds. "last": those after the final epoch.
        "lowest_train_loss": a deep copy of the full ``state_dict`` (buffers such as BatchNorm running
        statistics included) of the *recorded* checkpoint after initialization (epoch >= 1) with the lowest
        full-training-set loss (eval mode); ties go to the earliest, NaN losses are never chosen. Only
        recorded checkpoints are candidates, so ``record_every`` decides which epochs can be chosen. With
        no candidate (``epochs=0``, or no finite loss) the last weights are kept.

    Returns
    -------
    (trained_model, TrainResult)
        ``TrainResult.selected`` is the index of the record whose weights the model holds (its row of
        ``trajectory`` equals the model's flat parameters); ``TrainResult.lr`` the rate of each record's
        last epoch.

    Raises
    ------
    NonFiniteLossError
        If a training loss becomes NaN/inf; the exception's ``partial`` attribute holds the
        TrainResult recorded so far (no finished work is lost).
    """
    if isinstance(data, Dataset):
        x, y = data.train
        test = data.test if test is None else test
    else:
        x, y = data
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"training data must be non-empty with matching sizes, got {x.shape[0]} inputs "
                         f"and {y.shape[0]} targets")
    if epochs < 0 or batch_size < 1 or record_every < 1 or lr <= 0:
        raise ValueError("need epochs >= 0, batch_size >= 1, record_every >= 1 and lr > 0")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {list(SCHEDULES)}")
    if select not in SELECTIONS:
        raise ValueError(f"unknown select {select!r}; use one of {list(SELECTIONS)}")
    if t_max is not None and (isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1):
        raise ValueError(f"t_max must be an integer >= 1 (or None for epochs), got {t_max!r}")
    start = time.perf_counter()
    model = copy_module(model)  # shares simulator devices (native state cannot be deep-copied)
    model.train()
    dtype = next(iter(model.parameters())).dtype  # training runs in the model's own dtype
    x = x.to(dtype) if x.is_floating_point() else x
    if test is not None and test[0].is_floating_point():
        test = (test[0].to(dtype), test[1])
    loss_fn = make_loss(loss)
    space = ParamSpace.from_module(model)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                                     weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'sgd' or 'adam'")
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None
    if schedule == "cosine" and epochs > 0:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max or epochs, eta_min=0.0)
    gen = torch.Generator().manual_seed(seed)
    records: dict[str, list] = {k: [] for k in ("traj", "steps", "trl", "trm", "tel", "tem", "lr")}
    config = dict(loss=loss_fn.name, epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum,
                  weight_decay=weight_decay, batch_size=batch_size, record_every=record_every, seed=seed,
                  schedule=schedule, t_max=t_max, select=select)
    best: dict = {"index": -1, "loss": math.inf, "state": None}  # lowest-train-loss checkpoint so far

    def record(step: int, epoch_lr: float) -> None:
        records["traj"].append(space.from_module_values(model).to(torch.float64).numpy())
        records["steps"].append(step)
        trl, trm = _full_eval(model, loss_fn, x, y)
        tel, tem = _full_eval(model, loss_fn, *test) if test is not None else (float("nan"), float("nan"))
        records["trl"].append(trl)
        records["trm"].append(trm)
        records["tel"].append(tel)
        records["tem"].append(tem)
        records["lr"].append(epoch_lr)
        index = len(records["trl"]) - 1
        # strictly lower: ties keep the earliest; NaN compares False and is never chosen
        if select == "lowest_train_loss" and index >= 1 and trl < best["loss"]:
            best.update(index=index, loss=trl, state=_state_copy(model))

    def result(selected: int = -1) -> TrainResult:
        return TrainResult(trajectory=np.array(records["traj"]), steps=np.array(records["steps"], dtype=np.int64),
                           train_loss=np.array(records["trl"]), train_metric=np.array(records["trm"]),
                           test_loss=np.array(records["tel"]), test_metric=np.array(records["tem"]),
                           param_names=list(space.names), config=config,
                           wall_time_s=time.perf_counter() - start,
                           lr=np.array(records["lr"], dtype=np.float64), selected=selected)

    record(0, float("nan"))
    step = 0
    bar = progress_bar(epochs, "train", progress)
    for epoch in range(1, epochs + 1):
        epoch_lr = float(opt.param_groups[0]["lr"])
        perm = torch.randperm(x.shape[0], generator=gen)
        for s in range(0, x.shape[0], batch_size):
            idx = perm[s:s + batch_size]
            opt.zero_grad(set_to_none=True)
            lv = loss_fn.batch_loss(model(x[idx]), y[idx])  # torch's own reduction (weighted means too)
            if not bool(torch.isfinite(lv)):
                err = NonFiniteLossError(f"training loss became {float(lv.detach())} at epoch {epoch}, step {step}; "
                                         "lower the learning rate (lr) or check the data")
                err.partial = result()  # type: ignore[attr-defined]
                raise err
            lv.backward()
            opt.step()
            step += 1
        if scheduler is not None:
            scheduler.step()  # once per epoch, never reset: the cosine rate cycles with period 2 * T_max
        if epoch % record_every == 0 or epoch == epochs:
            record(step, epoch_lr)
            bar.set_postfix(loss=f"{records['trl'][-1]:.4f}")
        bar.update(1)
    bar.close()
    selected = len(records["trl"]) - 1
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        selected = best["index"]
    model.eval()
    return model, result(selected)
