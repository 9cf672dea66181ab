"""Loss landscapes: directions, 1D/2D scans, interpolation and plots."""

from .directions import (
                         PCAResult,
                         eigenvector_directions,
                         normalize_direction,
                         orthogonalize,
                         pca_directions,
                         random_direction,
                         resolve_one_d,
                         trajectory_spans,
)
from .scan import InterpolationResult, LandscapeScan, interpolate, scan_1d, scan_2d, symmetric_grid

__all__ = ["PCAResult", "eigenvector_directions", "normalize_direction", "orthogonalize", "pca_directions",
           "random_direction", "InterpolationResult", "LandscapeScan", "interpolate", "scan_1d", "scan_2d",
           "symmetric_grid", "trajectory_spans", "resolve_one_d"]
