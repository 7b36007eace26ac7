"""Deployment stages: a linear head on a frozen ViT, int8 quantization, ONNX export, a TensorRT
engine, and one benchmark comparing them (latency, throughput, size, accuracy, agreement)."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.registry import StageContext, register
from pipeline.state import atomic_write_json

from jobs.data.files import load_arrays
from jobs.training.loop import TrainParams


def val_pixels(ctx: StageContext, data_stage: str, size: int, limit: int = 0):
    """Validation images as model input (N, 3, size, size) and labels."""
    import torch

    from jobs.deployment.vit import pixels
    arrays = load_arrays(ctx.need(data_stage) / "split.npz", data_stage)
    x, y = arrays["x_val"], arrays["y_val"]
    if limit:
        x, y = x[:limit], y[:limit]
    return torch.cat([pixels(torch.from_numpy(x[i:i + 256]), size) for i in range(0, len(x), 256)]), \
        torch.from_numpy(y)


@dataclass
class HeadParams(TrainParams):
    download_stage: str = "download"
    data_stage: str = "preprocess"
    feature_batch_size: int = field(default=64, metadata={"min": 1})


@register("vit_head", HeadParams)
def head(p: HeadParams, ctx: StageContext) -> dict:
    """Frozen backbone; fp32 CLS features once; a linear head trained by the shared loop."""
    import torch

    from jobs.models.registry import count_params
    from jobs.training.loop import environment_summary, fit, seed_everything
    from jobs.training.transforms import identity
    from jobs.deployment.vit import Classifier, build_backbone, pixels, save_classifier

    seed_everything(ctx.seed, ctx.log)
    ctx.log.info("environment: %s", environment_summary())
    meta = json.loads((ctx.need(p.download_stage) / "metrics.json").read_text())["model"]
    backbone = build_backbone(meta, ctx.cache_dir)
    arrays = load_arrays(ctx.need(p.data_stage) / "split.npz", p.data_stage)
    classes = [str(c) for c in arrays["classes"]]
    started = time.perf_counter()
    feats = {}
    with torch.no_grad():
        for split in ("train", "val"):
            x, step = arrays[f"x_{split}"], p.feature_batch_size
            feats[f"x_{split}"] = torch.cat([backbone(pixels(torch.from_numpy(x[i:i + step]), meta["img_size"]))
                                             for i in range(0, len(x), step)])
    ctx.log.info("CLS features %s in %.1f s", tuple(feats["x_train"].shape), time.perf_counter() - started)
    linear = torch.nn.Linear(feats["x_train"].shape[1], len(classes))
    data = {**feats, "y_train": torch.from_numpy(arrays["y_train"]), "y_val": torch.from_numpy(arrays["y_val"])}
    run_state = fit(linear, data, identity, p, ctx)
    linear.load_state_dict(torch.load(ctx.out_dir / "best.pt", weights_only=False)["model"])
    model = Classifier(backbone, linear)
    save_classifier(ctx.out_dir / "model.pt", model, meta, classes)
    trainable, total = count_params(linear)[0], count_params(model)[1]
    n = len(data["y_train"])
    ctx.record(epochs=len(run_state["history"]), samples_per_epoch=n, total_samples=n * len(run_state["history"]),
               trainable_params=trainable, total_params=total, precision="fp32",
               throughput_per_s=round(n * len(run_state["history"]) / (time.perf_counter() - started), 1))
    return {"val_acc": run_state["best_acc"], "best_epoch": run_state["best_epoch"], "feature_dim": linear.in_features}


@dataclass
class QuantizeParams:
    method: Literal["auto", "torch_ao", "torchao"] = field(
        default="auto", metadata={"help": "auto: the faster measured method that keeps >= min_agreement"})
    head_stage: str = "head"
    data_stage: str = "preprocess"
    min_agreement: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    batch_size: int = field(default=8, metadata={"min": 1})
    threads: int = field(default=2, metadata={"min": 1})
    timed_iterations: int = field(default=5, metadata={"min": 1})
    val_limit: int = field(default=0, metadata={"min": 0, "help": "0 = every val image"})


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


def predict(model, x, batch: int = 64):
    import torch
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


@register("quantize", QuantizeParams)
def quantize(p: QuantizeParams, ctx: StageContext) -> dict:
    import torch

    from jobs.deployment.vit import load_classifier
    torch.set_num_threads(p.threads)
    model, saved = load_classifier(ctx.need(p.head_stage) / "model.pt", ctx.cache_dir)
    x, y = val_pixels(ctx, p.data_stage, saved["meta"]["img_size"], p.val_limit)
    ref = predict(model, x).argmax(1)
    bench_x = x[:p.batch_size] if len(x) >= p.batch_size else x.repeat(p.batch_size, 1, 1, 1)[:p.batch_size]
    fp32_s = time_batches(model, bench_x, p.timed_iterations)
    results = {}
    for method in ("torch_ao", "torchao"):
        try:
            q = quantize_model(model, method)
        except ImportError as err:
            results[method] = {"available": False, "reason": f"{err}"}
            continue
        pred = predict(q, x).argmax(1)
        path = ctx.out_dir / f"model_int8_{method}.pt"
        _save_module(path, q)
        seconds = time_batches(q, bench_x, p.timed_iterations)
        results[method] = {"available": True, "top1": float((pred == y).float().mean()),
                           "agreement_with_fp32": float((pred == ref).float().mean()),
                           "latency_batch_s": seconds, "speedup_vs_fp32": fp32_s / seconds,
                           "size_mb": path.stat().st_size / 2**20, "file": path.name}
        ctx.log.info("%s: top-1 %.3f, agreement %.3f, %.2fx faster than fp32 at batch %d, %.1f MB", method,
                     results[method]["top1"], results[method]["agreement_with_fp32"],
                     results[method]["speedup_vs_fp32"], p.batch_size, results[method]["size_mb"])
    chosen = choose_method(p, results)
    atomic_write_json(ctx.out_dir / "methods.json", results)
    ctx.record(precision="int8-dynamic", total_samples=len(y), trainable_params=0)
    return {"method": chosen, "methods": results, "fp32_latency_batch_s": fp32_s,
            "val_acc": results[chosen]["top1"], "agreement_with_fp32": results[chosen]["agreement_with_fp32"]}


def choose_method(p: QuantizeParams, results: dict) -> str:
    if p.method != "auto":
        if not results.get(p.method, {}).get("available"):
            raise RuntimeError(f"quantization method {p.method!r} is not available: {results[p.method]['reason']}")
        return p.method
    ok = [m for m, r in results.items() if r.get("available") and r["agreement_with_fp32"] >= p.min_agreement]
    candidates = ok or [m for m, r in results.items() if r.get("available")]
    return min(candidates, key=lambda m: results[m]["latency_batch_s"])


def _save_module(path: Path, module) -> None:
    """The quantized state dict: its packed int8 weights are what is measured on disk."""
    from jobs.training.loop import save_atomic
    save_atomic(path, module.state_dict())


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
