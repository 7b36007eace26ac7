"""Numerical gradients for the hand-written backward passes (jobs/scratch/): float64 central
differences, on NumPy arrays and torch tensors alike."""
from __future__ import annotations

import numpy as np


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def rel_error(a, b) -> float:
    """|a - b| / max(|a|, |b|), in the Frobenius norm (0 for two zero arrays)."""
    a, b = _numpy(a).astype(np.float64), _numpy(b).astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-12))


def numeric_grad(f, values, eps: float = 1e-6):
    """d f() / d values by central differences, element by element; `values` (a float64 array or
    tensor that f reads) is changed in place and restored. The gradient has its type and shape."""
    grad = values.copy() if isinstance(values, np.ndarray) else values.clone()
    for i in np.ndindex(*values.shape):
        old = float(values[i])
        values[i] = old + eps
        plus = f()
        values[i] = old - eps
        minus = f()
        values[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad
