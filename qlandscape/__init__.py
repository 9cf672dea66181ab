"""qlandscape: loss-landscape geometry of classical and quantum neural networks, one engine.

The engine sees an :class:`Objective` (model + loss + data + reduction + mode + dtype +
parameter selection) and never asks whether the model is quantum.

Importing the package is cheap: each public name is imported from its module on first use (PEP 562),
so the command line parses its arguments, prints ``--help`` and reports argument errors without
loading torch or PennyLane.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from .adapter import (
        Capabilities,
        CapabilityError,
        ModelAdapter,
        ModuleInfo,
        copy_module,
        model_capabilities,
        register_inspector,
    )
    from .adversarial import (
        Attack,
        RobustEvaluation,
        SharpnessResult,
        epsilon_sharpness,
        robust_accuracy,
        robust_evaluate,
        valid_range,
    )
    from .claims import Check, Consistency, Rule
    from .curvature import (
        DensityResult,
        EigResult,
        HessianOperator,
        MatrixOperator,
        SymmetricOperator,
        TraceResult,
        dense_eigs,
        dense_hessian,
        hessian_eigs,
        hessian_trace,
        lanczos,
        spectral_density,
    )
    from .data import Dataset, load_digits, load_mnist, read_idx
    from .landscape import (
        InterpolationResult,
        LandscapeScan,
        PCAResult,
        eigenvector_directions,
        interpolate,
        normalize_direction,
        orthogonalize,
        pca_directions,
        random_direction,
        scan_1d,
        scan_2d,
        symmetric_grid,
        trajectory_spans,
    )
    from .losses import LossFunction, make_loss
    from .merging import (
        AlignmentResult,
        MergeResult,
        PermutationSpec,
        align_weights,
        apply_permutations,
        average_weights,
        interpolation_barriers,
        permutation_spec,
        random_permutations,
        weight_similarity,
    )
    from .models import MLP, PatchMLP, SmallCNN
    from .ntk import (
        KernelDistanceTrace,
        KernelDistanceTracker,
        KernelLearningResult,
        KernelRegressionResult,
        LinearizedModel,
        NTKDynamicsResult,
        SpawnPlan,
        SpawnResult,
        checkpoint_model,
        distances_to,
        empirical_ntk,
        kernel_distance,
        kernel_distance_matrix,
        kernel_learning_curve,
        kernel_regression,
        ntk_dynamics,
        run_spawn,
    )
    from .objective import Counters, MemoryBudgetError, NonFiniteLossError, Objective
    from .params import ParamSelector, ParamSpace, select_parameter_names
    from .patches import PatchGrid
    from .quantum import CircuitSpec, CompiledCircuit, PatchQNN, QuantumFunction
    from .results import Result
    from .second_order import (
        FiniteDifferenceOfGradients,
        ForwardOverReverse,
        ReverseOverReverse,
        SecondOrderProvider,
        choose_provider,
        make_provider,
    )
    from .stats import Estimate, bootstrap
    from .sweep import (
        GridSpec,
        MeasureSpec,
        RunPlan,
        SweepMeta,
        SweepSpec,
        collect,
        load_spec,
        run_sweep,
        sweep_report,
        sweep_status,
        sweep_table,
    )
    from .train import TrainResult, train
    from .trainability import GradientVarianceResult, gradient_variance, init_seeds

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(['Capabilities', 'CapabilityError', 'ModelAdapter', 'ModuleInfo', 'copy_module', 'model_capabilities', 'register_inspector'], '.adapter'),
    **dict.fromkeys(['Attack', 'RobustEvaluation', 'SharpnessResult', 'epsilon_sharpness', 'robust_accuracy', 'robust_evaluate', 'valid_range'], '.adversarial'),
    **dict.fromkeys(['DensityResult', 'EigResult', 'HessianOperator', 'MatrixOperator', 'SymmetricOperator', 'TraceResult', 'dense_eigs', 'dense_hessian', 'hessian_eigs', 'hessian_trace', 'lanczos', 'spectral_density'], '.curvature'),
    **dict.fromkeys(['Dataset', 'load_digits', 'load_mnist', 'read_idx'], '.data'),
    **dict.fromkeys(['InterpolationResult', 'LandscapeScan', 'PCAResult', 'eigenvector_directions', 'interpolate', 'normalize_direction', 'orthogonalize', 'pca_directions', 'random_direction', 'scan_1d', 'scan_2d', 'symmetric_grid', 'trajectory_spans'], '.landscape'),
    **dict.fromkeys(['LossFunction', 'make_loss'], '.losses'),
    **dict.fromkeys(['AlignmentResult', 'MergeResult', 'PermutationSpec', 'align_weights', 'apply_permutations', 'average_weights', 'interpolation_barriers', 'permutation_spec', 'random_permutations', 'weight_similarity'], '.merging'),
    **dict.fromkeys(['MLP', 'PatchMLP', 'SmallCNN'], '.models'),
    **dict.fromkeys(['KernelDistanceTrace', 'KernelDistanceTracker', 'KernelLearningResult', 'KernelRegressionResult', 'LinearizedModel', 'NTKDynamicsResult', 'SpawnPlan', 'SpawnResult', 'checkpoint_model', 'distances_to', 'empirical_ntk', 'kernel_distance', 'kernel_distance_matrix', 'kernel_learning_curve', 'kernel_regression', 'ntk_dynamics', 'run_spawn'], '.ntk'),
    **dict.fromkeys(['Counters', 'MemoryBudgetError', 'NonFiniteLossError', 'Objective'], '.objective'),
    **dict.fromkeys(['ParamSelector', 'ParamSpace', 'select_parameter_names'], '.params'),
    **dict.fromkeys(['PatchGrid'], '.patches'),
    **dict.fromkeys(['CircuitSpec', 'CompiledCircuit', 'PatchQNN', 'QuantumFunction'], '.quantum'),
    **dict.fromkeys(['Result'], '.results'),
    **dict.fromkeys(['FiniteDifferenceOfGradients', 'ForwardOverReverse', 'ReverseOverReverse', 'SecondOrderProvider', 'choose_provider', 'make_provider'], '.second_order'),
    **dict.fromkeys(['GridSpec', 'MeasureSpec', 'RunPlan', 'SweepMeta', 'SweepSpec', 'collect', 'load_spec', 'run_sweep', 'sweep_report', 'sweep_status', 'sweep_table'], '.sweep'),
    **dict.fromkeys(['Check', 'Consistency', 'Rule'], '.claims'),
    **dict.fromkeys(['Estimate', 'bootstrap'], '.stats'),
    **dict.fromkeys(['TrainResult', 'train'], '.train'),
    **dict.fromkeys(['GradientVarianceResult', 'gradient_variance', 'init_seeds'], '.trainability'),
}
"""Public name -> the module (relative to this package) it is imported from on first use."""

__version__ = "0.1.0"

__all__ = [
    # objective: what every routine differentiates
    "Objective", "NonFiniteLossError", "MemoryBudgetError", "Counters", "ParamSpace", "ParamSelector", "select_parameter_names",
    "LossFunction", "make_loss",
    # model adapter: what a model can do, declared (the engine chooses routes from it)
    "ModelAdapter", "Capabilities", "ModuleInfo", "CapabilityError", "model_capabilities", "register_inspector",
    "copy_module",
    # second-order providers (the one interface for layers needing another route to H v)
    "SecondOrderProvider", "ReverseOverReverse", "ForwardOverReverse", "FiniteDifferenceOfGradients",
    "make_provider", "choose_provider",
    # curvature
    "HessianOperator", "MatrixOperator", "SymmetricOperator", "dense_hessian", "hessian_eigs", "lanczos",
    "dense_eigs", "EigResult", "hessian_trace", "TraceResult", "spectral_density", "DensityResult",
    # landscape
    "random_direction", "normalize_direction", "orthogonalize", "eigenvector_directions", "pca_directions",
    "PCAResult", "trajectory_spans", "scan_1d", "scan_2d", "symmetric_grid", "LandscapeScan", "interpolate",
    "InterpolationResult",
    # models, data, training
    "PatchQNN", "QuantumFunction", "CircuitSpec", "CompiledCircuit", "PatchGrid", "PatchMLP", "MLP", "SmallCNN", "Dataset", "load_digits", "load_mnist",
    "read_idx", "train", "TrainResult",
    # training dynamics through the empirical NTK (Fort et al. 2020)
    "empirical_ntk", "kernel_distance", "kernel_distance_matrix", "distances_to", "KernelDistanceTracker",
    "KernelDistanceTrace", "LinearizedModel", "kernel_regression", "KernelRegressionResult", "checkpoint_model",
    "ntk_dynamics", "NTKDynamicsResult", "kernel_learning_curve", "KernelLearningResult", "SpawnPlan", "SpawnResult",
    "run_spawn",
    # adversarial robustness and epsilon-sharpness (Prabhu et al.; Keskar et al. 2017)
    "Attack", "RobustEvaluation", "robust_accuracy", "robust_evaluate", "valid_range", "epsilon_sharpness",
    "SharpnessResult",
    # permutation alignment (Git Re-Basin) and merging; mode connectivity
    "align_weights", "AlignmentResult", "apply_permutations", "permutation_spec", "PermutationSpec",
    "random_permutations", "weight_similarity", "average_weights", "interpolation_barriers", "MergeResult",
    # trainability: gradient variance at initialization (barren plateaus)
    "gradient_variance", "GradientVarianceResult", "init_seeds",
    # sweeps: grids of patch networks, run on an executor, resumable
    "SweepSpec", "SweepMeta", "GridSpec", "MeasureSpec", "RunPlan", "load_spec", "run_sweep", "sweep_status",
    "collect", "sweep_table", "sweep_report",
    # claims decided from intervals: effect sizes with seed-bootstrap intervals (qlandscape.stats: mean,
    # ratio_of_means, mean_difference, log_slope, bootstrap_rows) and verdicts (qlandscape.claims: check, all_of)
    "Estimate", "bootstrap", "Rule", "Check", "Consistency",
    # results
    "Result",
    # conformance suite: qlandscape.testing.check_model
]


class _Package(types.ModuleType):
    """This package's module type: when the import system binds a submodule whose name is also a public
    name of it (``qlandscape.train``, the module, and ``qlandscape.train``, the function), the public name
    wins, as it did with eager imports."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (isinstance(value, types.ModuleType) and name in _EXPORTS
                and value.__name__ == f"{__name__}.{name}" and hasattr(value, name)):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # a subpackage or module (``qlandscape.sweep``), as the eager imports made available
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'qlandscape' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
