"""Patch geometry shared by the patch quantum model and classical patch baselines.

A :class:`PatchGrid` cuts ``(H, W)`` images into equally sized, possibly overlapping patches
that tile the image exactly (the last patch of every row and column ends on the border).
Patches are numbered row-major by their top-left corner, and each patch's pixels are
flattened row-major, as in Kawase (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, cast

import torch
from torch import Tensor, nn


def _pair(value: object, name: str) -> tuple[int, int]:
    """``value`` as a pair of positive ints (an int means the same in both axes)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    try:
        a, b = cast(tuple[int, int], value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b)):
        raise TypeError(f"{name} must hold ints, got {value!r}")
    if a < 1 or b < 1:
        raise ValueError(f"{name} must be positive, got {(a, b)}")
    return int(a), int(b)


def _tiling_strides(span: int) -> list[int]:
    """Strides ``s`` with ``span % s == 0`` (``span`` = image size - patch size)."""
    return [s for s in range(1, span + 1) if span % s == 0] if span > 0 else [1]


@dataclass(frozen=True)
class PatchGrid:
    """Equally sized patches tiling an image exactly.

    Attributes
    ----------
    image_shape : (H, W)
    patch_shape : (ph, pw)
        At most the image size in each axis.
    stride : (sh, sw)
        Must tile: ``(H - ph) % sh == 0`` and ``(W - pw) % sw == 0``, so no pixel is left out.

    Examples
    --------
    The paper's grids: ``PatchGrid((14, 14), (8, 8), (6, 6))`` has 4 patches, stride 3 has 9,
    stride 2 has 16.
    """

    image_shape: tuple[int, int]
    patch_shape: tuple[int, int]
    stride: tuple[int, int]

    def __post_init__(self) -> None:
        image = _pair(self.image_shape, "image_shape")
        patch = _pair(self.patch_shape, "patch_shape")
        stride = _pair(self.stride, "stride")
        object.__setattr__(self, "image_shape", image)
        object.__setattr__(self, "patch_shape", patch)
        object.__setattr__(self, "stride", stride)
        for axis, size, p, s in zip(("height", "width"), image, patch, stride):
            if p > size:
                raise ValueError(f"patch {axis} {p} is larger than the image {axis} {size}")
            if (size - p) % s:
                raise ValueError(
                    f"stride {s} does not tile the image {axis}: patches of {p} on {size} pixels need "
                    f"({size} - {p}) % stride == 0; strides that tile: {_tiling_strides(size - p)}")

    @property
    def counts(self) -> tuple[int, int]:
        """Patches per column and per row, ``(nh, nw)``."""
        return tuple((size - p) // s + 1  # type: ignore[return-value]
                     for size, p, s in zip(self.image_shape, self.patch_shape, self.stride))

    @property
    def n_patches(self) -> int:
        nh, nw = self.counts
        return nh * nw

    @property
    def n_features(self) -> int:
        """Pixels per patch, ``ph * pw``."""
        return self.patch_shape[0] * self.patch_shape[1]

    @property
    def corners(self) -> list[tuple[int, int]]:
        """Top-left ``(row, col)`` of every patch, row-major (patch index order)."""
        nh, nw = self.counts
        sh, sw = self.stride
        return [(i * sh, j * sw) for i in range(nh) for j in range(nw)]

    def extract(self, images: Tensor) -> Tensor:
        """Cut images into patches.

        Parameters
        ----------
        images : Tensor, shape (B, H, W)

        Returns
        -------
        Tensor, shape (B, P, ph * pw)
            Patch ``p`` in row-major corner order, its pixels flattened row-major.
        """
        if images.dim() != 3 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"PatchGrid.extract expects images of shape (B, {self.image_shape[0]}, "
                             f"{self.image_shape[1]}), got {tuple(images.shape)} (as_images() converts "
                             "(B, 1, H, W) and flat (B, H*W) inputs)")
        (ph, pw), (sh, sw) = self.patch_shape, self.stride
        patches = images.unfold(1, ph, sh).unfold(2, pw, sw)  # (B, nh, nw, ph, pw)
        return patches.reshape(images.shape[0], self.n_patches, ph * pw)

    def coverage(self) -> Tensor:
        """How many patches cover each pixel, shape (H, W), int64 (>= 1 everywhere)."""
        cover = torch.zeros(self.image_shape, dtype=torch.int64)
        ph, pw = self.patch_shape
        for r, c in self.corners:
            cover[r:r + ph, c:c + pw] += 1
        return cover

    @classmethod
    def achievable_counts(cls, image_shape: tuple[int, int] | int, patch_shape: tuple[int, int] | int) -> list[int]:
        """Patch counts ``k * k`` that :meth:`from_count` can build (the same ``k`` in both axes)."""
        image, patch = _pair(image_shape, "image_shape"), _pair(patch_shape, "patch_shape")
        counts = [1] if image == patch else []
        spans = [size - p for size, p in zip(image, patch)]
        if min(spans) < 0:
            return []
        for k in range(2, min(spans) + 2):
            if all(span % (k - 1) == 0 for span in spans):
                counts.append(k * k)
        return counts

    @classmethod
    def from_count(cls, image_shape: tuple[int, int] | int, patch_shape: tuple[int, int] | int,
                   n_patches: int) -> "PatchGrid":
        """The grid of ``n_patches = k * k`` patches (``k`` per axis) tiling the image.

        The stride in each axis is ``(size - patch) / (k - 1)``. One patch (``k = 1``) is
        allowed only when the patch is the whole image (otherwise pixels would be left out).

        Raises
        ------
        ValueError
            When no stride gives exactly ``n_patches`` patches; the message lists the counts
            that are achievable.
        """
        image, patch = _pair(image_shape, "image_shape"), _pair(patch_shape, "patch_shape")
        achievable = cls.achievable_counts(image, patch)
        k = math.isqrt(n_patches) if isinstance(n_patches, int) and n_patches > 0 else 0
        if k * k != n_patches or n_patches not in achievable:
            hint = ""
            if n_patches == 1 and image != patch:
                hint = f" (one patch must cover the whole image: use patch_shape={image})"
            raise ValueError(f"cannot tile a {image[0]}x{image[1]} image with exactly {n_patches!r} patches of "
                             f"{patch[0]}x{patch[1]}{hint}; achievable counts: {achievable}")
        if k == 1:
            return cls(image, patch, patch)
        stride = tuple((size - p) // (k - 1) for size, p in zip(image, patch))
        return cls(image, patch, stride)  # type: ignore[arg-type]


def as_images(x: Tensor, image_shape: tuple[int, int]) -> Tensor:
    """View inputs as a batch of single-channel images.

    Parameters
    ----------
    x : Tensor, shape (B, H, W), (B, 1, H, W) or (B, H * W)
    image_shape : (H, W)

    Returns
    -------
    Tensor, shape (B, H, W)
    """
    h, w = image_shape
    shape = tuple(x.shape)
    if x.dim() == 3 and shape[1:] == (h, w):
        return x
    if x.dim() == 4 and shape[1:] == (1, h, w):
        return x[:, 0]
    if x.dim() == 2 and shape[1] == h * w:
        return x.reshape(shape[0], h, w)
    raise ValueError(f"expected inputs of shape (B, {h}, {w}), (B, 1, {h}, {w}) or flat (B, {h * w}), "
                     f"got {shape}")


class PatchNetwork(nn.Module):
    """The forward pass every patch model shares; subclasses define :meth:`patch_outputs`.

    ``x -> x * input_scale + positional bias -> patches (B, P, F) -> patch_outputs (B, P, K)
    -> coefficient * (mean | sum | linear head) -> logits (B, n_classes)``.

    Subclasses set ``grid`` (:class:`PatchGrid`), ``input_scale``, ``pos_bias`` (Parameter of
    shape ``(H, W)`` or None), ``aggregation`` ("mean" | "sum" | "linear"), ``head``
    (``nn.Linear(P * K, n_classes)`` or None) and ``coefficient``.
    """

    grid: PatchGrid
    input_scale: float
    pos_bias: Optional[nn.Parameter]
    aggregation: str
    head: Optional[nn.Linear]
    coefficient: float

    def patch_outputs(self, patches: Tensor) -> Tensor:
        """``patches`` (B, P, F), already scaled -> scores (B, P, K)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits.

        Parameters
        ----------
        x : Tensor, shape (B, H, W), (B, 1, H, W) or (B, H * W)

        Returns
        -------
        Tensor, shape (B, n_classes), in the parameters' dtype.
        """
        dtype = next(self.parameters()).dtype
        images = as_images(x, self.grid.image_shape).to(dtype) * self.input_scale
        if self.pos_bias is not None:
            images = images + self.pos_bias
        scores = self.patch_outputs(self.grid.extract(images))  # (B, P, K)
        if self.aggregation == "mean":
            agg = scores.mean(dim=1)
        elif self.aggregation == "sum":
            agg = scores.sum(dim=1)
        else:
            assert self.head is not None
            agg = self.head(scores.flatten(1))
        return self.coefficient * agg
