"""Curvature of the loss: Hessian operator, eigenpairs, trace and spectral density."""

from .lanczos import CERTIFICATE_FAILURE_PROB, F32_MIN_TOL, EigResult, dense_eigs, hessian_eigs, lanczos
from .operator import (
    HessianOperator,
    MatrixOperator,
    SymmetricOperator,
    as_operator,
    dense_hessian,
    dense_matrix,
    estimator_generator,
)
from .spectrum import DensityResult, gaussian_smoothing, spectral_density
from .trace import TraceResult, hessian_trace

__all__ = ["CERTIFICATE_FAILURE_PROB", "F32_MIN_TOL", "EigResult", "dense_eigs", "hessian_eigs", "lanczos",
           "HessianOperator", "MatrixOperator", "SymmetricOperator", "as_operator", "dense_hessian",
           "dense_matrix", "estimator_generator", "DensityResult", "gaussian_smoothing", "spectral_density",
           "TraceResult", "hessian_trace"]
