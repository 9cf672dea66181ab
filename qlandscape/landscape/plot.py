"""Plots of scans, interpolations and spectral densities (matplotlib, imported lazily)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def new_axes(ax: Any = None, projection: Optional[str] = None) -> Any:
    """``ax`` itself, or the axes of a new 5.5 x 4.5 inch figure (``projection="3d"`` for surfaces)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(5.5, 4.5))
    return fig.add_subplot(111, projection=projection) if projection else fig.add_subplot(111)


def plot_line(scan: Any, ax: Any = None, metric: bool = False) -> Any:
    """1D scan: loss (and optionally metric on a twin axis) against the coordinate."""
    ax = new_axes(ax)
    ax.plot(scan.alphas, scan.loss, color="C0", label="loss")
    ax.axvline(0.0, color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("alpha")
    ax.set_ylabel("loss")
    if metric and not np.all(np.isnan(scan.metric)):
        ax2 = ax.twinx()
        ax2.plot(scan.alphas, scan.metric, color="C1", label="accuracy")
        ax2.set_ylabel("accuracy")
    return ax


def plot_contour(scan: Any, ax: Any = None, levels: int = 30, log: bool = False,
                 trajectory: Optional[np.ndarray] = None) -> Any:
    """2D scan as filled contours; ``trajectory`` (T, 2) coordinates are overlaid."""
    ax = new_axes(ax)
    Z = np.log10(np.clip(scan.loss, 1e-300, None)) if log else scan.loss
    A, B = np.meshgrid(scan.alphas, scan.betas, indexing="ij")
    cs = ax.contourf(A, B, Z, levels=levels, cmap="viridis")
    ax.contour(A, B, Z, levels=levels, colors="k", linewidths=0.3)
    ax.figure.colorbar(cs, ax=ax, label="log10 loss" if log else "loss")
    ax.plot([0.0], [0.0], marker="*", color="w", ms=10, mec="k")
    if trajectory is not None:
        ax.plot(trajectory[:, 0], trajectory[:, 1], "o-", color="w", ms=2, lw=1)
    ax.set_xlabel("alpha (d1)")
    ax.set_ylabel("beta (d2)")
    ax.set_aspect("auto")
    return ax


def plot_surface(scan: Any, ax: Any = None, log: bool = False) -> Any:
    """2D scan as a 3D surface."""
    ax = new_axes(ax, projection="3d")
    Z = np.log10(np.clip(scan.loss, 1e-300, None)) if log else scan.loss
    A, B = np.meshgrid(scan.alphas, scan.betas, indexing="ij")
    ax.plot_surface(A, B, Z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("alpha")
    ax.set_ylabel("beta")
    ax.set_zlabel("log10 loss" if log else "loss")
    return ax


def plot_interpolation(res: Any, ax: Any = None) -> Any:
    """Loss along an interpolation with the straight line joining the endpoint losses."""
    ax = new_axes(ax)
    ax.plot(res.t, res.loss, "o-", ms=3, label="loss")
    ax.plot([0, 1], [res.loss_a, res.loss_b], "--", color="0.5", label="endpoint line")
    ax.set_xlabel("t")
    ax.set_ylabel("loss")
    ax.set_title(f"barrier = {res.barrier:.3g}")
    ax.legend()
    return ax


def plot_density(res: Any, ax: Any = None, log: bool = True) -> Any:
    """Smoothed SLQ spectral density."""
    ax = new_axes(ax)
    y = np.clip(res.density, 1e-12, None) if log else res.density
    ax.plot(res.grid, y)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    return ax


def save_figure(ax: Any, path: str, close: bool | None = None) -> None:
    """Save the figure of ``ax`` as PNG (120 dpi).

    Parameters
    ----------
    ax : matplotlib Axes
        Any axes of the figure to save.
    path : str
        Output file.
    close : bool, optional
        Close the figure after saving. The default closes it unless matplotlib's backend is
        Jupyter's inline backend, where an open figure is displayed in the cell's output (so a
        notebook both shows the figure and saves it); scripts under a non-interactive backend
        do not accumulate open figures.
    """
    import matplotlib
    import matplotlib.pyplot as plt
    fig = ax.figure
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    if close is None:
        close = "inline" not in matplotlib.get_backend().lower()
    if close:
        plt.close(fig)
