"""Data sets by name: where the official files come from, their checksums, their layout under a
data set's folder, and the reader of their format (jobs/data/formats.py).

Every data set lives in one folder, `root` (by default <data>/<name>), in its official layout:
  digits        images.npy, labels.npy              (scikit-learn's bundled digits; no download)
  mnist         MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]   (torchvision's)
  emnist        EMNIST/gzip/emnist-<split>-*.gz, emnist-<split>-mapping.txt   (NIST's gzip.zip)
  cifar10       cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}  (torchvision's)
  cifar100      cifar-100-python/{train, test, meta}                             (torchvision's)
  tinyimagenet  tiny-imagenet-200/{wnids.txt, words.txt, train/, val/, test/}    (the official zip)
A reader returns uint8 x_train, int64 y_train, x_test / y_test where the data set has a labelled
held-out split, and the class names.
"""
from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from safeio import atomic_path

from jobs.data import formats
from jobs.data.files import DataError, sha256

DatasetName = Literal["digits", "mnist", "emnist", "cifar10", "cifar100", "tinyimagenet"]
EmnistSplit = Literal["byclass", "bymerge", "balanced", "letters", "digits", "mnist"]

NIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
NIST_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"        # as torchvision.datasets.EMNIST checks it
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"        # the md5 other loaders of this zip check
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Dataset:
    """One data set: `files(root, split)` the official files a stage needs (paths under root);
    `fetch(root, split, log)` downloads them (checksums verified); `read(root, split, label)`."""
    name: str
    source: str
    files: Callable[[Path, str], list[Path]]
    fetch: Callable[[Path, str, object], None]
    read: Callable[[Path, str, str], dict]
    held_out: str                       # what x_test/y_test is, in words ("" = none: carve one)
    class_names: tuple[str, ...] = ()   # where fixed by the release; the files' own names win
    official_md5: Callable[[str], dict[str, str]] = field(default=lambda split: {})  # root-relative path -> md5
    manifest_files: Callable[[Path, str], list[Path]] | None = None  # default: files()

    def staged(self, root: Path, split: str) -> bool:
        return all(p.exists() for p in self.files(root, split))

    def to_manifest(self, root: Path, split: str) -> list[Path]:
        return (self.manifest_files or self.files)(root, split)


# --------------------------------------------------------------------------------------- digits
def _digits_fetch(root: Path, split: str, log) -> None:
    images, labels = formats.sklearn_digits()
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in (("images.npy", images), ("labels.npy", labels)):
        with atomic_path(root / name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    log.info("wrote scikit-learn's %d digits to %s", len(labels), root)


# ---------------------------------------------------------------------------------------- MNIST
def _mnist_files(root: Path, split: str) -> list[Path]:
    raw = root / "MNIST" / "raw"
    return [formats.find_idx(raw, n) or raw / n for n in MNIST_FILES]


def _mnist_fetch(root: Path, split: str, log) -> None:
    from torchvision.datasets import MNIST
    log.info("downloading MNIST into %s (torchvision, md5 verified)", root)
    MNIST(str(root), train=True, download=True)


def _mnist_md5(split: str) -> dict[str, str]:
    from torchvision.datasets import MNIST
    return {f"MNIST/raw/{name}": md5 for name, md5 in MNIST.resources}


def _mnist_read(root: Path, split: str, label: str) -> dict:
    out = formats.read_idx_dataset(root / "MNIST" / "raw", {"train": "train", "test": "t10k"})
    return {**out, "classes": np.array([str(c) for c in range(10)])}


# --------------------------------------------------------------------------------------- EMNIST
def emnist_folder(root: Path) -> Path:
    return root / "EMNIST" / "gzip"


def fetch_nist(folder: Path, split: str, log) -> None:
    """NIST's gzip.zip (md5 checked) into folder.parent; the split's files extracted into folder."""
    from torchvision.datasets.utils import download_url
    archive_dir = folder.parent
    log.info("downloading %s (md5 checked) into %s", NIST_URL, archive_dir)
    download_url(NIST_URL, str(archive_dir), filename="gzip.zip", md5=NIST_MD5)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive_dir / "gzip.zip") as zf:
        for name in formats.emnist_files(split):
            with zf.open(f"gzip/{name}") as src, atomic_path(folder / name) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _emnist_staged_files(root: Path, split: str) -> list[Path]:
    """Every split staged so far, so staging a second split keeps the first one's manifest."""
    present = sorted(emnist_folder(root).glob("emnist-*"))
    return sorted(set(present) | set(_emnist_files(root, split)))


def _emnist_files(root: Path, split: str) -> list[Path]:
    return [emnist_folder(root) / n for n in formats.emnist_files(split)]


# ---------------------------------------------------------------------------------------- CIFAR
def _cifar_md5(cls_name: str) -> Callable[[str], dict[str, str]]:
    def md5(split: str) -> dict[str, str]:
        import torchvision.datasets as tvd
        cls = getattr(tvd, cls_name)
        pairs = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
        return {f"{cls.base_folder}/{name}": digest for name, digest in pairs}
    return md5


def _cifar_fetch(cls_name: str) -> Callable[[Path, str, object], None]:
    def fetch(root: Path, split: str, log) -> None:
        import torchvision.datasets as tvd
        log.info("downloading %s into %s (torchvision, md5 verified)", cls_name, root)
        getattr(tvd, cls_name)(str(root), train=True, download=True)
    return fetch


# -------------------------------------------------------------------------------- tiny-ImageNet
def tiny_folder(root: Path) -> Path:
    return root / "tiny-imagenet-200"


def fetch_tinyimagenet(root: Path, log) -> str:
    """The official zip (md5 checked) extracted into root; returns the zip's sha256."""
    from torchvision.datasets.utils import download_url
    log.info("downloading %s (md5 checked) into %s", TINY_URL, root)
    download_url(TINY_URL, str(root), filename="tiny-imagenet-200.zip", md5=TINY_MD5)
    archive = root / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root)
    return sha256(archive)


def _tiny_read(root: Path, split: str, label: str) -> dict:
    data = formats.read_tinyimagenet(tiny_folder(root))
    return {"x_train": data["x_train"], "y_train": data["y_train"], "x_test": data["x_val"],
            "y_test": data["y_val"], "classes": data["classes"]}


def _tiny_files(root: Path, split: str) -> list[Path]:
    # The index files; the 120k JPEGs are read through them (a missing one fails the reader).
    folder = tiny_folder(root)
    return [folder / "wnids.txt", folder / "words.txt", folder / "val" / "val_annotations.txt"]


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("digits", "sklearn.datasets.load_digits (UCI optdigits test set)",
            files=lambda root, split: [root / n for n in formats.DIGITS_FILES], fetch=_digits_fetch,
            read=lambda root, split, label: formats.read_digits(root), held_out="",
            class_names=tuple(str(c) for c in range(10))),
    Dataset("mnist", "torchvision.datasets.MNIST (" + "https://ossci-datasets.s3.amazonaws.com/mnist/)",
            files=_mnist_files, fetch=_mnist_fetch, read=_mnist_read, held_out="the official test set (t10k)",
            class_names=tuple(str(c) for c in range(10)), official_md5=_mnist_md5),
    Dataset("emnist", NIST_URL, files=_emnist_files,
            fetch=lambda root, split, log: fetch_nist(emnist_folder(root), split, log),
            read=lambda root, split, label: formats.read_emnist(emnist_folder(root), split),
            held_out="the official test set", manifest_files=_emnist_staged_files),
    Dataset("cifar10", "torchvision.datasets.CIFAR10 (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)",
            files=lambda root, split: [root / "cifar-10-batches-py" / n for n in formats.CIFAR10_FILES],
            fetch=_cifar_fetch("CIFAR10"), read=lambda root, split, label: formats.read_cifar10(root / "cifar-10-batches-py"),
            held_out="the official test set (test_batch)", class_names=CIFAR10_CLASSES,
            official_md5=_cifar_md5("CIFAR10")),
    Dataset("cifar100", "torchvision.datasets.CIFAR100 (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz)",
            files=lambda root, split: [root / "cifar-100-python" / n for n in formats.CIFAR100_FILES],
            fetch=_cifar_fetch("CIFAR100"),
            read=lambda root, split, label: formats.read_cifar100(root / "cifar-100-python", label),
            held_out="the official test set", official_md5=_cifar_md5("CIFAR100")),
    Dataset("tinyimagenet", TINY_URL, files=_tiny_files,
            fetch=lambda root, split, log: fetch_tinyimagenet(root, log), read=_tiny_read,
            held_out="the official val set (labelled; the official test set has no labels)"),
)}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; valid choices: {', '.join(DATASETS)}")
    return DATASETS[name]


def check_official_md5(dataset: Dataset, root: Path, split: str) -> list[str]:
    """The staged files whose md5 differs from the release's (only where one is published)."""
    import hashlib
    bad = []
    for rel, expected in dataset.official_md5(split).items():
        path = root / rel
        if path.exists() and hashlib.md5(path.read_bytes()).hexdigest() != expected:
            bad.append(rel)
    return bad
