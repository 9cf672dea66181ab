"""Patch-count sweeps: a grid of patch networks (quantum and matched classical) trained and measured at
their minima, run on any ``concurrent.futures`` executor (a local spawn pool or Dask), resumable, with a
results table and report.

- :mod:`.spec`: the sweep spec (TOML or Python), validated; presets ``digits-small`` and ``kawase2025``.
- :mod:`.worker`: one run (train, measure, publish atomically).
- :mod:`.runner`: the runner, status and the results table.
- :mod:`.lifecycle`: workers that die with their runner, SIGTERM/SIGINT handling, the runner record.
- :mod:`.manifest`: checksums of published runs, verified by status, run and report.
- :mod:`.report`: summary tables and plots.
"""

from .lifecycle import ExecutorFailed, SweepInterrupted
from .runner import (
           IncompleteSweepError,
           SweepOutcome,
           SweepStatus,
           collect,
           make_executor,
           run_sweep,
           sweep_report,
           sweep_status,
           sweep_table,
)
from .spec import GridSpec, MeasureSpec, RunPlan, SweepMeta, SweepSpec, load_spec, preset_names, spec_from_dict

__all__ = ["SweepSpec", "SweepMeta", "GridSpec", "MeasureSpec", "RunPlan", "load_spec", "spec_from_dict",
           "preset_names", "run_sweep", "SweepOutcome", "sweep_status", "SweepStatus", "collect", "sweep_table",
           "sweep_report", "make_executor", "IncompleteSweepError", "ExecutorFailed", "SweepInterrupted"]
