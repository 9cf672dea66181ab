"""Bundled datasets: sklearn's digits (8x8 images, 1797 samples; shipped inside sklearn,
nothing is downloaded), as multiclass or binary pairs, standardized, split, optionally
downsampled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Dataset:
    """A train/test split.

    Attributes
    ----------
    x_train, x_test : Tensor, shape (N, d) or (N, 1, h, w)
        Float inputs (float32), standardized with the training statistics.
    y_train, y_test : Tensor, shape (N,)
        Integer class labels ``0..n_classes-1``.
    image_shape : (h, w)
    classes : tuple of int
        Original digit labels, in the order of the new labels.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    image_shape: tuple[int, int]
    classes: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.x_test, self.y_test


def downsample_images(images: np.ndarray, size: int) -> np.ndarray:
    """Average-pool ``(N, h, w)`` images to ``(N, size, size)``; ``size`` must divide ``h`` and ``w``."""
    n, h, w = images.shape
    if size < 1 or h % size or w % size:
        raise ValueError(f"downsample size {size} must divide the image size {h}x{w} (e.g. 4 or 2 for 8x8)")
    return images.reshape(n, size, h // size, size, w // size).mean(axis=(2, 4))


def load_digits(*, classes: Optional[Sequence[int]] = None, test_size: float = 0.2,
                standardize: bool = True, downsample: Optional[int] = None, images: bool = False,
                n_samples: Optional[int] = None, seed: int = 0) -> Dataset:
    """sklearn's bundled digits.

    Parameters
    ----------
    classes : sequence of int, optional
        Keep only these digits (e.g. ``(3, 5)`` for a binary pair), relabelled ``0..k-1``.
    test_size : float
        Fraction held out (stratified, shuffled with ``seed``).
    standardize : bool
        Zero mean, unit variance per pixel with the training statistics (constant pixels -> 0).
    downsample : int, optional
        Average-pool the 8x8 images to ``downsample x downsample`` (must divide 8).
    images : bool
        Return ``(N, 1, h, w)`` instead of flat ``(N, h*w)`` inputs.
    n_samples : int, optional
        Keep the first ``n_samples`` samples after shuffling (small fast datasets).
    seed : int
    """
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    bunch = sk_load()
    X = bunch.images.astype(np.float64)
    y = bunch.target.astype(np.int64)
    if classes is not None:
        classes = tuple(int(c) for c in classes)
        unknown = [c for c in classes if c not in range(10)]
        if unknown or len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError(f"classes must be >= 2 distinct digits in 0..9, got {classes}")
        keep = np.isin(y, classes)
        X, y = X[keep], np.searchsorted(np.array(sorted(classes)), y[keep])
        order = np.argsort(classes)
        classes_out = tuple(np.array(classes)[order].tolist())
    else:
        classes_out = tuple(range(10))
    if downsample is not None:
        X = downsample_images(X, downsample)
    h, w = X.shape[1:]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    if n_samples is not None:
        if n_samples < 4:
            raise ValueError(f"n_samples must be >= 4, got {n_samples}")
        X, y = X[:n_samples], y[:n_samples]
    # stratified when every class can be represented in both parts (else sklearn refuses)
    n_test = int(np.ceil(test_size * len(y)))
    if n_test >= len(y):
        raise ValueError(f"test_size={test_size} leaves no training sample out of {len(y)}")
    counts = np.bincount(y)
    stratify = counts.min() >= 2 and min(n_test, len(y) - n_test) >= len(counts)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed,
                                          stratify=y if stratify else None)
    if standardize:
        mu = Xtr.mean(axis=0)
        sd = Xtr.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    shape = (-1, 1, h, w) if images else (-1, h * w)
    return Dataset(torch.as_tensor(Xtr.reshape(shape), dtype=torch.float32), torch.as_tensor(ytr),
                   torch.as_tensor(Xte.reshape(shape), dtype=torch.float32), torch.as_tensor(yte),
                   (h, w), classes_out)
