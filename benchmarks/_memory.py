"""Peak resident memory of a piece of work, for the benchmarks (Linux ``/proc``): reset the high-water mark
(:func:`reset_peak_rss`), do the work, read ``status_kb("VmHWM")``."""

from __future__ import annotations

from pathlib import Path


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def reset_peak_rss() -> int:
    """Reset the peak-RSS high-water mark (Linux ``clear_refs``) and return the current RSS in kB, so that
    VmHWM afterwards measures the peak of the timed work alone."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kb("VmRSS")
