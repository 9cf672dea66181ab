"""``[hessian]``: the ``hessian`` job (and every job that measures curvature)."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import check_choice, check_int, check_number, normalize

HESSIAN_WHICH: tuple[str, ...] = ("largest", "smallest", "both")
TRACE_METHODS: tuple[str, ...] = ("auto", "exact", "hutchinson", "hutch++")
EIG_METHODS: tuple[str, ...] = ("auto", "dense", "lanczos")


@dataclass(frozen=True)
class HessianConfig:
    """Hessian analysis: ``top_k`` >= 1 eigenpairs (``which``: "largest", "smallest" or "both" ends,
    algebraic) to relative accuracy ``tol`` in (0, 1) by ``eig_method``; the trace by ``trace_method``
    with ``trace_probes`` >= 2 probes (>= 6 for "hutch++"); the SLQ spectral density from
    ``density_probes`` >= 1 probes of ``density_steps`` >= 1 Lanczos steps; ``seed`` >= 0."""

    top_k: int = 5
    which: str = "largest"
    tol: float = 1e-4
    trace_method: str = "auto"
    trace_probes: int = 100
    density_probes: int = 5
    density_steps: int = 80
    eig_method: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        normalize(self)
        s = "hessian"
        check_int(s, "top_k", self.top_k, 1)
        check_choice(s, "which", self.which, HESSIAN_WHICH)
        check_number(s, "tol", self.tol, low=0, high=1, low_open=True, high_open=True)
        check_choice(s, "trace_method", self.trace_method, TRACE_METHODS)
        check_int(s, "trace_probes", self.trace_probes, 6 if self.trace_method == "hutch++" else 2)
        check_int(s, "density_probes", self.density_probes, 1)
        check_int(s, "density_steps", self.density_steps, 1)
        check_choice(s, "eig_method", self.eig_method, EIG_METHODS)
        check_int(s, "seed", self.seed, 0)
