"""Deployment stages on a classifier trained by the `train` kind (any registry model; the deploy
experiment: a frozen DINOv2 ViT-S/14 with a linear head): int8 quantization here, ONNX export and
a TensorRT engine (deploy_export.py), one benchmark comparing them (deploy_benchmark.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.contract import StageContext, register
from safeio import atomic_write_json

from jobs.data.files import load_split
from jobs.deployment.quantize import predict, quantize_model, state_dict_bytes, time_batches, val_inputs


@dataclass
class QuantizeParams:
    method: Literal["auto", "torch_ao", "torchao"] = field(
        default="auto", metadata={"help": "auto: the faster measured method that keeps >= min_agreement"})
    head_stage: str = field(default="head", metadata={"help": "the `train` stage whose best.pt is quantized"})
    data_stage: str = "preprocess"
    min_agreement: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    batch_size: int = field(default=8, metadata={"min": 1})
    threads: int = field(default=2, metadata={"min": 1})
    timed_iterations: int = field(default=5, metadata={"min": 1})
    val_limit: int = field(default=0, metadata={"min": 0, "help": "0 = every val image"})


@register("quantize", QuantizeParams)
def quantize(p: QuantizeParams, ctx: StageContext) -> dict:
    import torch

    from jobs.training.trained import load_trained
    torch.set_num_threads(p.threads)
    model, transform, _, _ = load_trained(ctx.load_upstream, p.head_stage, ctx.log)
    x, y = val_inputs(load_split(ctx.load_upstream, p.data_stage), transform, p.val_limit)
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
            "fp32_size_mb": state_dict_bytes(model) / 2**20,
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


