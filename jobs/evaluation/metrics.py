"""Scores of a classifier from its class probabilities, and ensembles of several classifiers.

Pure functions on arrays (and one on a model), so each is testable without a stage:
predict_proba (batched, optional flip TTA), score (accuracy, macro P/R/F1, per class, confusion,
sklearn's classification report), soft_vote and val_weighted_vote.
"""
from __future__ import annotations

import numpy as np
import torch


@torch.inference_mode()
def predict_proba(model: torch.nn.Module, x, transform, device, batch_size: int, flip: bool = False) -> np.ndarray:
    """Softmax probabilities (N, C) of `model` (eval mode, moved to `device`) on uint8 images `x`
    (numpy or torch, (N, H, W) or (N, H, W, 3)), `batch_size` images at a time.
    flip: horizontal-flip test-time augmentation, the mean of the softmax of each image and of its
    mirror (flipped after the transform, so the mirror is exactly the model's input reversed in x)."""
    if len(x) == 0:
        raise ValueError("predict_proba: no images to predict (an empty split)")
    model.eval().to(device)
    out = []
    for start in range(0, len(x), batch_size):
        batch = torch.as_tensor(x[start:start + batch_size]).to(device)
        inputs = transform(batch, False)                                     # (B, C, H, W) float
        probs = model(inputs).float().softmax(1)                             # (B, classes)
        if flip:
            probs = (probs + model(inputs.flip(-1)).float().softmax(1)) / 2
        out.append(probs.cpu())
    return torch.cat(out).numpy()


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(1) == y).mean())


def score(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Everything reported for one row: accuracy, macro precision/recall/F1 over all `classes`
    (a class absent from y counts as 0, sklearn's zero_division=0), the mean negative
    log-likelihood, per-class arrays, the confusion matrix (rows true, columns predicted) and
    sklearn's classification report with the class names."""
    from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support
    if probs.shape != (len(y), len(classes)):
        raise ValueError(f"score: probabilities of shape {probs.shape} do not fit {len(y)} labels "
                         f"and {len(classes)} classes")
    pred, labels = probs.argmax(1), list(range(len(classes)))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    nll = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean()
    return {"accuracy": float((pred == y).mean()), "macro_precision": float(prec.mean()),
            "macro_recall": float(rec.mean()), "macro_f1": float(f1.mean()), "loss": float(nll),
            "n_images": int(len(y)), "per_class": {"precision": prec, "recall": rec, "f1": f1, "support": support},
            "confusion": confusion_matrix(y, pred, labels=labels),
            "report": classification_report(y, pred, labels=labels, target_names=classes, digits=4,
                                             zero_division=0)}


def soft_vote(member_probs: list[np.ndarray]) -> np.ndarray:
    """Soft voting: the mean of the members' probabilities (N, C)."""
    return np.mean(np.stack(member_probs), axis=0)


def val_weights(val_accs: list[float]) -> np.ndarray:
    """Each member's weight: its validation accuracy over the sum of them all (sums to 1). The
    accuracies are measured on the val split (by the evaluate stage), never on the split scored."""
    acc = np.asarray(val_accs, dtype=float)
    if acc.sum() <= 0:
        raise ValueError("val_weighted ensemble: every member has validation accuracy 0, so no weights")
    return acc / acc.sum()


def val_weighted_vote(member_probs: list[np.ndarray], val_accs: list[float]) -> np.ndarray:
    """Validation-weighted voting: sum_i w_i p_i with w = val_weights(val_accs)."""
    return np.tensordot(val_weights(val_accs), np.stack(member_probs), axes=1)    # (N, C)
