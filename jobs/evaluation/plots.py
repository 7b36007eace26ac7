"""Figures: training curves, confusion matrices, sample grids (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from safeio import atomic_path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_history(history: list[dict], path: Path, title: str, x: str = "epoch", held_out: str = "val") -> None:
    """Loss and accuracy per epoch (or step), train vs the held-out split."""
    plt = _plt()
    xs = [h[x] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(xs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(xs, [h[f"{held_out}_loss"] for h in history], "o-", label=held_out)
    ax_acc.plot(xs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(xs, [100 * h[f"{held_out}_acc"] for h in history], "o-", label=held_out)
    ax_loss.set(xlabel=x, ylabel="loss", title=f"{title}: loss")
    ax_acc.set(xlabel=x, ylabel="accuracy (%)", title=f"{title}: accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    _save(fig, path)


MANY_CLASSES = 20     # above this, a full matrix's labels and cells are unreadable at any sane size


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Up to MANY_CLASSES classes: the full matrix with counts. More (EMNIST's 62): a reduced view."""
    if len(classes) > MANY_CLASSES:
        return plot_confusion_reduced(cm, classes, path, title)
    plt = _plt()
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i, j in zip(*np.nonzero(cm)):
        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    _save(fig, path)


def char_group(name: str) -> str:
    return "digit" if name.isdigit() else "upper" if name.isupper() else "lower" if name.islower() else "other"


def confused_pairs(cm: np.ndarray, classes: list[str], top: int = 15) -> list[tuple[str, str, int]]:
    """The `top` largest off-diagonal cells as (true, predicted, count), largest first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:top]
    return [(classes[i], classes[j], int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j]]


def plot_confusion_reduced(cm: np.ndarray, classes: list[str], path: Path, title: str, top: int = 15) -> None:
    """Left: for character classes (EMNIST), confusions between the digit / upper / lower case
    blocks; for other names (one block), the `top` classes with the lowest recall. Right: the
    most-confused pairs."""
    plt = _plt()
    groups = [char_group(c) for c in classes]
    fig, (ax_left, ax_pairs) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 1.4]})
    if len(set(groups)) > 1:
        _plot_blocks(ax_left, cm, groups)
    else:
        _plot_lowest_recall(ax_left, cm, classes, top)
    pairs = confused_pairs(cm, classes, top)
    labels = [f"{t!r} -> {p!r}" for t, p, _ in pairs][::-1]
    ax_pairs.barh(range(len(pairs)), [n for _, _, n in pairs][::-1], color="tab:red")
    ax_pairs.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax_pairs.set(xlabel="images", title=f"{len(pairs)} most-confused pairs (true -> predicted)")
    fig.suptitle(title)
    _save(fig, path)


def _plot_blocks(ax, cm: np.ndarray, groups: list[str]) -> None:
    names = [g for g in ("digit", "upper", "lower", "other") if g in groups]
    index = np.array([names.index(g) for g in groups])
    block = np.zeros((len(names), len(names)))
    np.add.at(block, (index[:, None], index[None, :]), cm)                  # sum cells per (true, pred) block
    block_norm = block / np.maximum(block.sum(1, keepdims=True), 1)
    ax.imshow(block_norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{100 * block_norm[i, j]:.1f}%", ha="center", va="center", fontsize=9,
                    color="white" if block_norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="share of each true block")


def _plot_lowest_recall(ax, cm: np.ndarray, classes: list[str], top: int) -> None:
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    worst = np.argsort(recall, kind="stable")[:top][::-1]
    ax.barh(range(len(worst)), 100 * recall[worst], color="tab:blue")
    ax.set_yticks(range(len(worst)), [classes[i] for i in worst], fontsize=8)
    ax.set(xlabel="recall (%)", xlim=(0, 100), title=f"{len(worst)} classes with the lowest recall")


def plot_image_grid(images: np.ndarray, labels: list[str], path: Path, title: str, columns: int = 4) -> None:
    """Images (N, H, W, C) or (N, H, W), floats in [0, 1], in a grid with one label each."""
    plt = _plt()
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.1 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            image = images[i][..., 0] if images[i].ndim == 3 and images[i].shape[-1] == 1 else images[i]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(labels[i], fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    plt = _plt()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
