"""Figures: training curves and confusion matrices (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.state import atomic_path


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


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Small label sets: the full matrix. Many (EMNIST's 62): a reduced, readable view."""
    if len(classes) > 20:
        return plot_confusion_reduced(cm, classes, path, title)
    plt = _plt()
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    _save(fig, path)


def char_group(name: str) -> str:
    return "digit" if name.isdigit() else "upper" if name.isupper() else "lower" if name.islower() else "other"


def plot_confusion_reduced(cm: np.ndarray, classes: list[str], path: Path, title: str, top: int = 15) -> None:
    """Left: confusions between digits / upper / lower case blocks. Right: the most-confused pairs."""
    plt = _plt()
    groups = [char_group(c) for c in classes]
    names = [g for g in ("digit", "upper", "lower", "other") if g in groups]
    block = np.zeros((len(names), len(names)))
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            block[names.index(gi), names.index(gj)] += cm[i, j]
    block_norm = block / np.maximum(block.sum(1, keepdims=True), 1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    pairs = [(classes[i], classes[j], int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j]]
    fig, (ax_block, ax_pairs) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 1.4]})
    ax_block.imshow(block_norm, cmap="Blues", vmin=0, vmax=1)
    ax_block.set_xticks(range(len(names)), names)
    ax_block.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax_block.text(j, i, f"{100 * block_norm[i, j]:.1f}%", ha="center", va="center", fontsize=9,
                          color="white" if block_norm[i, j] > 0.5 else "black")
    ax_block.set(xlabel="predicted", ylabel="true", title="share of each true block")
    labels = [f"{t!r} -> {p!r}" for t, p, _ in pairs][::-1]
    ax_pairs.barh(range(len(pairs)), [n for _, _, n in pairs][::-1], color="tab:red")
    ax_pairs.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax_pairs.set(xlabel="test images", title=f"{len(pairs)} most-confused pairs (true -> predicted)")
    fig.suptitle(title)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    plt = _plt()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
