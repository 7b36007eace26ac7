"""A model against a baseline scored on the same images: the paired accuracy difference and its
standard error, the train - val accuracy gap per epoch of each, and next steps chosen from those
numbers (for a report; no number here is typed in)."""
from __future__ import annotations

import math

import numpy as np

from safeio.markdown import markdown_table

# A last-epoch train - val accuracy gap above this reads as overfitting. 5 points: on the
# fixture-to-CIFAR scale runs here, healthy runs end within 1-3 points (underfitting runs below 0).
OVERFIT_GAP = 0.05
# Val accuracy at or above this leaves nothing to compare (a fixture, or too few val images).
SATURATED = 0.995
# A difference within this many standard errors of 0 is not told apart from seed noise (~95%).
NOISE_SE = 2.0


def paired_difference(correct: np.ndarray, baseline_correct: np.ndarray) -> dict:
    """Accuracy of a minus accuracy of b on the same images, with the standard error of the mean
    of the per-image differences (a paired test: images both get right or wrong cancel out)."""
    d = correct.astype(float) - baseline_correct.astype(float)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"delta": float(d.mean()), "se": se, "only_model_right": int((d > 0).sum()),
            "only_baseline_right": int((d < 0).sum()), "n_images": int(len(d))}


def next_steps(model: str, baseline: str, diff: dict, curves: dict[str, dict[str, list[float]]]) -> list[str]:
    """Sentences from the measured numbers: is the difference beyond noise, and does each model
    over- or underfit (`curves[stage]` holds `train_val_gap` and `val_acc` per epoch)."""
    delta, se = diff["delta"], diff["se"]
    if not abs(delta) > NOISE_SE * se:
        steps = [f"`{model}` vs `{baseline}`: {100 * delta:+.2f} points is within {NOISE_SE:g} standard errors "
                 f"({100 * NOISE_SE * se:.2f} points): rerun both with other seeds or score more images before "
                 f"drawing a conclusion"]
    else:
        steps = [f"`{model}` vs `{baseline}`: {100 * delta:+.2f} points is beyond {NOISE_SE:g} standard errors: "
                 f"`{model}` is {'better' if delta > 0 else 'worse'} here; confirm on the test split"]
    for stage, curve in curves.items():
        gap, val = curve.get("train_val_gap") or [], curve.get("val_acc") or []
        if not gap:
            continue
        if val and val[-1] >= SATURATED:
            steps.append(f"`{stage}` reached {100 * val[-1]:.1f}% val accuracy: these images no longer tell models "
                         "apart; score a larger or harder split")
        elif gap[-1] > OVERFIT_GAP:
            steps.append(f"`{stage}` overfits (train - val {100 * gap[-1]:+.1f} points at its last epoch): "
                         "stronger augmentation, more weight decay or early stopping")
        elif len(val) > 1 and val[-1] > max(val[:-1]):
            steps.append(f"`{stage}` still improved in its last epoch (val {100 * val[-1]:.1f}%) with a gap of "
                         f"{100 * gap[-1]:+.1f} points: it underfits; train longer or at a higher resolution")
        else:
            steps.append(f"`{stage}` levelled off (val {100 * max(val):.1f}% at best) with a gap of "
                         f"{100 * gap[-1]:+.1f} points: a larger model or pretrained weights")
    return steps


def gap_table(curves: dict[str, dict[str, list[float]]]) -> str:
    """Markdown: epoch, then train - val accuracy (points) of each stage."""
    stages = [s for s in curves if curves[s].get("train_val_gap")]
    if not stages:
        return ""
    epochs = max(len(curves[s]["train_val_gap"]) for s in stages)
    rows = [[e + 1] + [f"{100 * curves[s]['train_val_gap'][e]:+.1f}" if e < len(curves[s]["train_val_gap"]) else ""
                       for s in stages] for e in range(epochs)]
    return markdown_table(rows, ["epoch"] + [f"`{s}` train - val (points)" for s in stages])
