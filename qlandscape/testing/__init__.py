"""Conformance suite every model adapter passes (shipped in the package, run by the tests)."""

from .conformance import CheckResult, ConformanceReport, check_model

__all__ = ["check_model", "ConformanceReport", "CheckResult"]
