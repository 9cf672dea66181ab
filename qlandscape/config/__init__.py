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
a boolean key needs ``true``/``false`` the

The package is split by job: :mod:`.common` holds the sections every job reads (``[data]``, ``[model]``,
``[patch]``, ``[train]``, ``[objective]``), :mod:`.hessian`, :mod:`.scan`, :mod:`.ntk` (``[ntk]``,
``[spawn]``), :mod:`.adversarial` and :mod:`.merge` one job's section each, :mod:`.run` the whole
:class:`RunConfig`, :mod:`.load` the TOML and ``--set`` parsing, and :mod:`.checks` the value checks
(public, so other specifications, such as a sweep's, report errors the same way).
"""

from __future__ import annotations

from .adversarial import ATTACK_KINDS, ATTACK_NORMS, AdversarialConfig
from .common import (
    DATASETS,
    DOWNSAMPLE_SIZES,
    MNIST_PREPROCESSING,
    MNIST_SOURCES,
    MODEL_ACTIVATIONS,
    MODEL_KINDS,
    OBJECTIVE_LOSSES,
    OPTIMIZERS,
    PATCH_AGGREGATIONS,
    PATCH_ANSATZE,
    PATCH_DEVICES,
    PATCH_DIFF_METHODS,
    PATCH_ENCODINGS,
    PATCH_KINDS,
    PATCH_PRESETS,
    PATCH_SIMULATORS,
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    PatchConfig,
    TrainConfig,
)
from .hessian import EIG_METHODS, HESSIAN_WHICH, TRACE_METHODS, HessianConfig
from .load import apply_overrides, config_from_dict, load_config, parse_override_value
from .merge import MERGE_ALIGNMENTS, MergeConfig
from .ntk import NTK_IMPLEMENTATIONS, NTK_KINDS, NTK_METHODS, NTKConfig, SpawnConfig
from .run import RunConfig
from .scan import DEFAULT_SPAN, RANDOM_DIRECTIONS, SCAN_DIRECTIONS, SCAN_ONE_D, SPAN_MODES, ScanConfig

__all__ = [
    "DATASETS",
    "DOWNSAMPLE_SIZES",
    "DataConfig",
    "MNIST_PREPROCESSING",
    "MNIST_SOURCES",
    "MODEL_ACTIVATIONS",
    "MODEL_KINDS",
    "ModelConfig",
    "OBJECTIVE_LOSSES",
    "OPTIMIZERS",
    "ObjectiveConfig",
    "PATCH_AGGREGATIONS",
    "PATCH_ANSATZE",
    "PATCH_DEVICES",
    "PATCH_DIFF_METHODS",
    "PATCH_ENCODINGS",
    "PATCH_KINDS",
    "PATCH_PRESETS",
    "PATCH_SIMULATORS",
    "PatchConfig",
    "TrainConfig",
    "EIG_METHODS",
    "HESSIAN_WHICH",
    "HessianConfig",
    "TRACE_METHODS",
    "DEFAULT_SPAN",
    "RANDOM_DIRECTIONS",
    "SCAN_DIRECTIONS",
    "SCAN_ONE_D",
    "SPAN_MODES",
    "ScanConfig",
    "NTKConfig",
    "NTK_IMPLEMENTATIONS",
    "NTK_KINDS",
    "NTK_METHODS",
    "SpawnConfig",
    "ATTACK_KINDS",
    "ATTACK_NORMS",
    "AdversarialConfig",
    "MERGE_ALIGNMENTS",
    "MergeConfig",
    "RunConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_override_value",
]
