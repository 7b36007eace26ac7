"""Data sets written by tests in the official on-disk formats (no download possible here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.datasets import write_cifar10, write_idx


def digits_28px() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's real 8x8 handwritten digits, scaled to 24x24 and padded to MNIST's 28x28."""
    from sklearn.datasets import load_digits
    d = load_digits()
    img = np.kron(d.images, np.ones((3, 3))) * (255 / 16)                  # (N, 24, 24)
    return np.pad(img, ((0, 0), (2, 2), (2, 2))).round().astype(np.uint8), d.target.astype(np.uint8)


def write_mnist(data_dir: Path, n_test: int = 300, gz: bool = True) -> dict:
    """data_dir/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], as torchvision leaves them."""
    x, y = digits_28px()
    raw = Path(data_dir) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    parts = {"train-images-idx3-ubyte": x[:-n_test], "train-labels-idx1-ubyte": y[:-n_test],
             "t10k-images-idx3-ubyte": x[-n_test:], "t10k-labels-idx1-ubyte": y[-n_test:]}
    for name, arr in parts.items():
        write_idx(raw / (name + ext), arr)
    return {"x_train": x[:-n_test], "y_train": y[:-n_test], "x_test": x[-n_test:], "y_test": y[-n_test:]}


def write_cifar_like(data_dir: Path, n_train: int = 1000, n_test: int = 200, seed: int = 0) -> dict:
    """cifar-10-batches-py pickles; each class has its own mean colour and blob position, plus noise."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(10, 3))

    def make(n):
        y = rng.integers(0, 10, n)
        x = rng.normal(0, 30, size=(n, 32, 32, 3)) + colours[y][:, None, None, :]
        for i, c in enumerate(y):
            r, q = divmod(int(c), 5)
            x[i, 4 + 12 * r: 12 + 12 * r, 2 + 6 * q: 6 + 6 * q] += 60
        return np.clip(x, 0, 255).astype(np.uint8), y
    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_cifar10(Path(data_dir) / "cifar-10-batches-py", x_train, y_train, x_test, y_test, classes)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
