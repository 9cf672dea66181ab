"""qlandscape: loss-landscape geometry of classical and quantum neural networks, one engine.

The engine sees an :class:`Objective` (model + loss + data + reduction + mode + dtype +
parameter selection) and never asks whether the model is quantum.
"""

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
from .objective import Counters, NonFiniteLossError, Objective
from .params import ParamSelector, ParamSpace, select_parameter_names
from .patches import PatchGrid
from .quantum import CircuitSpec, CompiledCircuit, PatchQNN
from .results import Result
from .second_order import (
    FiniteDifferenceOfGradients,
    ForwardOverReverse,
    ReverseOverReverse,
    SecondOrderProvider,
    choose_provider,
    make_provider,
)
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

__version__ = "0.1.0"

__all__ = [
    # objective: what every routine differentiates
    "Objective", "NonFiniteLossError", "Counters", "ParamSpace", "ParamSelector", "select_parameter_names",
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
    "PatchQNN", "CircuitSpec", "CompiledCircuit", "PatchGrid", "PatchMLP", "MLP", "SmallCNN", "Dataset", "load_digits", "load_mnist",
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
    # results
    "Result",
    # conformance suite: qlandscape.testing.check_model
]
