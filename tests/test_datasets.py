"""Datasets: IDX parsing, MNIST lookup and checksums (offline), digits.

Real MNIST comes from $DUALCONV_DATA/mnist (CI sets DUALCONV_DATA to its data folder);
those tests are skipped when the files are absent. No test touches the network:
the downloader is replaced by one that fails (or copies a local file).
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dualconv import datasets
from dualconv.datasets import files as files_mod
from dualconv.datasets.mnist import FASHION_MNIST, MNIST

NAMES = [f.name for f in MNIST.files]


def _real_mnist_dir() -> Path | None:
    root = os.environ.get("DUALCONV_DATA")
    if not root:
        return None
    path = Path(root) / "mnist"
    return path if all((path / n).is_file() for n in NAMES) else None


REAL = _real_mnist_dir()
needs_mnist = pytest.mark.skipif(
    REAL is None, reason="real MNIST not found: set DUALCONV_DATA (files in $DUALCONV_DATA/mnist)"
)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No $DUALCONV_DATA, an empty cache under tmp_path, and a downloader that always fails."""
    calls = []

    def fail(remote, mirrors, directory):
        calls.append(remote.name)
        raise OSError("download failed: offline (test)")

    monkeypatch.delenv("DUALCONV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(files_mod, "download", fail)
    return calls


def _copy_real(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        shutil.copyfile(REAL / name, dest / name)
    return dest


# ---------------------------------------------------------------- IDX parsing


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_parse_idx_uint8_and_int32_roundtrip():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(datasets.parse_idx(_idx_bytes(a, 0x08)), a)
    b = np.array([-5, 70000, 3], dtype=np.int32)
    out = datasets.parse_idx(_idx_bytes(b, 0x0C))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, b)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x01\x00\x08\x01", "magic"),
        (b"\x00\x00\x42\x01\x00\x00\x00\x01\x00", "data type"),
        (b"\x00\x00\x08\x02\x00\x00", "header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "shape"),
    ],
)
def test_parse_idx_rejects_malformed_bytes(data, match):
    with pytest.raises(datasets.IDXFormatError, match=match):
        datasets.parse_idx(data, "x.idx")


# ---------------------------------------------------------------- real MNIST


@needs_mnist
def test_load_mnist_shapes_dtypes_and_labels():
    (X_train, y_train), (X_test, y_test) = datasets.load_mnist()
    assert X_train.shape == (60000, 1, 28, 28) and X_test.shape == (10000, 1, 28, 28)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    assert y_train[0] == 5 and y_test[0] == 7  # the well-known first labels
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_mnist
def test_real_files_match_the_hard_coded_checksums_and_sha256sums():
    sums = dict(line.split()[::-1] for line in (REAL / "SHA256SUMS").read_text().splitlines() if line.strip())
    for remote in MNIST.files:
        assert sums[remote.name] == remote.sha256
        files_mod.read_verified(REAL / remote.name, remote, "MNIST")  # does not raise


@needs_mnist
def test_data_dir_may_be_the_parent_of_mnist(offline):
    contents = files_mod.fetch(MNIST, REAL.parent)
    assert sorted(contents) == sorted(NAMES) and offline == []


@needs_mnist
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_file_gives_checksum_error_naming_it(offline, tmp_path, damage):
    data_dir = _copy_real(tmp_path / "data")
    victim = data_dir / "train-labels-idx1-ubyte.gz"
    blob = bytearray(victim.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    else:
        del blob[len(blob) // 2 :]
    victim.write_bytes(bytes(blob))
    with pytest.raises(datasets.ChecksumError) as info:
        datasets.load_mnist(data_dir)
    message = str(info.value)
    assert str(victim) in message and "checksum mismatch" in message
    assert offline == ["train-labels-idx1-ubyte.gz"]  # it tried to fetch a good copy
    assert victim.read_bytes() == bytes(blob)  # the user's file is left alone


@needs_mnist
def test_corrupted_file_is_fetched_again_into_the_cache(monkeypatch, tmp_path):
    data_dir = _copy_real(tmp_path / "data")
    victim = data_dir / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:100])
    fetched = []

    def copy_from_mirror(remote, mirrors, directory):
        fetched.append(directory)
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REAL / remote.name, directory / remote.name)
        return directory / remote.name

    monkeypatch.delenv("DUALCONV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(files_mod, "download", copy_from_mirror)
    (_, _), (_, y_test) = datasets.load_mnist(data_dir)
    assert y_test.shape == (10000,)
    assert fetched == [tmp_path / "cache" / "dualconv" / "mnist"]
    assert len(victim.read_bytes()) == 100  # not overwritten


def test_recompressed_copy_is_accepted_by_content_hash(tmp_path):
    content = b"some IDX content"
    remote = files_mod.RemoteFile("x.gz", "0" * 64, files_mod._sha256(content))
    (tmp_path / "x.gz").write_bytes(gzip.compress(content, mtime=0))
    assert files_mod.read_verified(tmp_path / "x.gz", remote, "X") == content
    (tmp_path / "x.gz").write_bytes(content)  # right content, but not gzip: rejected
    with pytest.raises(datasets.ChecksumError):
        files_mod.read_verified(tmp_path / "x.gz", remote, "X")


# ---------------------------------------------------------------- offline, no files


def test_offline_without_files_gives_one_clear_error(offline):
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load_mnist()
    error = info.value
    assert isinstance(error, FileNotFoundError) and isinstance(error, RuntimeError)
    message = str(error)
    for name in NAMES:
        assert name in message
    assert "$DUALCONV_DATA/mnist" in message and "--data-dir" in message and "digits" in message
    assert offline == ["train-images-idx3-ubyte.gz"]  # one failed download is enough to stop trying


def test_fashion_mnist_offline_error_names_its_directory(offline):
    with pytest.raises(datasets.DatasetNotFoundError, match=r"\$DUALCONV_DATA/fashion-mnist"):
        datasets.load_dataset("fashion-mnist")


def test_search_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DUALCONV_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dirs = files_mod.search_dirs(FASHION_MNIST, tmp_path / "mine")
    assert dirs == [
        tmp_path / "mine",
        tmp_path / "mine" / "fashion-mnist",
        tmp_path / "env" / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
        tmp_path / "cache" / "dualconv" / "fashion-mnist",
    ]


def test_download_uses_pooch_with_the_known_hash_and_tries_each_mirror(monkeypatch, tmp_path):
    import pooch

    calls = []

    def fake_retrieve(url, known_hash, fname, path, downloader):
        calls.append((url, known_hash, fname, Path(path)))
        if len(calls) == 1:
            raise ValueError("hash mismatch")
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    remote = MNIST.files[1]
    path = files_mod.download(remote, MNIST.mirrors, tmp_path)
    assert path == tmp_path / remote.name
    assert [c[0] for c in calls] == [m + remote.name for m in MNIST.mirrors]
    assert all(c[1] == "sha256:" + remote.sha256 and c[3] == tmp_path for c in calls)


# ---------------------------------------------------------------- digits


def test_digits_split_shapes_scale_and_stratification():
    (X_train, y_train), (X_test, y_test) = datasets.load_digits_dataset()
    assert X_train.shape == (1437, 1, 8, 8) and X_test.shape == (360, 1, 8, 8)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= X_train.min() and X_train.max() == 1.0
    train_share = np.bincount(y_train) / len(y_train)
    test_share = np.bincount(y_test) / len(y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)
    (X_again, _), _ = datasets.load_digits_dataset()
    np.testing.assert_array_equal(X_train, X_again)


def test_load_dataset_by_name():
    (X, y), _ = datasets.load_dataset("digits")
    assert X.shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="mnist, fashion-mnist, digits"):
        datasets.load_dataset("cifar")
