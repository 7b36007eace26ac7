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
    """Row-normalised confusion matrix; cell counts printed when the matrix is small."""
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


def _save(fig, path: Path) -> None:
    plt = _plt()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
