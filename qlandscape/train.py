"""A training loop that records a trajectory of checkpoints (for PCA directions and
NTK dynamics). It trains a *copy* of the given model; the caller's module is unchanged."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .adapter import copy_module
from .adversarial.attacks import Attack
from .config import TrainConfig
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
        Learning rate in effect during the last epoch before each record (the current epoch's for a record
        inside an epoch; NaN at record 0, the initialization). Empty, shape (0,), in results saved before this
        field existed.
    selected : int
        Index into the records of the checkpoint whose weights the trained model holds (``T - 1`` for
        ``select="last"``); -1 in results saved before this field existed (they hold the last one) and in
        the partial result of a :class:`NonFiniteLossError`.
    optimizer_state_epochs : ndarray of int, shape (S,)
        Epochs at whose end the optimizer state was kept (``keep_optimizer_state``); empty by default.
    optimizer_state_keys : list of str
        Names of the kept state entries (SGD: ``momentum_buffer``; Adam: ``step``, ``exp_avg``,
        ``exp_avg_sq``).
    optimizer_states : ndarray, shape (S, len(keys), n)
        The kept states as flat vectors in the trajectory's parameter order (see :func:`flat_optimizer_state`).
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
    optimizer_state_epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    optimizer_state_keys: list = field(default_factory=list)
    optimizer_states: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))

    @property
    def minimum(self) -> int:
        """Index of the record the trained model holds: ``selected``, or the last record when unset."""
        return self.selected if self.selected >= 0 else len(self.train_loss) - 1

    def optimizer_state_at(self, epoch: int) -> dict[str, np.ndarray]:
        """The optimizer state kept at the end of ``epoch`` as ``{key: (n,) array}`` (empty at epoch 0: a fresh
        optimizer); ValueError naming the kept epochs when it was not kept."""
        if epoch == 0:
            return {}
        hits = np.flatnonzero(np.asarray(self.optimizer_state_epochs) == epoch)
        if not hits.size:
            raise ValueError(f"no optimizer state kept at epoch {epoch} (kept: "
                             f"{np.asarray(self.optimizer_state_epochs).tolist()}); train with "
                             "keep_optimizer_state=[...] naming it")
        row = np.asarray(self.optimizer_states)[int(hits[0])]
        return {k: row[i] for i, k in enumerate(self.optimizer_state_keys)}

    def epochs_at_records(self) -> Optional[np.ndarray]:
        """Training time of each record in epochs, ``steps / (steps[-1] / config["epochs"])`` (exact: every
        epoch takes the same number of optimizer steps), shape (T,); None without a positive epoch count and
        step count (a result built elsewhere)."""
        epochs = (self.config or {}).get("epochs")
        steps = np.asarray(self.steps, dtype=np.float64)
        if (isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and epochs > 0 and steps.size
                and steps[-1] > 0):
            return steps / (float(steps[-1]) / float(epochs))
        return None


SCHEDULES: tuple[str, ...] = ("constant", "cosine")
"""``schedule`` values of :func:`train`."""

SELECTIONS: tuple[str, ...] = ("last", "lowest_train_loss")
"""``select`` values of :func:`train`."""


def _state_copy(model: nn.Module) -> dict:
    """A deep copy of ``model.state_dict()`` (parameters and buffers), detached from the live module."""
    return {k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
            for k, v in model.state_dict().items()}


SCALAR_STATE_KEYS: tuple[str, ...] = ("step",)
"""Optimizer state entries that are one number per parameter tensor (broadcast over its entries when flat)."""

_STATE_KEYS = {"sgd": ("momentum_buffer",), "adam": ("step", "exp_avg", "exp_avg_sq")}


def _space_params(model: nn.Module, space: ParamSpace) -> list[Tensor]:
    named = dict(model.named_parameters())
    return [named[n] for n in space.names]


def flat_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module,
                         space: Optional[ParamSpace] = None) -> dict[str, np.ndarray]:
    """The per-parameter state of ``optimizer`` (SGD momentum buffers, Adam moments and step counts) as flat
    float64 vectors in ``space``'s order (default: all of ``model``'s trainable parameters).

    Returns
    -------
    dict of str to ndarray of shape (n,)
        One vector per state entry; a scalar entry (``step``) is repeated over its parameter's entries.
        Parameters without state (no step taken yet) hold NaN. Empty when no parameter has state.
    """
    space = space or ParamSpace.from_module(model)
    params = _space_params(model, space)
    keys: list[str] = []
    for p in params:
        for k, v in optimizer.state.get(p, {}).items():
            if isinstance(v, Tensor) and k not in keys:
                keys.append(k)
    out = {k: np.full(space.size, np.nan) for k in keys}
    offs = space.offsets
    for i, p in enumerate(params):
        for k, v in optimizer.state.get(p, {}).items():
            if isinstance(v, Tensor):
                out[k][offs[i]:offs[i + 1]] = v.detach().to(torch.float64).reshape(-1).cpu().numpy()
    return out


def _load_flat_optimizer_state(optimizer: torch.optim.Optimizer, kind: str, model: nn.Module, space: ParamSpace,
                               state: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`flat_optimizer_state` for a fresh ``optimizer`` of ``kind``; ValueError on a state from
    another optimizer or another parameter layout."""
    if not isinstance(state, dict):
        raise TypeError(f"optimizer_state must be a dict of flat arrays (flat_optimizer_state), got "
                        f"{type(state).__name__}")
    allowed = _STATE_KEYS[kind]
    unknown = sorted(set(state) - set(allowed))
    if unknown:
        raise ValueError(f"optimizer_state has entries {unknown}, which optimizer={kind!r} does not keep "
                         f"(its entries: {list(allowed)}): a state from another optimizer?")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    for k, v in arrays.items():
        if v.shape != (space.size,):
            raise ValueError(f"optimizer_state[{k!r}] has shape {v.shape}, the model has {space.size} parameters")
    offs = space.offsets
    for i, p in enumerate(_space_params(model, space)):
        entry: dict[str, Tensor] = {}
        for k, v in arrays.items():
            seg = v[offs[i]:offs[i + 1]]
            if np.isnan(seg).all():
                continue  # no state for this parameter
            if np.isnan(seg).any():
                raise ValueError(f"optimizer_state[{k!r}] is partly NaN for parameter {space.names[i]!r}")
            if k in SCALAR_STATE_KEYS:
                entry[k] = torch.tensor(float(seg[0]), dtype=torch.float32)
            else:
                entry[k] = torch.from_numpy(seg.copy()).to(p.dtype).reshape(p.shape)
        if entry:
            missing = [k for k in allowed if k not in entry] if kind == "adam" else []
            if missing:
                raise ValueError(f"optimizer_state lacks {missing} for parameter {space.names[i]!r}")
            optimizer.state[p] = entry


def _full_eval(model: nn.Module, loss_fn: LossFunction, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Full-data mean loss and metric in eval mode, through the same Objective the analyses use."""
    return Objective(model, loss_fn, (x, y), dtype=None, batch_size=4096).evaluate(check_finite=False)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_hyper_parameters(*, epochs: object, lr: object, optimizer: object, momentum: object,
                            weight_decay: object, batch_size: object, record_every: object) -> None:
    """ValueError naming the first invalid hyper-parameter of :func:`train`, before any work."""
    if not _is_int(epochs) or epochs < 0:  # type: ignore[operator]
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if not _is_int(batch_size) or batch_size < 1:  # type: ignore[operator]
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not _is_int(record_every) or record_every < 1:  # type: ignore[operator]
        raise ValueError(f"record_every must be an integer >= 1, got {record_every!r}")
    if not _is_real(lr) or not math.isfinite(lr) or lr <= 0:  # type: ignore[arg-type, operator]
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}; pass a learning rate such as lr=0.05")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'sgd' or 'adam'")
    if not _is_real(momentum) or not math.isfinite(momentum) or not 0 <= momentum < 1:  # type: ignore[arg-type, operator]
        raise ValueError(f"momentum must be a finite number in [0, 1), got {momentum!r}; e.g. momentum=0.9, or 0 "
                         "for plain SGD")
    if not _is_real(weight_decay) or not math.isfinite(weight_decay) or weight_decay < 0:  # type: ignore[arg-type, operator]
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}; 0 turns it off")


def _check_targets(model: nn.Module, loss_fn: LossFunction, x: Tensor, y: Tensor,
                   test: Optional[tuple[Tensor, Tensor]]) -> None:
    """Class-index targets (cross-entropy, NLL) against the model's outputs on the first samples, once, before
    the first epoch (:meth:`LossFunction.check_targets`); the model's mode is restored."""
    if loss_fn.classes is None:
        return
    was_training = model.training
    try:
        model.eval()  # no BatchNorm statistics move, no dropout
        with torch.no_grad():
            out = model(x[:min(4, int(x.shape[0]))])
    finally:
        model.train(was_training)
    if isinstance(out, Tensor):
        loss_fn.check_targets(out, [y], "training targets")
        if test is not None:
            loss_fn.check_targets(out, [test[1]], "test targets")


def train(model: nn.Module, data: Union[Dataset, tuple[Tensor, Tensor]], *, loss: LossSpec = "cross_entropy",
          epochs: int = TrainConfig.epochs, lr: float = TrainConfig.lr,
          optimizer: Literal["sgd", "adam"] = TrainConfig.optimizer,  # type: ignore[assignment]
          momentum: float = TrainConfig.momentum, weight_decay: float = TrainConfig.weight_decay,
          batch_size: int = TrainConfig.batch_size,
          record_every: int = 1, test: Optional[tuple[Tensor, Tensor]] = None, seed: int = 0,
          progress: bool = True, schedule: Literal["constant", "cosine"] = "constant",
          t_max: Optional[int] = None,
          select: Literal["last", "lowest_train_loss"] = "last",
          record_steps: int = 0, optimizer_state: Optional[dict[str, np.ndarray]] = None,
          keep_optimizer_state: Iterable[int] = (),
          attack: Optional[Attack] = None) -> tuple[nn.Module, TrainResult]:
    """Train a copy of ``model`` with mini-batch SGD/Adam and record checkpoints.

    Parameters
    ----------
    model : nn.Module
        Initial model (not modified).
    data : Dataset or (inputs, targets)
        Training data; with a :class:`Dataset`, its test split is evaluated too.
    epochs, lr, optimizer, momentum, weight_decay, batch_size : training hyper-parameters; their defaults
        are the ``[train]`` configuration section's (:class:`~qlandscape.config.TrainConfig`), their one source.
    record_every : int
        Record a checkpoint every this many epochs (and always at 0 and at the end).
    record_steps : int
        0 (default): records follow ``record_every``. ``k >= 1``: record a checkpoint every ``k`` optimizer
        steps instead, also inside epochs (and always at 0 and at the end), for sub-epoch time resolution:
        checkpoints ``k / steps_per_epoch`` epochs apart, ``steps_per_epoch = ceil(n_train / batch_size)``
        (Fort et al. 2020 use 0.4 epochs). Needs ``record_every == 1``.
    optimizer_state : dict of str to ndarray (n,), optional
        Start from this optimizer state (:func:`flat_optimizer_state` / :meth:`TrainResult.optimizer_state_at`
        of a run of the same model and optimizer), e.g. to continue a run with its momentum: only the
        per-parameter state is loaded; the hyper-parameters (lr, momentum, ...) are this call's.
    keep_optimizer_state : iterable of int
        Epochs (1 .. ``epochs``) at whose end the optimizer state is kept in the result
        (``TrainResult.optimizer_state_at``).
    attack : qlandscape.adversarial.Attack, optional
        Adversarial training (Madry et al. 2018): every batch is replaced by its adversarial examples against
        the current weights (:meth:`Attack.perturb`, made in eval mode, with the training loss; one generator
        seeded by ``attack.seed`` for the whole run, so random starts differ per batch and the run is
        reproducible). Recorded losses and accuracies stay the clean ones.
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
    ValueError
        Before any work, for an invalid hyper-parameter (``epochs`` and ``record_every``/``batch_size`` integers
        >= 0 / >= 1, ``lr`` finite > 0, ``momentum`` finite in [0, 1), ``weight_decay`` finite >= 0) or, for
        cross-entropy / NLL, targets that are not class indices of the model's outputs
        (:meth:`~qlandscape.losses.LossFunction.check_targets`).
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
    _check_hyper_parameters(epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum,
                            weight_decay=weight_decay, batch_size=batch_size, record_every=record_every)
    if isinstance(record_steps, bool) or not isinstance(record_steps, int) or record_steps < 0:
        raise ValueError(f"record_steps must be an integer >= 0 (0: records every record_every epochs), got "
                         f"{record_steps!r}")
    if record_steps and record_every != 1:
        raise ValueError(f"record_steps={record_steps} and record_every={record_every}: set one of them (records "
                         "every record_steps optimizer steps, or every record_every epochs)")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {list(SCHEDULES)}")
    if select not in SELECTIONS:
        raise ValueError(f"unknown select {select!r}; use one of {list(SELECTIONS)}")
    if t_max is not None and (isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1):
        raise ValueError(f"t_max must be an integer >= 1 (or None for epochs), got {t_max!r}")
    keep_list = list(keep_optimizer_state)
    if any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) or not 1 <= e <= epochs for e in keep_list):
        raise ValueError(f"keep_optimizer_state must name integer epochs in [1, epochs={epochs}], got {keep_list!r}")
    keep = sorted({int(e) for e in keep_list})
    start = time.perf_counter()
    model = copy_module(model)  # shares simulator devices (native state cannot be deep-copied)
    model.train()
    first = next(iter(model.parameters()))
    dtype, where = first.dtype, first.device  # training runs in the model's own dtype, on its device
    x = (x.to(where, dtype) if x.is_floating_point() else x.to(where))
    y = y.to(where)
    if test is not None:
        test = (test[0].to(where, dtype) if test[0].is_floating_point() else test[0].to(where), test[1].to(where))
    loss_fn = make_loss(loss)
    _check_targets(model, loss_fn, x, y, test)
    space = ParamSpace.from_module(model)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                                     weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if optimizer_state is not None:
        _load_flat_optimizer_state(opt, optimizer, model, space, optimizer_state)
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None
    if schedule == "cosine" and epochs > 0:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max or epochs, eta_min=0.0)
    gen = torch.Generator().manual_seed(seed)
    records: dict[str, list] = {k: [] for k in ("traj", "steps", "trl", "trm", "tel", "tem", "lr")}
    config = dict(loss=loss_fn.name, epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum,
                  weight_decay=weight_decay, batch_size=batch_size, record_every=record_every, seed=seed,
                  schedule=schedule, t_max=t_max, select=select, record_steps=record_steps,
                  attack=None if attack is None else attack.as_dict())
    attack_gen = None if attack is None else attack.generator()
    best: dict = {"index": -1, "loss": math.inf, "state": None}  # lowest-train-loss checkpoint so far
    kept: list[dict[str, np.ndarray]] = []

    def record(step: int, epoch_lr: float) -> None:
        records["traj"].append(space.from_module_values(model).detach().to("cpu", torch.float64).numpy())
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
        keys = list(_STATE_KEYS[optimizer]) if kept else []
        states = np.stack([np.stack([k.get(key, np.full(space.size, np.nan)) for key in keys]) for k in kept]) \
            if kept else np.zeros((0, 0, 0))
        return TrainResult(trajectory=np.array(records["traj"]), steps=np.array(records["steps"], dtype=np.int64),
                           optimizer_state_epochs=np.array(keep[:len(kept)], dtype=np.int64),
                           optimizer_state_keys=keys, optimizer_states=states,
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
            xb, yb = x[idx], y[idx]
            if attack is not None:
                xb = attack.perturb(model, xb, yb, loss_fn, generator=attack_gen)  # restores train mode
            opt.zero_grad(set_to_none=True)
            lv = loss_fn.batch_loss(model(xb), yb)  # torch's own reduction (weighted means too)
            if not bool(torch.isfinite(lv)):
                err = NonFiniteLossError(f"training loss became {float(lv.detach())} at epoch {epoch}, step {step}; "
                                         "lower the learning rate (lr) or check the data")
                err.partial = result()  # type: ignore[attr-defined]
                raise err
            lv.backward()
            opt.step()
            step += 1
            if record_steps and step % record_steps == 0:
                record(step, epoch_lr)
                bar.set_postfix(loss=f"{records['trl'][-1]:.4f}")
        if scheduler is not None:
            scheduler.step()  # once per epoch, never reset: the cosine rate cycles with period 2 * T_max
        if epoch in keep:
            kept.append(flat_optimizer_state(opt, model, space))
        if (epoch == epochs and records["steps"][-1] != step) or (not record_steps and epoch % record_every == 0):
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
