"""``[scan]``: the ``scan`` job's directions, span and grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .checks import check_bool, check_choice, check_int, check_number, fail, normalize

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
        normalize(self)
        s = "scan"
        check_choice(s, "dims", self.dims, (1, 2))
        check_choice(s, "directions", self.directions, SCAN_DIRECTIONS)
        check_choice(s, "one_d", self.one_d, SCAN_ONE_D)
        check_number(s, "span", self.span, positive=True, optional="automatic, see span_mode")
        check_int(s, "n_points", self.n_points, 2)
        check_bool(s, "float32", self.float32)
        check_bool(s, "log_plot", self.log_plot)
        check_choice(s, "span_mode", self.span_mode, SPAN_MODES)
        check_number(s, "margin", self.margin, low=0)
        check_int(s, "seed", self.seed, 0)
        if self.span_mode == "trajectory" and self.directions != "pca":
            fail(s, "span_mode", self.span_mode, f"'fixed' or 'auto' for scan.directions={self.directions!r} "
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
