"""Files in their official formats (jobs/data/formats.py): MNIST's IDX and CIFAR-10's pickles, written
and read back byte for byte, and clear errors for broken ones."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from jobs.data.files import DataError
from jobs.data.formats import read_cifar10, read_idx, write_idx
from tests.support.datasets import write_cifar_like, write_mnist


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_and_header(tmp_path, gz):
    written = write_mnist(tmp_path, n_test=100, gz=gz)
    ext = ".gz" if gz else ""
    raw = tmp_path / "MNIST" / "raw"
    images = read_idx(raw / f"train-images-idx3-ubyte{ext}")
    assert images.shape == (1697, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images, written["x_train"])
    labels = read_idx(raw / f"t10k-labels-idx1-ubyte{ext}")
    assert np.array_equal(labels, written["y_test"])
    opener = gzip.open if gz else open
    with opener(raw / f"train-images-idx3-ubyte{ext}", "rb") as f:
        head = f.read(16)
    assert head == bytes([0, 0, 8, 3]) + (1697).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2


def test_idx_errors_are_clear(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 20)
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(bad)
    write_idx(tmp_path / "short", np.zeros((3, 2, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_cifar10_pickles_round_trip_with_channel_layout(tmp_path):
    written = write_cifar_like(tmp_path, n_train=50, n_test=10)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].shape == (10, 3072) and batch[b"data"].dtype == np.uint8
    # Official layout: 1024 red values, then green, then blue, each row-major 32x32.
    assert batch[b"data"][0, 0] == written["x_train"][0, 0, 0, 0]
    assert batch[b"data"][0, 1024 + 33] == written["x_train"][0, 1, 1, 1]
    loaded = read_cifar10(folder)
    assert np.array_equal(loaded["x_train"], written["x_train"]) and np.array_equal(loaded["y_test"], written["y_test"])
    assert list(loaded["classes"])[:2] == ["airplane", "automobile"]
