"""MNIST and Fashion-MNIST: 60,000 + 10,000 grayscale 28x28 images in ten classes.

Both ship as the same four gzipped IDX files. The SHA-256 values below are the
published ones (MNIST: the values every mirror serves; Fashion-MNIST: the
values in Zalando's README, which also match its MD5 list); the ``raw_sha256``
values hash the decompressed files, so recompressed copies are accepted too.
"""
from __future__ import annotations

import os

import numpy as np

from .files import FileSet, RemoteFile, fetch
from .idx import parse_idx
from .images import ScaledImages

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

MNIST = FileSet(
    title="MNIST",
    subdir="mnist",
    files=(
        RemoteFile(
            TRAIN_IMAGES,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        RemoteFile(
            TRAIN_LABELS,
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        RemoteFile(
            TEST_IMAGES,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        RemoteFile(
            TEST_LABELS,
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

FASHION_MNIST = FileSet(
    title="Fashion-MNIST",
    subdir="fashion-mnist",
    files=(
        RemoteFile(
            TRAIN_IMAGES,
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        RemoteFile(
            TRAIN_LABELS,
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        RemoteFile(
            TEST_IMAGES,
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        RemoteFile(
            TEST_LABELS,
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ),
    mirrors=(
        "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    debian_package="dataset-fashion-mnist",
)

Split = tuple[np.ndarray, np.ndarray]


SPLITS = {"train": (TRAIN_IMAGES, TRAIN_LABELS), "test": (TEST_IMAGES, TEST_LABELS)}


def _images(content: bytes, name: str, uint8: bool) -> np.ndarray | ScaledImages:
    raw = parse_idx(content, name)  # a view of content, no copy
    if raw.ndim != 3:
        raise ValueError(f"{name}: expected images (N, H, W), got shape {raw.shape}")
    if uint8:
        return ScaledImages(raw[:, None, :, :], 255.0)
    images = raw[:, None, :, :].astype(np.float32)
    images /= np.float32(255.0)  # in place: one float32 copy, not two
    return images


def _labels(content: bytes, name: str, count: int) -> np.ndarray:
    raw = parse_idx(content, name)
    if raw.shape != (count,):
        raise ValueError(f"{name}: expected {count} labels, got shape {raw.shape}")
    return raw.astype(np.int64)


def load_idx_dataset(fileset: FileSet, data_dir: str | os.PathLike | None = None,
                     uint8: bool = False, strict: bool = False) -> tuple[Split, Split]:
    """``(X_train, y_train), (X_test, y_test)`` of an MNIST-format dataset.

    X: float32 (N, 1, 28, 28) in [0, 1]; y: int64 (N,) in 0..9. With ``uint8``,
    X is a ScaledImages over the file's uint8 pixels (scaled batch by batch). With
    ``strict``, only ``data_dir`` is searched (see ``fetch``).
    """
    files = fetch(fileset, data_dir, strict=strict)
    splits = []
    for images, labels in SPLITS.values():
        X = _images(files.pop(images), images, uint8)
        splits.append((X, _labels(files.pop(labels), labels, len(X))))
    return splits[0], splits[1]


def load_idx_split(fileset: FileSet, split: str, data_dir: str | os.PathLike | None = None,
                   uint8: bool = False, strict: bool = False) -> Split:
    """``(X, y)`` of one split, "train" or "test", reading only that split's two files."""
    images, labels = SPLITS[split]
    files = fetch(fileset, data_dir, names=(images, labels), strict=strict)
    X = _images(files[images], images, uint8)
    return X, _labels(files[labels], labels, len(X))


def load_mnist(data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """MNIST handwritten digits: 60,000 train and 10,000 test images.

    X: float32 (N, 1, 28, 28) in [0, 1]; y: int64 (N,) in 0..9. Looks in
    ``data_dir``, ``$DUALCONV_DATA/mnist`` and the user cache, downloading what is
    missing into the cache; every file's SHA-256 is checked.
    """
    return load_idx_dataset(MNIST, data_dir)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Fashion-MNIST (Zalando): 60,000 train and 10,000 test clothing images, ten classes.

    Same shapes, dtypes and lookup as :func:`load_mnist`, under ``fashion-mnist``;
    also finds Debian's ``/usr/share/datasets/fashion-mnist``.
    """
    return load_idx_dataset(FASHION_MNIST, data_dir)
