"""One reader per on-disk format (and the writers tests and staging use). Readers return uint8
images, int64 labels and the class names, as the files hold them; nothing is resized or split here.

- IDX (MNIST, EMNIST): big-endian magic (0, 0, dtype code, ndim), then ndim uint32 sizes, then
  data; optionally gzip-compressed. EMNIST adds `emnist-<split>-mapping.txt` and stores glyphs
  transposed.
- CIFAR-10 python version (cifar-10-batches-py/): pickled dicts with b"data" (N, 3072) uint8, rows
  of 1024 red, 1024 green, 1024 blue values, b"labels"; batches.meta holds b"label_names".
- CIFAR-100 python version (cifar-100-python/): `train`, `test` with b"fine_labels" and
  b"coarse_labels"; `meta` with b"fine_label_names" and b"coarse_label_names".
- tiny-ImageNet (tiny-imagenet-200/): wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
  val/images/*.JPEG labelled by val/val_annotations.txt (the official test split has no labels).
- digits: scikit-learn's bundled 8x8 digits, staged as images.npy (uint8) + labels.npy.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from jobs.data.files import DataError

# ----------------------------------------------------------------------------------------- IDX
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


def find_idx(folder: Path, name: str) -> Path | None:
    """`name` as the raw or the .gz file that exists (raw preferred: torchvision keeps both)."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.exists():
            return candidate
    return None


def read_idx_dataset(folder: str | Path, prefixes: dict[str, str]) -> dict[str, np.ndarray]:
    """{"train": "train", "test": "t10k"} -> x_train, y_train, x_test, y_test from
    <prefix>-images-idx3-ubyte[.gz] and <prefix>-labels-idx1-ubyte[.gz] in `folder`."""
    folder, out = Path(folder), {}
    for split, prefix in prefixes.items():
        for key, part in (("x", "images-idx3"), ("y", "labels-idx1")):
            path = find_idx(folder, f"{prefix}-{part}-ubyte")
            if path is None:
                raise DataError(f"IDX file missing: {folder / f'{prefix}-{part}-ubyte'}[.gz]; run the download stage")
            out[f"{key}_{split}"] = read_idx(path)
    for split in prefixes:
        out[f"y_{split}"] = out[f"y_{split}"].astype(np.int64)
        if len(out[f"x_{split}"]) != len(out[f"y_{split}"]):
            raise DataError(f"{folder}: {len(out[f'x_{split}'])} {split} images but {len(out[f'y_{split}'])} labels")
    return out


def read_mapping(path: Path) -> list[str]:
    """emnist-<split>-mapping.txt: 'label ascii_code [ascii_code]' per line -> each label's
    character(s). `letters` starts at label 1 and lists upper and lower case: 'Aa'."""
    rows = [[int(v) for v in line.split()] for line in Path(path).read_text().splitlines() if line.strip()]
    chars = {row[0]: "".join(chr(c) for c in row[1:]) for row in rows}
    return [chars.get(i, "?") for i in range(max(chars) + 1)]


def fix_orientation(images: np.ndarray) -> np.ndarray:
    """EMNIST stores glyphs transposed: rotating -90 degrees then flipping horizontally is a
    transpose of the last two axes. (N, 28, 28) -> (N, 28, 28)."""
    return np.ascontiguousarray(images.transpose(0, 2, 1))


def emnist_files(split: str) -> list[str]:
    """NIST's gzip release names of one split: train/test images and labels, then the mapping."""
    return [f"emnist-{split}-{part}-ubyte.gz" for part in
            ("train-images-idx3", "train-labels-idx1", "test-images-idx3", "test-labels-idx1")] + \
           [f"emnist-{split}-mapping.txt"]


def read_emnist(folder: str | Path, split: str) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test (glyphs upright) and classes from the NIST gzip files."""
    folder = Path(folder)
    names = emnist_files(split)
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise DataError(f"EMNIST split {split!r} not staged ({missing[0]} missing in {folder}); "
                        f"download split {split!r} first")
    x_train, y_train, x_test, y_test = (read_idx(folder / n) for n in names[:4])
    return {"x_train": fix_orientation(x_train), "y_train": y_train.astype(np.int64),
            "x_test": fix_orientation(x_test), "y_test": y_test.astype(np.int64),
            "classes": np.array(read_mapping(folder / names[4]))}


# --------------------------------------------------------------------------------------- CIFAR
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_FILES = CIFAR10_TRAIN + ["test_batch", "batches.meta"]
CIFAR100_FILES = ["train", "test", "meta"]


def read_pickle(path: Path, what: str = "CIFAR") -> dict:
    """One python-version CIFAR pickle (bytes keys, as the official release writes them)."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"{what} file missing: {path}; run the download stage") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"{what} file {path} cannot be unpickled ({err}); download it again") from None


def cifar_images(batches: list[dict]) -> np.ndarray:
    """Rows of R, G, B planes -> (N, 32, 32, 3) uint8."""
    data = np.concatenate([b[b"data"] for b in batches])                     # (N, 3072)
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), dtype=np.uint8)


def read_cifar10(folder: str | Path) -> dict[str, np.ndarray]:
    """x_train (50000, 32, 32, 3) uint8, y_train, x_test, y_test, classes from cifar-10-batches-py/."""
    folder = Path(folder)
    train = [read_pickle(folder / n, "CIFAR-10") for n in CIFAR10_TRAIN]
    test = read_pickle(folder / "test_batch", "CIFAR-10")
    classes = [c.decode() for c in read_pickle(folder / "batches.meta", "CIFAR-10")[b"label_names"]]
    return {"x_train": cifar_images(train), "y_train": np.concatenate([b[b"labels"] for b in train]).astype(np.int64),
            "x_test": cifar_images([test]), "y_test": np.asarray(test[b"labels"], dtype=np.int64),
            "classes": np.array(classes)}


def read_cifar100(folder: str | Path, label: str = "fine") -> dict[str, np.ndarray]:
    """cifar-100-python/: x_train (50000, 32, 32, 3) uint8, y_*, classes with the `fine` (100) or
    `coarse` (20 superclasses) labels."""
    if label not in ("fine", "coarse"):
        raise DataError(f"CIFAR-100 label {label!r}; valid choices: fine, coarse")
    folder = Path(folder)
    train, test = (read_pickle(folder / n, "CIFAR-100") for n in ("train", "test"))
    meta = read_pickle(folder / "meta", "CIFAR-100")
    key = f"{label}_labels".encode()
    return {"x_train": cifar_images([train]), "y_train": np.asarray(train[key], dtype=np.int64),
            "x_test": cifar_images([test]), "y_test": np.asarray(test[key], dtype=np.int64),
            "classes": np.array([c.decode() for c in meta[f"{label}_label_names".encode()]])}


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1), dtype=np.uint8)   # (N, 3072)


def write_cifar10(folder: str | Path, x_train, y_train, x_test, y_test, classes: list[str]) -> None:
    """The same pickles as the official python release (train split evenly over 5 batches)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name, x, y):
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": _cifar_rows(x),
                         b"filenames": [f"{i}.png".encode() for i in range(len(y))]}, f)

    for i, (xs, ys) in enumerate(zip(np.array_split(x_train, 5), np.array_split(y_train, 5)), 1):
        dump(f"data_batch_{i}", xs, ys)
    dump("test_batch", x_test, y_test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in classes], b"num_vis": 3072}, f)


def write_cifar100(folder: str | Path, x_train, fine_train, coarse_train, x_test, fine_test, coarse_test,
                   fine_names: list[str], coarse_names: list[str]) -> None:
    """cifar-100-python/{train, test, meta} with the official keys."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, fine, coarse in (("train", x_train, fine_train, coarse_train), ("test", x_test, fine_test, coarse_test)):
        with open(folder / name, "wb") as f:
            pickle.dump({b"filenames": [f"{i}.png".encode() for i in range(len(x))], b"batch_label": name.encode(),
                         b"fine_labels": [int(v) for v in fine], b"coarse_labels": [int(v) for v in coarse],
                         b"data": _cifar_rows(x)}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [c.encode() for c in fine_names],
                     b"coarse_label_names": [c.encode() for c in coarse_names]}, f)


# ------------------------------------------------------------------------------- tiny-ImageNet
def read_wnids(folder: Path) -> tuple[list[str], dict[str, str]]:
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().splitlines() if w.strip()]
    words = {}
    for line in (folder / "words.txt").read_text().splitlines():
        if "\t" in line:
            wnid, text = line.split("\t", 1)
            words[wnid] = text.strip()
    return wnids, words


def read_val_annotations(folder: Path) -> dict[str, str]:
    """val/val_annotations.txt: 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1' -> file -> wnid."""
    out = {}
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def load_rgb(path: Path, size: int = 64) -> np.ndarray:
    """JPEG -> (size, size, 3) uint8; greyscale (and CMYK) images are converted to RGB."""
    from PIL import Image
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def read_tinyimagenet(folder: str | Path, num_classes: int = 0, train_per_class: int = 0,
                      val_per_class: int = 0) -> dict[str, np.ndarray]:
    """tiny-imagenet-200/: x_train, y_train, x_val, y_val (the official, labelled val split),
    classes (first WordNet lemma) and wnids; 0 means all (classes, or images per class)."""
    folder = Path(folder)
    wnids, words = read_wnids(folder)
    wnids = wnids[:num_classes or None]
    index = {w: i for i, w in enumerate(wnids)}
    x_train, y_train = [], []
    for w in wnids:
        files = sorted((folder / "train" / w / "images").glob("*.JPEG"))
        if not files:
            raise DataError(f"no training images for {w} in {folder / 'train' / w / 'images'}")
        for f in files[:train_per_class or None]:
            x_train.append(load_rgb(f))
            y_train.append(index[w])
    x_val, y_val, kept = [], [], {w: 0 for w in wnids}
    for name, w in sorted(read_val_annotations(folder).items()):
        if w in index and (not val_per_class or kept[w] < val_per_class):
            x_val.append(load_rgb(folder / "val" / "images" / name))
            y_val.append(index[w])
            kept[w] += 1
    return {"x_train": np.stack(x_train), "y_train": np.array(y_train, np.int64), "x_val": np.stack(x_val),
            "y_val": np.array(y_val, np.int64), "classes": np.array([words.get(w, w).split(",")[0] for w in wnids]),
            "wnids": np.array(wnids)}


# -------------------------------------------------------------------------------------- digits
DIGITS_FILES = ["images.npy", "labels.npy"]


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as uint8 images (N, 8, 8) on 0..255 and int64 labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    # 0..16 ink levels -> 0..255 grey levels, the usual on-disk image range.
    return np.round(digits.images * (255 / 16)).astype(np.uint8), digits.target.astype(np.int64)


def read_digits(folder: str | Path) -> dict[str, np.ndarray]:
    """images.npy / labels.npy as staged by the digits download: x_train, y_train (the whole set;
    digits has no official test split) and classes 0..9."""
    folder = Path(folder)
    for name in DIGITS_FILES:
        if not (folder / name).exists():
            raise DataError(f"digits file missing: {folder / name}; run the download stage")
    images, labels = np.load(folder / "images.npy"), np.load(folder / "labels.npy").astype(np.int64)
    return {"x_train": images, "y_train": labels, "classes": np.array([str(c) for c in range(int(labels.max()) + 1)])}
