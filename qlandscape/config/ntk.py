"""``[ntk]`` and ``[spawn]``: the ``ntk`` and ``spawn`` jobs (Fort et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import check_bool, check_choice, check_int, check_int_list, check_number, fail, normalize

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
        normalize(self)
        s = "ntk"
        check_int(s, "n_inputs", self.n_inputs, 2)
        check_choice(s, "kind", self.kind, NTK_KINDS)
        check_choice(s, "implementation", self.implementation, NTK_IMPLEMENTATIONS)
        check_choice(s, "dtype", self.dtype, ("float64", "float32"))
        m = self.methods
        if not (isinstance(m, tuple) and m and all(isinstance(v, str) and v in NTK_METHODS for v in m)
                and len(set(m)) == len(m)):
            fail(s, "methods", m, f"a non-empty list of distinct methods from {list(NTK_METHODS)}, "
                  'e.g. ["regression"]')
        check_int(s, "n_train", self.n_train, 2)
        check_int(s, "n_test", self.n_test, 1)
        check_int(s, "linearized_epochs", self.linearized_epochs, 1)
        check_number(s, "linearized_lr", self.linearized_lr, positive=True)
        check_int(s, "checkpoints_every", self.checkpoints_every, 1)


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
        normalize(self)
        s = "spawn"
        check_int_list(s, "times", self.times, 0, distinct=True, example="[0, 1, 2, 4, 8]")
        check_int(s, "n_children", self.n_children, 2, high=999)
        check_int(s, "n_points", self.n_points, 3)
        check_bool(s, "copy_optimizer", self.copy_optimizer)
