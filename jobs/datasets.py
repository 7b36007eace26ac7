"""Readers (and writers, for fixtures and staging) of the official on-disk formats.

IDX (MNIST, EMNIST): big-endian magic (0, 0, dtype code, ndim), then ndim uint32 sizes, then data;
optionally gzip-compressed. CIFAR-10 python version: pickled dicts with b"data" (N, 3072) uint8,
rows of 1024 red, 1024 green, 1024 blue values, and b"labels".
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from .data import DataError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _open(path: Path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path} is truncated or padded: {len(raw)} bytes, header says {expected}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write uint8 arrays (images (N, H, W) or labels (N,)) as IDX, gzipped if the name ends .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_FILES = CIFAR10_TRAIN + ["test_batch", "batches.meta"]


def read_cifar10(folder: str | Path) -> dict[str, np.ndarray]:
    """x_train (50000, 32, 32, 3) uint8, y_train, x_test, y_test, classes from cifar-10-batches-py/."""
    folder = Path(folder)

    def load(name: str) -> dict:
        try:
            with open(folder / name, "rb") as f:
                return pickle.load(f, encoding="bytes")
        except FileNotFoundError:
            raise DataError(f"CIFAR-10 file missing: {folder / name}; run the download stage") from None

    def images(batches):
        data = np.concatenate([b[b"data"] for b in batches])                 # (N, 3072)
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)               # (N, 32, 32, 3)

    train = [load(n) for n in CIFAR10_TRAIN]
    test = load("test_batch")
    classes = [c.decode() for c in load("batches.meta")[b"label_names"]]
    return {"x_train": images(train), "y_train": np.concatenate([b[b"labels"] for b in train]).astype(np.int64),
            "x_test": images([test]), "y_test": np.asarray(test[b"labels"], dtype=np.int64),
            "classes": np.array(classes)}


def write_cifar10(folder: str | Path, x_train, y_train, x_test, y_test, classes: list[str]) -> None:
    """The same pickles as the official python release (train split evenly over 5 batches)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name, x, y):
        rows = np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": rows,
                         b"filenames": [f"{i}.png".encode() for i in range(len(y))]}, f)

    for i, (xs, ys) in enumerate(zip(np.array_split(x_train, 5), np.array_split(y_train, 5)), 1):
        dump(f"data_batch_{i}", xs, ys)
    dump("test_batch", x_test, y_test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in classes], b"num_vis": 3072}, f)
