"""Dynamic int8 quantization of a trained classifier, and the small measurements the deployment
stages share: predictions in batches, median forward time, weights' size as saved."""
from __future__ import annotations

import copy
import time

import numpy as np


def state_dict_bytes(model) -> int:
    """Size of the model's weights as a saved state dict: what each variant's file would weigh."""
    import io

    import torch
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def quantize_model(model, method: str):
    """Dynamic int8 quantization of the Linear layers (weights int8, activations per batch)."""
    import torch
    q = copy.deepcopy(model).eval()
    if method == "torch_ao":
        # Deprecated in torch 2.14 in favour of torchao, still shipped and measured here.
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(q, {torch.nn.Linear}, dtype=torch.qint8)
    if method == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        quantize_(q, Int8DynamicActivationInt8WeightConfig())
        return q
    raise ValueError(f"unknown quantization method {method!r}; valid choices: torch_ao, torchao")


def val_inputs(arrays: dict[str, np.ndarray], transform, limit: int = 0):
    """The validation images of a split (jobs/data/files.py) as the model's input (N, C, R, R),
    made by the transform it was trained with, and their labels; the first `limit` (0 = all)."""
    import torch
    x, y = arrays["x_val"], arrays["y_val"]
    if limit:
        x, y = x[:limit], y[:limit]
    with torch.no_grad():
        inputs = torch.cat([transform(torch.from_numpy(x[i:i + 256]), False) for i in range(0, len(x), 256)])
    return inputs, torch.from_numpy(y)


def predict(model, x, batch: int = 64):
    import torch
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def time_batches(model, x, iterations: int, warmup: int = 2) -> float:
    """Median seconds per forward of batch x."""
    import torch
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return float(np.median(times))
