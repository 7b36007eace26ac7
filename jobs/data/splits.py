"""Splits of a data set read by jobs/data/formats.py: class subsets relabelled to contiguous ids,
and seeded, stratified train/val/test splits (jobs/data/files.py's stratified_split).

A data set comes as x_train/y_train and, where the release has a labelled held-out split,
x_test/y_test. `val: split` holds out `val_fraction` of the training set, stratified by class;
`val: test` uses the held-out split as validation (val and test are then the same images, so
model selection sees the test set: the log and report say so). A data set without a held-out
split (digits) first has `test_fraction` carved out, stratified. Caps per class
(`train_per_class`, ...) then keep a seeded random subset of each class in each split, so a quick
experiment on a big data set (tiny-ImageNet: 100 of 500 training images per class) stays balanced.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.data.files import DataError, stratified_split

SPLITS = ("train", "val", "test")


def class_subset(classes: list[str], keep: list[str], max_classes: int = 0) -> dict[int, int]:
    """{original_id: new_id} for the class names in `keep`, new ids in the order given (every
    class, in the data set's order, when `keep` is empty); then only the first `max_classes` of
    those (0 = all)."""
    ids = _named_classes(classes, keep) if keep else {i: i for i in range(len(classes))}
    if max_classes > len(ids):
        raise DataError(f"max_classes {max_classes} but only {len(ids)} classes are selected; "
                        f"use at most {len(ids)} (0 = all)")
    return dict(list(ids.items())[:max_classes or None])     # new ids stay 0..k-1: they follow this order


def _named_classes(classes: list[str], keep: list[str]) -> dict[int, int]:
    duplicates = sorted({k for k in keep if keep.count(k) > 1})
    if duplicates:
        raise DataError(f"classes lists {duplicates[0]!r} more than once")
    ids = {}
    for name in keep:
        hits = [i for i, c in enumerate(classes) if c == name]
        if not hits:
            shown = ", ".join(classes[:40]) + (f", ... ({len(classes)} in all)" if len(classes) > 40 else "")
            raise DataError(f"unknown class {name!r}; valid names: {shown}")
        if len(hits) > 1:
            raise DataError(f"class name {name!r} is ambiguous (ids {hits}) in this data set")
        ids[hits[0]] = len(ids)
    return ids


def relabel(x: np.ndarray, y: np.ndarray, id_map: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the images whose label is in id_map, with their new labels (order of images kept)."""
    lookup = np.full(max(int(y.max(initial=0)), max(id_map)) + 1, -1, dtype=np.int64)
    lookup[list(id_map)] = list(id_map.values())
    new = lookup[y]
    keep = new >= 0
    return x[keep], new[keep]


@dataclass
class SplitPlan:
    val_fraction: float = 0.1
    val: str = "split"              # "split" | "test" | "pooled"
    test_fraction: float = 0.15     # for data sets without a held-out split, and for val: pooled
    train_per_class: int = 0        # caps on each split's images per class; 0 = all
    val_per_class: int = 0
    test_per_class: int = 0

    def __post_init__(self):
        if self.val == "test" and self.val_per_class:
            raise DataError("val_per_class needs val: split (with val: test, val is the test split: "
                            "cap it with test_per_class)")

    def caps(self) -> dict[str, int]:
        """The caps that apply; with val: test, val is the test split and test_per_class caps both."""
        caps = {"train": self.train_per_class, "val": self.val_per_class, "test": self.test_per_class}
        return {s: n for s, n in caps.items() if n}

    def describe(self, held_out: str) -> str:
        """One sentence for the log and the report: where val and test come from, and the caps."""
        test = held_out or f"a seeded, stratified {100 * self.test_fraction:g}% of the data (no official test split)"
        if self.val == "pooled":
            return (f"train, val, test = a seeded, stratified {100 * (1 - self.val_fraction - self.test_fraction):g}/"
                    f"{100 * self.val_fraction:g}/{100 * self.test_fraction:g}% split of all the release's images "
                    f"(its own train/test division is not kept)" + self._caps_text())
        if self.val == "test":
            where = (f"val = test = {test}: the official held-out split is used as validation, so model "
                     f"selection sees the test images")
        else:
            where = f"val = a seeded, stratified {100 * self.val_fraction:g}% of the training set; test = {test}"
        return where + self._caps_text()

    def _caps_text(self) -> str:
        caps = ", ".join(f"{split} {n}" for split, n in self.caps().items())
        return f"; images per class capped at {caps} (a seeded random subset)" if caps else ""


def split_arrays(data: dict[str, np.ndarray], plan: SplitPlan, seed: int) -> dict[str, np.ndarray]:
    """x_/y_ train, val and test from x_train/y_train (+ x_test/y_test when the release has one)."""
    x, y = data["x_train"], data["y_train"]
    out = {}
    if plan.val == "pooled":      # every image of the release in one pool, then train/val/test from it
        if "x_test" in data:
            x, y = np.concatenate([x, data["x_test"]]), np.concatenate([y, data["y_test"]])
        fractions = {"train": 1 - plan.val_fraction - plan.test_fraction, "val": plan.val_fraction,
                     "test": plan.test_fraction}
    elif "x_test" in data:
        out["x_test"], out["y_test"] = data["x_test"], data["y_test"]
        fractions = {"train": 1.0} if plan.val == "test" else {"train": 1 - plan.val_fraction, "val": plan.val_fraction}
    elif plan.val == "test":
        fractions = {"train": 1 - plan.test_fraction, "test": plan.test_fraction}
    else:   # one three-way split, as digits_preprocess makes it (same seed, same split)
        fractions = {"train": 1 - plan.val_fraction - plan.test_fraction, "val": plan.val_fraction,
                     "test": plan.test_fraction}
    if fractions["train"] <= 0:
        raise DataError(f"val_fraction + test_fraction leave no training images ({fractions})")
    for name, idx in stratified_split(y, fractions, seed).items():
        out[f"x_{name}"], out[f"y_{name}"] = x[idx], y[idx]
    for name, n in plan.caps().items():     # before val = test is copied, so one cap holds for both
        idx = per_class_subset(out[f"y_{name}"], n, seed)
        out[f"x_{name}"], out[f"y_{name}"] = out[f"x_{name}"][idx], out[f"y_{name}"][idx]
    if plan.val == "test":
        out["x_val"], out["y_val"] = out["x_test"], out["y_test"]
    return {k: out[k] for k in (f"{a}_{s}" for s in SPLITS for a in "xy")}


def per_class_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n images of each class (all of a class that has fewer), drawn at random with
    the seed and returned in their original order."""
    rng = np.random.default_rng([seed, 1])   # a stream of its own: not the split's permutation again
    keep = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def to_grey(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, H, W) luminance (ITU-R BT.601 weights, as PIL's convert("L"));
    greyscale input is returned unchanged."""
    if x.ndim != 4:
        return x
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.round(x.astype(np.float32) @ weights), 0, 255).astype(np.uint8)


def mapping_tables(classes: list[str], id_map: dict[int, int]) -> tuple[dict[str, int], dict[str, int]]:
    """({original_id: new_id}, {name: new_id}) with JSON keys, in new-id order."""
    return ({str(old): new for old, new in id_map.items()}, {classes[old]: new for old, new in id_map.items()})
