"""Data sets written by tests in the official on-disk formats (no download possible here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.data.formats import write_cifar10, write_idx


def digits_28px() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's real 8x8 handwritten digits, scaled to 24x24 and padded to MNIST's 28x28."""
    from sklearn.datasets import load_digits
    d = load_digits()
    img = np.kron(d.images, np.ones((3, 3))) * (255 / 16)                  # (N, 24, 24)
    return np.pad(img, ((0, 0), (2, 2), (2, 2))).round().astype(np.uint8), d.target.astype(np.uint8)


def write_mnist(data_dir: Path, n_test: int = 300, gz: bool = True) -> dict:
    """data_dir/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], as torchvision leaves them."""
    x, y = digits_28px()
    order = np.random.default_rng(0).permutation(len(y))   # the digits file is ordered by writer group
    x, y = x[order], y[order]
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


# EMNIST ByClass's label order: 10 digits, 26 upper case, 26 lower case letters.
EMNIST_BYCLASS = [str(d) for d in range(10)] + [chr(c) for c in range(65, 91)] + [chr(c) for c in range(97, 123)]
L_GLYPH = np.zeros((28, 28), np.uint8)
L_GLYPH[4:24, 6:10] = 255      # the upright stem of an "L" ...
L_GLYPH[20:24, 6:22] = 255     # ... and its foot: not symmetric under a transpose


def class_glyphs(n_classes: int, seed: int = 0) -> np.ndarray:
    """One distinct glyph per class: three random strokes on a 28x28 canvas."""
    rng = np.random.default_rng(seed)
    glyphs = np.zeros((n_classes, 28, 28), np.float32)
    for g in glyphs:
        for _ in range(3):
            r, c = rng.integers(3, 19, 2)
            h, w = (rng.integers(2, 5), rng.integers(8, 14)) if rng.random() < 0.5 else (rng.integers(8, 14), rng.integers(2, 5))
            g[r:r + h, c:c + w] = 255
    return glyphs


def write_emnist(data_dir: Path, split: str = "byclass", per_class_train: int = 12, per_class_test: int = 3,
                 seed: int = 0) -> dict:
    """NIST's gzip release layout for one split, images stored transposed as EMNIST does.
    The first test image of class 0 is an upright "L" (to check the orientation fix)."""
    classes = EMNIST_BYCLASS
    glyphs = class_glyphs(len(classes), seed)
    rng = np.random.default_rng(seed + 1)

    def make(per_class):
        y = np.repeat(np.arange(len(classes)), per_class)
        x = np.stack([np.roll(glyphs[c], tuple(rng.integers(-2, 3, 2)), (0, 1)) for c in y])
        x = np.clip(x + rng.normal(0, 25, x.shape), 0, 255).astype(np.uint8)
        order = rng.permutation(len(y))
        return x[order], y[order].astype(np.uint8)
    x_train, y_train = make(per_class_train)
    x_test, y_test = make(per_class_test)
    first0 = int(np.flatnonzero(y_test == 0)[0])
    x_test[first0] = L_GLYPH
    folder = Path(data_dir) / "EMNIST" / "gzip"
    folder.mkdir(parents=True, exist_ok=True)
    stored = {"train-images-idx3": x_train.transpose(0, 2, 1), "train-labels-idx1": y_train,
              "test-images-idx3": x_test.transpose(0, 2, 1), "test-labels-idx1": y_test}
    for part, arr in stored.items():
        write_idx(folder / f"emnist-{split}-{part}-ubyte.gz", arr)
    (folder / f"emnist-{split}-mapping.txt").write_text("".join(f"{i} {ord(c)}\n" for i, c in enumerate(classes)))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "l_index": first0}


def write_random_resnet18(path: Path, seed: int = 0, calibrate: np.ndarray | None = None,
                          resolution: int = 32) -> Path:
    """A randomly initialised ResNet-18 checkpoint, standing in for the ImageNet weights.

    With `calibrate` (uint8 glyphs), BatchNorm running statistics are set from those images, as a
    trained network's are from its data; otherwise they keep their init values (0 and 1), and a
    stage that unfreezes BatchNorm sees its activations shift."""
    import torch
    from torchvision.models import resnet18

    from jobs.training.transforms import BatchTransform
    torch.manual_seed(seed)
    prepare = BatchTransform(1, 3, resolution, 28, "imagenet")     # what kind `train` feeds EMNIST glyphs
    model = resnet18(weights=None)
    if calibrate is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None          # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for start in range(0, len(calibrate), 128):
                model(prepare(torch.from_numpy(calibrate[start:start + 128]), False))
    torch.save(model.state_dict(), path)
    return path


def write_tiny_imagenet(data_dir: Path, wnids=("n01443537", "n01629819", "n01641577"), train_per_class: int = 10,
                        val_per_class: int = 4, seed: int = 0) -> dict:
    """tiny-imagenet-200/ as the official zip lays it out, with generated 64x64 JPEGs (one of
    them greyscale) whose classes differ by colour and a bright square's position."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "tiny-imagenet-200"
    colours = rng.uniform(30, 225, size=(len(wnids), 3))

    def image(c: int) -> np.ndarray:
        x = rng.normal(0, 20, (64, 64, 3)) + colours[c]
        r = 8 + 16 * c
        x[r:r + 14, r:r + 14] += 90
        return np.clip(x, 0, 255).astype(np.uint8)
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    (root / "test" / "images").mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    names = ["goldfish, Carassius auratus", "European fire salamander, Salamandra salamandra", "bullfrog, Rana catesbeiana"]
    (root / "words.txt").write_text("n00001740\tentity\n" + "".join(f"{w}\t{n}\n" for w, n in zip(wnids, names)))
    for c, w in enumerate(wnids):
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        for i in range(train_per_class):
            img = Image.fromarray(image(c))
            if c == 0 and i == 0:
                img = img.convert("L")          # tiny-ImageNet has some greyscale JPEGs
            img.save(folder / f"{w}_{i}.JPEG", quality=95)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
    annotations, labels = [], {}
    order = rng.permutation(len(wnids) * val_per_class)
    for k, idx in enumerate(order):
        c = int(idx) // val_per_class
        name = f"val_{k}.JPEG"
        Image.fromarray(image(c)).save(root / "val" / "images" / name, quality=95)
        annotations.append(f"{name}\t{wnids[c]}\t0\t0\t63\t63\n")
        labels[name] = wnids[c]
    (root / "val" / "val_annotations.txt").write_text("".join(annotations))
    Image.fromarray(image(0)).save(root / "test" / "images" / "test_0.JPEG")
    return {"root": root, "val_labels": labels, "wnids": list(wnids)}


def write_cifar10_three(root: Path, per_class_train: int = 100, per_class_test: int = 40, per_other: int = 20,
                        seed: int = 0) -> dict:
    """cifar-10-batches-py/ under root, 32x32x3: airplane (0), cat (3) and dog (5) with
    per_class_train/per_class_test images each, plus per_other (half as many in test) of bird (2)
    and truck (9), which a `classes: [cat, dog, airplane]` subset must drop. Each image is one of
    scikit-learn's real 8x8 digits (0, 1, 2, 3, 4 by class; scaled to 24x24, centred) drawn in a
    class colour over noise: real strokes, separable in colour and in grey."""
    from sklearn.datasets import load_digits
    d = load_digits()
    rng = np.random.default_rng(seed)
    source = {0: 0, 3: 1, 5: 2, 2: 3, 9: 4}                      # CIFAR class -> digit drawn
    tint = {0: (1.0, 0.6, 0.3), 3: (0.3, 1.0, 0.6), 5: (0.6, 0.3, 1.0), 2: (0.8, 0.8, 0.8), 9: (1.0, 1.0, 0.2)}

    def make(per_class, pool_offset):
        xs, ys = [], []
        for cls, digit in source.items():
            n = per_class if cls in (0, 3, 5) else per_other // (1 + pool_offset)
            pool = np.flatnonzero(d.target == digit)[pool_offset::2]   # train and test: disjoint writers' images
            for i in rng.choice(pool, n, replace=len(pool) < n):
                glyph = np.kron(d.images[i], np.ones((3, 3))) / 16                      # (24, 24) in 0..1
                img = rng.normal(40, 15, (32, 32, 3))
                img[4:28, 4:28] += glyph[..., None] * 180 * np.array(tint[cls])
                xs.append(np.clip(img, 0, 255).astype(np.uint8))
                ys.append(cls)
        order = rng.permutation(len(ys))
        return np.stack(xs)[order], np.array(ys)[order]
    x_train, y_train = make(per_class_train, 0)
    x_test, y_test = make(per_class_test, 1)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_cifar10(Path(root) / "cifar-10-batches-py", x_train, y_train, x_test, y_test, classes)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "classes": classes}


# CIFAR-100's 20 superclasses, and 5 fine classes each (the release's fine ids are alphabetical;
# these fixture fine names are the release's own, grouped by superclass).
CIFAR100_COARSE = ["aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
                   "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
                   "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
                   "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
                   "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"]


def write_cifar100_like(root: Path, per_fine_train: int = 3, per_fine_test: int = 1, seed: int = 0) -> dict:
    """cifar-100-python/{train, test, meta} under root: 100 fine classes (fine id f belongs to
    superclass f // 5 here), random images whose mean colour encodes the fine class."""
    from jobs.data.formats import write_cifar100
    rng = np.random.default_rng(seed)
    fine_names = [f"fine_{c:02d}" for c in range(100)]

    def make(per):
        fine = rng.permutation(np.repeat(np.arange(100), per))
        x = np.clip(rng.normal(0, 10, (len(fine), 32, 32, 3)) + (fine * 2.5)[:, None, None, None], 0, 255)
        return x.astype(np.uint8), fine, fine // 5
    x_train, fine_train, coarse_train = make(per_fine_train)
    x_test, fine_test, coarse_test = make(per_fine_test)
    write_cifar100(Path(root) / "cifar-100-python", x_train, fine_train, coarse_train, x_test, fine_test, coarse_test,
                   fine_names, CIFAR100_COARSE)
    return {"x_train": x_train, "fine_train": fine_train, "coarse_train": coarse_train, "x_test": x_test,
            "fine_test": fine_test, "coarse_test": coarse_test, "fine_names": fine_names}
