"""Training dynamics through the empirical neural tangent kernel (Fort et al. 2020), for any torch model.

- :mod:`.kernel`: the empirical NTK (full and output-traced), several implementations behind one function.
- :mod:`.distance`: kernel distance (scale-invariant, computed stably).
- :mod:`.linearized`: the linearized (Taylorized) model and kernel regression with a frozen kernel.
"""

from .distance import KernelDistanceTrace, KernelDistanceTracker, distances_to, kernel_distance, kernel_distance_matrix
from .kernel import empirical_ntk
from .linearized import KernelRegressionResult, LinearizedModel, kernel_regression

__all__ = ["empirical_ntk", "kernel_distance", "kernel_distance_matrix", "distances_to", "KernelDistanceTracker",
           "KernelDistanceTrace", "LinearizedModel", "kernel_regression", "KernelRegressionResult"]
