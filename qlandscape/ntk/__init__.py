"""Training dynamics through the empirical neural tangent kernel (Fort et al. 2020), for any torch model.

- :mod:`.kernel`: the empirical NTK (full and output-traced), several implementations behind one function.
- :mod:`.distance`: kernel distance (scale-invariant, computed stably).
- :mod:`.linearized`: the linearized (Taylorized) model and kernel regression with a frozen kernel.
- :mod:`.dynamics`: the kernel along a recorded training trajectory (distance, velocity) and kernel learning
  at time t (kernel regression and linearized training from each checkpoint).
- :mod:`.spawn`: parent-child spawning (loss and 0-1 error barriers between children vs spawn time).
"""

from .distance import KernelDistanceTrace, KernelDistanceTracker, distances_to, kernel_distance, kernel_distance_matrix
from .dynamics import KernelLearningResult, NTKDynamicsResult, checkpoint_model, kernel_learning_curve, ntk_dynamics
from .kernel import empirical_ntk
from .linearized import KernelRegressionResult, LinearizedModel, kernel_regression
from .spawn import (
    SpawnPlan,
    SpawnResult,
    child_barriers,
    run_spawn,
    spawn_jobs,
    spawn_result,
    train_child,
    train_parent,
)

__all__ = ["empirical_ntk", "kernel_distance", "kernel_distance_matrix", "distances_to", "KernelDistanceTracker",
           "KernelDistanceTrace", "LinearizedModel", "kernel_regression", "KernelRegressionResult", "checkpoint_model",
           "ntk_dynamics", "NTKDynamicsResult", "kernel_learning_curve", "KernelLearningResult", "SpawnPlan",
           "SpawnResult", "spawn_jobs", "train_parent", "train_child", "child_barriers", "run_spawn",
           "spawn_result"]
