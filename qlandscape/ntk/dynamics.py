"""Kernel dynamics along a recorded training trajectory (Fort et al. 2020), for any torch model.

* :func:`checkpoint_model`: the network at one record of :attr:`TrainResult.trajectory`.
* :func:`ntk_dynamics`: the empirical NTK at each checkpoint, compared with the initial, previous and final
  kernels (kernel distance, kernel velocity), plus parameter- and function-space distances.
* :func:`kernel_learning_curve`: "kernel learning at time t": kernel ridge regression with the kernel frozen
  at checkpoint ``t``, and training of the linearized model around ``t``, against the fully trained network.

Nothing here is specific to a model family: a quantum model enters like any other ``nn.Module`` (the NTK
picks its route from the model's declared capabilities; :class:`LinearizedModel` needs ``torch.func``).

Conventions
-----------
* **Checkpoints** are indices into the rows of ``train_result.trajectory`` (default: all), strictly
  increasing after negative indices are resolved. "Initial" and "final" always mean the **first and last
  chosen** checkpoints (with the default, the initialization and the end of training).
* **Time** is in epochs: ``steps[t] / steps_per_epoch`` with ``steps_per_epoch = steps[-1] / epochs`` (every
  epoch of :func:`qlandscape.train.train` takes the same number of optimizer steps, so this is exact), using
  the full trajectory's last step count and ``train_result.config["epochs"]``. Without a usable epoch count
  (a result from elsewhere) the time is in optimizer steps; ``info["time_unit"]`` says which.
* **Buffers** (BatchNorm running statistics) are not part of the trajectory: every checkpoint network holds
  the buffers of the ``model`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..adapter import CapabilityError, ModelAdapter, copy_module
from ..data import Dataset
from ..objective import resolve_dtype
from ..params import ParamSpace
from ..progress import progress_bar
from ..results import Result
from ..train import TrainResult, train
from .distance import KernelDistanceTracker
from .kernel import KINDS, Implementation, Kind, empirical_ntk
from .linearized import LinearizedModel, kernel_regression

__all__ = ["checkpoint_model", "ntk_dynamics", "NTKDynamicsResult", "kernel_learning_curve",
           "KernelLearningResult"]

SplitData = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]
METHODS: tuple[str, ...] = ("regression", "linearized")
EVAL_BATCH = 1024
"""Inputs per forward pass when evaluating outputs."""


# ---------------------------------------------------------------------------------------------- helpers
def refuse_running_statistics(model: nn.Module, what: str) -> None:
    """Raise when ``model`` keeps normalization running statistics (BatchNorm with ``track_running_stats``).

    A recorded trajectory holds parameters only, so a model rebuilt at checkpoint ``t`` would carry the running
    statistics of ``model`` (typically the trained one) instead of those at ``t``: its outputs, kernels and
    barriers would be plausible numbers of a network that never existed.

    Raises
    ------
    ValueError
        Naming the modules and the way out.
    """
    names = [n or type(m).__name__ for n, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
    if names:
        raise ValueError(f"{what} rebuilds checkpoints from a training trajectory, which records parameters only; "
                         f"{type(model).__name__} has normalization running statistics ({', '.join(names[:4])}) that "
                         "change during training and are not recorded, so every checkpoint would use the given "
                         "model's statistics; use a model without them (model.batchnorm=false, or "
                         "track_running_stats=False)")


def checkpoint_model(model: nn.Module, trajectory_row: Union[np.ndarray, Tensor]) -> nn.Module:
    """A copy of ``model`` holding one row of a training trajectory.

    Parameters
    ----------
    model : nn.Module
        The architecture (e.g. the initial or the trained model); it is not modified. The copy is made with
        :func:`qlandscape.adapter.copy_module` (declared simulator devices are shared, not copied).
    trajectory_row : ndarray or Tensor, shape (P,)
        Flat values of all parameters with ``requires_grad``, in :class:`~qlandscape.params.ParamSpace`
        order (a row of :attr:`TrainResult.trajectory`).

    Returns
    -------
    nn.Module
        The copy, in eval mode, its parameters set to ``trajectory_row`` cast to each parameter's own dtype
        and device; buffers and parameters without ``requires_grad`` are those of ``model``.

    Raises
    ------
    ValueError
        If ``trajectory_row`` is not 1-D of length ``P`` (the message names both sizes and the parameters), or
        the model keeps BatchNorm running statistics (:func:`refuse_running_statistics`).
    """
    refuse_running_statistics(model, "checkpoint_model")
    space = ParamSpace.from_module(model)
    row = torch.as_tensor(np.asarray(trajectory_row) if not isinstance(trajectory_row, Tensor) else trajectory_row)
    if row.dim() != 1 or row.shape[0] != space.size:
        raise ValueError(f"trajectory row has shape {tuple(row.shape)}, but {type(model).__name__} has "
                         f"{space.size} trainable parameter entries ({_describe_space(space)})")
    if not bool(torch.isfinite(row).all()):
        raise ValueError("trajectory row has non-finite entries")
    copy = copy_module(model)
    params = dict(copy.named_parameters())
    with torch.no_grad():
        for name, sl, shape in space.slices():
            p = params[name]
            p.copy_(row[sl].reshape(shape).to(device=p.device, dtype=p.dtype))
    copy.eval()
    return copy


def _describe_space(space: ParamSpace, limit: int = 8) -> str:
    parts = [f"{n}: {k}" for n, k in zip(space.names, space.numels)]
    more = f", ... {len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def _check_trajectory(model: nn.Module, train_result: TrainResult) -> np.ndarray:
    """The trajectory as a float64 (T, P) array, checked against the model's parameter layout."""
    if not isinstance(train_result, TrainResult):
        raise TypeError(f"train_result must be a TrainResult, got {type(train_result).__name__}")
    traj = np.asarray(train_result.trajectory, dtype=np.float64)
    if traj.ndim != 2:
        raise ValueError(f"train_result.trajectory must be (T, P), got shape {tuple(traj.shape)}")
    space = ParamSpace.from_module(model)
    if traj.shape[1] != space.size:
        raise ValueError(f"train_result.trajectory has width {traj.shape[1]}, but {type(model).__name__} has "
                         f"{space.size} trainable parameter entries ({_describe_space(space)}): the trajectory "
                         "was recorded for another model")
    names = list(train_result.param_names or [])
    if names and names != list(space.names):
        raise ValueError(f"train_result.param_names {names} differ from the model's parameters {list(space.names)}")
    steps = np.asarray(train_result.steps)
    if steps.shape != (traj.shape[0],):
        raise ValueError(f"train_result.steps has shape {tuple(steps.shape)}, the trajectory has {traj.shape[0]} rows")
    return traj


def _resolve_checkpoints(checkpoints: Optional[Sequence[int]], T: int, minimum: int) -> list[int]:
    """Indices into the trajectory, negatives resolved; strictly increasing; at least ``minimum``."""
    if checkpoints is None:
        idx = list(range(T))
    else:
        idx = []
        for c in checkpoints:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise TypeError(f"checkpoints must be integer indices, got {c!r}")
            c = int(c)
            if not -T <= c < T:
                raise ValueError(f"checkpoint index {c} is out of range for a trajectory of {T} records")
            idx.append(c % T)
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise ValueError(f"checkpoints must be strictly increasing (after resolving negatives), got {idx}")
    if len(idx) < minimum:
        raise ValueError(f"needs at least {minimum} checkpoint{'s' if minimum > 1 else ''}, got {len(idx)} "
                         f"(trajectory of {T} records, checkpoints={checkpoints!r}); record more often "
                         "(record_every, or record_steps for checkpoints inside epochs) or train for more epochs")
    return idx


def _times(train_result: TrainResult) -> tuple[np.ndarray, str, float]:
    """Time of every record (all of them), its unit, and steps per epoch (NaN when the unit is steps)."""
    steps = np.asarray(train_result.steps, dtype=np.float64)
    times = train_result.epochs_at_records()
    if times is not None:
        return times, "epochs", float(steps[-1]) / float(train_result.config["epochs"])
    return steps, "steps", math.nan


def _outputs(model: nn.Module, x: Tensor, dtype: Optional[torch.dtype]) -> Tensor:
    """Eval-mode outputs of ``model`` on ``x`` in ``dtype`` (None: the model's), batched, no grad."""
    adapter = ModelAdapter(model, None, dtype)
    outs = []
    with torch.no_grad(), adapter.mode(False):
        for s in range(0, int(x.shape[0]), EVAL_BATCH):
            outs.append(adapter.apply(adapter.theta0, adapter.cast(x[s:s + EVAL_BATCH])).detach())
    out = torch.cat(outs)
    if out.dim() != 2:
        raise ValueError(f"model outputs must have shape (N, C), got {tuple(out.shape)}")
    return out


def _accuracy(out: Tensor, y: Tensor) -> float:
    return float((out.argmax(dim=1).cpu() == y.cpu()).double().mean()) if y.numel() else math.nan


def _labels(y: Tensor, n: int, name: str) -> Tensor:
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != n:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name} must be a tensor of integer labels of shape ({n},), got {shape}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    return y


def _check_inputs(inputs: Tensor, name: str = "inputs") -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, ...), got {type(inputs).__name__}")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got shape {tuple(inputs.shape)}")


# ---------------------------------------------------------------------------------------------- ntk_dynamics
@dataclass
class NTKDynamicsResult(Result):
    """The empirical NTK along training: kernel, parameter and function distances per checkpoint.

    All arrays have shape (T,) for the T chosen checkpoints, in training order.

    Attributes
    ----------
    times_epochs : ndarray
        Training time of each checkpoint in epochs (in optimizer steps when the result carries no epoch count;
        see ``info["time_unit"]``).
    steps : ndarray of int
        Optimizer steps at each checkpoint.
    kernel_to_initial, kernel_to_final : ndarray
        Kernel distance ``S(K_first, K_t)`` / ``S(K_t, K_last)`` (first/last *chosen* checkpoint); 0 at the
        first / last entry; in [0, 1].
    kernel_to_previous : ndarray
        ``S(K_{t-1}, K_t)`` between consecutive chosen checkpoints (NaN at the first).
    velocity : ndarray
        Kernel velocity ``kernel_to_previous / (time_t - time_{t-1})``, per epoch (NaN at the first).
    param_to_initial, param_to_final : ndarray
        L2 distance ``||theta_t - theta_first||`` / ``||theta_t - theta_last||`` of the flat parameter vectors
        (float64, the trajectory's values).
    function_to_final : ndarray
        RMS over all ``N * C`` entries of the output (logit) difference to the last checkpoint's network on
        ``inputs``, ``sqrt(mean((f_t(x) - f_last(x))^2))``, eval mode, in ``dtype``.
    disagreement_to_final : ndarray
        Fraction of ``inputs`` whose argmax prediction differs from the last checkpoint's (NaN without
        ``targets``).
    accuracy : ndarray
        Accuracy of the argmax prediction on ``(inputs, targets)`` (NaN without ``targets``).
    kernel_norms : ndarray
        Frobenius norm of each kernel (float64).
    kernels : ndarray, shape (T, n, n)
        The kernels (float64), only with ``keep_kernels=True``; else shape (0,).
    kind : str
        "trace" (kernels (N, N)) or "full" ((N*C, N*C), sample-major).
    implementation : str
        The NTK route requested.
    n_inputs : int
        ``N``.
    checkpoints : list of int
        The chosen trajectory indices.
    info : dict
        ``time_unit``, ``steps_per_epoch``, ``n_params``, ``n_outputs``, ``dtype``, ``n_kernel_evaluations``,
        ``has_targets``, ``kept_kernels``.
    """

    times_epochs: np.ndarray
    steps: np.ndarray
    kernel_to_initial: np.ndarray
    kernel_to_final: np.ndarray
    kernel_to_previous: np.ndarray
    velocity: np.ndarray
    param_to_initial: np.ndarray
    param_to_final: np.ndarray
    function_to_final: np.ndarray
    disagreement_to_final: np.ndarray
    kernel_norms: np.ndarray
    accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kernels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kind: str = "trace"
    implementation: str = "auto"
    n_inputs: int = 0
    checkpoints: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


def ntk_dynamics(model: nn.Module, train_result: TrainResult, inputs: Tensor, *, targets: Optional[Tensor] = None,
                 kind: Kind = "trace", implementation: Implementation = "auto",
                 dtype: Union[torch.dtype, str, None] = torch.float64, checkpoints: Optional[Sequence[int]] = None,
                 keep_kernels: bool = False, progress: bool = True) -> NTKDynamicsResult:
    """Empirical NTK at each checkpoint of a training run and its distances to the initial, previous and final
    kernels (Fort et al. 2020), with parameter- and function-space distances for comparison.

    Parameters
    ----------
    model : nn.Module
        The architecture the trajectory was recorded for (initial or trained model; only its structure and
        buffers are used, see :func:`checkpoint_model`). Not modified.
    train_result : TrainResult
        From :func:`qlandscape.train.train`: ``trajectory`` (T_all, P), ``steps``, ``config["epochs"]``.
    inputs : Tensor, shape (N, ...)
        Points the kernels and outputs are evaluated on (e.g. a subset of the training inputs).
    targets : Tensor of int, shape (N,), optional
        Class labels of ``inputs``: enables ``disagreement_to_final`` and ``accuracy``.
    kind : {"trace", "full"}
        Output-traced ``(N, N)`` (default) or full ``(N*C, N*C)`` kernel; see
        :func:`qlandscape.ntk.empirical_ntk`.
    implementation : {"auto", "structured", "jacobian", "autograd"}
        NTK route (see :func:`qlandscape.ntk.empirical_ntk`).
    dtype : torch.dtype, str or None
        Dtype of the kernels and outputs (default float64; None keeps the model's).
    checkpoints : sequence of int, optional
        Trajectory indices (default all); strictly increasing, at least two.
    keep_kernels : bool
        Store every kernel in the result (``kernels``, shape (T, n, n), float64): ``T * n^2 * 8`` bytes in
        memory and in the npz. Default False: O(1) kernels in memory.
    progress : bool
        Progress bar over checkpoints (also disabled by ``QLANDSCAPE_PROGRESS=0``).

    Returns
    -------
    NTKDynamicsResult

    Raises
    ------
    ValueError
        Fewer than two checkpoints ("needs at least two checkpoints"), a trajectory whose width does not
        match the model's parameters, empty inputs, targets of the wrong shape, bad ``kind``/indices.

    Notes
    -----
    **One pass, no recomputation.** Distance to the *final* kernel needs that kernel, which a streaming pass
    over training only has at its end. Here the trajectory is already recorded, so the final checkpoint's
    kernel (and outputs) are computed **first** and used as the reference of a
    :class:`~qlandscape.ntk.KernelDistanceTracker`; the chosen checkpoints are then streamed in order and
    every distance is obtained in the same pass. The final kernel is reused when the stream reaches it, so
    exactly ``T`` kernels are computed (no second pass), and memory holds four normalized kernels (first,
    previous, reference, current) whatever ``T``, unless ``keep_kernels``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")
    _check_inputs(inputs)
    traj = _check_trajectory(model, train_result)
    idx = _resolve_checkpoints(checkpoints, traj.shape[0], minimum=2)
    N = int(inputs.shape[0])
    if targets is not None:
        targets = _labels(targets, N, "targets")
    all_times, unit, spe = _times(train_result)
    steps_all = np.asarray(train_result.steps, dtype=np.int64)
    times = all_times[idx]
    if np.any(np.diff(times) <= 0):
        raise ValueError(f"checkpoint times must increase strictly, got steps {steps_all[idx].tolist()}")
    torch_dtype = resolve_dtype(dtype)

    def kernel_and_outputs(t: int) -> tuple[Tensor, Tensor]:
        net = checkpoint_model(model, traj[t])
        K = empirical_ntk(net, inputs, kind=kind, implementation=implementation, dtype=torch_dtype,
                          progress=False)
        return K, _outputs(net, inputs, torch_dtype)

    first, last = idx[0], idx[-1]
    K_final, out_final = kernel_and_outputs(last)
    pred_final = out_final.argmax(dim=1)
    tracker = KernelDistanceTracker(reference=K_final)
    T = len(idx)
    param_to_initial = np.linalg.norm(traj[idx] - traj[first], axis=1)
    param_to_final = np.linalg.norm(traj[idx] - traj[last], axis=1)
    function_to_final = np.full(T, math.nan)
    disagreement = np.full(T, math.nan)
    accuracy = np.full(T, math.nan)
    kept: list[np.ndarray] = []
    bar = progress_bar(T, "ntk dynamics", progress)
    for i, t in enumerate(idx):
        K, out = (K_final, out_final) if t == last else kernel_and_outputs(t)
        tracker.update(K, times[i])
        if keep_kernels:
            kept.append(K.detach().to("cpu", torch.float64).numpy())
        diff = (out - out_final).to(torch.float64)
        function_to_final[i] = float(torch.sqrt(torch.mean(diff * diff)))
        if targets is not None:
            pred = out.argmax(dim=1)
            disagreement[i] = float((pred != pred_final).double().mean())
            accuracy[i] = _accuracy(out, targets)
        del K, out
        bar.update(1)
    bar.close()
    trace = tracker.result()
    C = int(out_final.shape[1])
    info = dict(time_unit=unit, steps_per_epoch=spe, n_params=int(traj.shape[1]), n_outputs=C,
                dtype=str(torch_dtype) if torch_dtype is not None else "model", n_kernel_evaluations=T,
                has_targets=targets is not None, kept_kernels=bool(keep_kernels), n_records=int(traj.shape[0]),
                model=type(model).__name__)
    return NTKDynamicsResult(times_epochs=times.astype(np.float64), steps=steps_all[idx],
                             kernel_to_initial=trace.to_initial, kernel_to_final=trace.to_reference,
                             kernel_to_previous=trace.to_previous, velocity=trace.velocity,
                             param_to_initial=param_to_initial, param_to_final=param_to_final,
                             function_to_final=function_to_final, disagreement_to_final=disagreement,
                             kernel_norms=np.array(tracker.norms, dtype=np.float64), accuracy=accuracy,
                             kernels=np.stack(kept) if keep_kernels else np.zeros(0), kind=kind,
                             implementation=implementation, n_inputs=N, checkpoints=list(idx), info=info)


# ---------------------------------------------------------------------------------------------- kernel learning
@dataclass
class KernelLearningResult(Result):
    """Test accuracy of "kernel learning at time t" (Fort et al. 2020) per checkpoint.

    Arrays have shape (T,) for the T chosen checkpoints; NaN for a method not run.

    Attributes
    ----------
    times_epochs : ndarray
        Training time of each checkpoint in epochs (see ``info["time_unit"]``).
    steps : ndarray of int
    regression_accuracy : ndarray
        Test accuracy of kernel ridge regression with the NTK frozen at ``t`` (one-hot centered targets).
    regression_jitter, regression_relative_jitter : ndarray
        Ridge used (absolute; relative to ``mean(diag(K_train))``).
    linearized_accuracy : ndarray
        Test accuracy of the linearized model around ``t`` after ``linearized_epochs`` of training (final).
    linearized_best_accuracy : ndarray
        Best test accuracy over the linearized model's records after epochs ``1 .. linearized_epochs``
        (record 0, the network at ``t`` itself, excluded). An optimistic (test-selected) number.
    checkpoint_accuracy : ndarray
        Test accuracy of the network at ``t`` itself.
    network_accuracy : float
        Test accuracy of the fully trained network (the trajectory's last record), recomputed on the test
        points used here.
    checkpoints : list of int
    methods : list of str
    kind : str
    info : dict
        ``n_train``, ``n_test``, ``n_classes``, ``time_unit``, ``train_result_test_metric`` (the training
        run's own last test accuracy, possibly on other test points), linearized training settings.
    """

    times_epochs: np.ndarray
    steps: np.ndarray
    regression_accuracy: np.ndarray
    regression_jitter: np.ndarray
    regression_relative_jitter: np.ndarray
    linearized_accuracy: np.ndarray
    linearized_best_accuracy: np.ndarray
    checkpoint_accuracy: np.ndarray
    network_accuracy: float = math.nan
    checkpoints: list = field(default_factory=list)
    methods: list = field(default_factory=list)
    kind: str = "trace"
    info: dict = field(default_factory=dict)


def _split(data: Union[Dataset, SplitData]) -> SplitData:
    if isinstance(data, Dataset):
        return data.train, data.test
    try:
        (x_tr, y_tr), (x_te, y_te) = data
    except (TypeError, ValueError):
        raise TypeError("data must be a Dataset or ((x_train, y_train), (x_test, y_test))") from None
    return (x_tr, y_tr), (x_te, y_te)


def kernel_learning_curve(model: nn.Module, train_result: TrainResult, data: Union[Dataset, SplitData], *,
                          checkpoints: Optional[Sequence[int]] = None, methods: Sequence[str] = METHODS,
                          kind: Kind = "trace", implementation: Implementation = "auto",
                          dtype: Union[torch.dtype, str, None] = torch.float64,
                          jitter: Union[float, str] = "auto", linearized_epochs: int = 10, lr: float = 0.01,
                          optimizer: Literal["sgd", "adam"] = "sgd", momentum: float = 0.9, batch_size: int = 64, seed: int = 0,
                          n_train: Optional[int] = None, n_test: Optional[int] = None,
                          progress: bool = True) -> KernelLearningResult:
    """Kernel learning with the NTK frozen at each checkpoint ``t``, against the fully trained network.

    Parameters
    ----------
    model : nn.Module
        The architecture the trajectory was recorded for (see :func:`checkpoint_model`); not modified.
    train_result : TrainResult
        The training run (trajectory, steps, ``config["epochs"]``).
    data : Dataset or ((x_train, y_train), (x_test, y_test))
        Classification data; labels are integers in ``[0, C)`` for the model's ``C`` outputs.
    checkpoints : sequence of int, optional
        Trajectory indices (default all), strictly increasing.
    methods : sequence of {"regression", "linearized"}
        "regression": kernel ridge regression (:func:`qlandscape.ntk.kernel_regression`, one-hot centered
        targets) with ``K_t`` on the training points, predicting the test points. The kernel is computed
        once on ``[x_train; x_test]`` (``(N + M)`` points) and its blocks sliced: ``K_train`` (N, N) and
        ``K_test_train`` (M, N) traced, or (N*C, N*C) / (M*C, N*C) full (sample-major). The test-test block
        is computed and discarded. "linearized": :class:`LinearizedModel` around ``t`` trained with
        :func:`qlandscape.train.train` (cross-entropy) on the same training points.
    kind : {"trace", "full"}
        Kernel for the regression.
    implementation, dtype
        NTK route and dtype (see :func:`qlandscape.ntk.empirical_ntk`); outputs are evaluated in ``dtype``.
    jitter : float or "auto"
        Ridge of the regression (see :func:`qlandscape.ntk.kernel_regression`).
    linearized_epochs, lr, optimizer, momentum, batch_size, seed
        Training of the linearized model (in the model's dtype).
    n_train, n_test : int, optional
        Use only the first ``n_train`` training / ``n_test`` test points (both methods, and the accuracies
        reported). Default: all.
    progress : bool

    Returns
    -------
    KernelLearningResult

    Raises
    ------
    ValueError
        Unknown method, empty data, mismatched sizes, labels out of range, trajectory/model mismatch.
    CapabilityError
        ``"linearized"`` on a model without ``torch.func`` support (message names the method; run with
        ``methods=("regression",)``).
    """
    methods = list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {methods}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")
    (x_tr, y_tr), (x_te, y_te) = _split(data)
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive int or None, got {v!r}")
    x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    x_te, y_te = x_te[:n_test], y_te[:n_test]
    _check_inputs(x_tr, "training inputs")
    _check_inputs(x_te, "test inputs")
    y_tr = _labels(y_tr, int(x_tr.shape[0]), "training labels")
    y_te = _labels(y_te, int(x_te.shape[0]), "test labels")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"training and test inputs differ in shape: {tuple(x_tr.shape)} vs {tuple(x_te.shape)}")
    traj = _check_trajectory(model, train_result)
    idx = _resolve_checkpoints(checkpoints, traj.shape[0], minimum=1)
    all_times, unit, _ = _times(train_result)
    steps_all = np.asarray(train_result.steps, dtype=np.int64)
    torch_dtype = resolve_dtype(dtype)
    N, M = int(x_tr.shape[0]), int(x_te.shape[0])

    final_net = checkpoint_model(model, traj[-1])
    C = int(_outputs(final_net, x_te[:1], torch_dtype).shape[1])
    for name, lab in (("training labels", y_tr), ("test labels", y_te)):
        if int(lab.min()) < 0 or int(lab.max()) >= C:
            raise ValueError(f"{name} lie in [{int(lab.min())}, {int(lab.max())}], outside [0, {C}) for the "
                             f"model's {C} outputs")
    network_accuracy = _accuracy(_outputs(final_net, x_te, torch_dtype), y_te)
    del final_net
    x_all = torch.cat([x_tr, x_te.to(x_tr.dtype) if x_te.is_floating_point() else x_te])
    per = C if kind == "full" else 1

    T = len(idx)
    reg_acc, reg_jit, reg_rel = np.full(T, math.nan), np.full(T, math.nan), np.full(T, math.nan)
    lin_acc, lin_best, ckpt_acc = np.full(T, math.nan), np.full(T, math.nan), np.full(T, math.nan)
    bar = progress_bar(T, "kernel learning", progress)
    for i, t in enumerate(idx):
        net = checkpoint_model(model, traj[t])
        ckpt_acc[i] = _accuracy(_outputs(net, x_te, torch_dtype), y_te)
        if "regression" in methods:
            K = empirical_ntk(net, x_all, kind=kind, implementation=implementation, dtype=torch_dtype,
                              progress=False)
            res = kernel_regression(K[:N * per, :N * per], y_tr, K[N * per:, :N * per], y_test=y_te,
                                    n_classes=C, jitter=jitter)  # type: ignore[arg-type]
            reg_acc[i], reg_jit[i], reg_rel[i] = res.accuracy, res.jitter, res.relative_jitter
            del K
        if "linearized" in methods:
            try:
                lin = LinearizedModel(net, example_input=x_tr[:1])
            except CapabilityError as exc:
                raise CapabilityError(f"kernel_learning_curve method 'linearized': {exc}; run with "
                                      "methods=('regression',) for this model") from exc
            _, tr = train(lin, (x_tr, y_tr), loss="cross_entropy", epochs=linearized_epochs, lr=lr,
                          optimizer=optimizer, momentum=momentum, batch_size=batch_size, record_every=1,
                          test=(x_te, y_te), seed=seed, progress=False)
            lin_acc[i] = float(tr.test_metric[-1])
            lin_best[i] = float(np.max(tr.test_metric[1:])) if len(tr.test_metric) > 1 else float(tr.test_metric[-1])
        bar.update(1)
    bar.close()
    tm = np.asarray(train_result.test_metric, dtype=np.float64)
    info = dict(n_train=N, n_test=M, n_classes=C, time_unit=unit, n_records=int(traj.shape[0]),
                train_result_test_metric=float(tm[-1]) if tm.size else math.nan, jitter_requested=jitter,
                implementation=implementation, dtype=str(torch_dtype) if torch_dtype is not None else "model",
                linearized=dict(epochs=linearized_epochs, lr=lr, optimizer=optimizer, momentum=momentum,
                                batch_size=batch_size, seed=seed, loss="cross_entropy",
                                reported="final (linearized_accuracy) and best over epochs >= 1"),
                model=type(model).__name__)
    return KernelLearningResult(times_epochs=all_times[idx].astype(np.float64), steps=steps_all[idx],
                                regression_accuracy=reg_acc, regression_jitter=reg_jit,
                                regression_relative_jitter=reg_rel, linearized_accuracy=lin_acc,
                                linearized_best_accuracy=lin_best, checkpoint_accuracy=ckpt_acc,
                                network_accuracy=network_accuracy, checkpoints=list(idx), methods=methods,
                                kind=kind, info=info)
