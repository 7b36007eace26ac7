"""Stage kinds `export_onnx` (ONNX export with a parity check against eager PyTorch) and `tensorrt`
(an FP16 engine, GPU only; `skipped` with its reason elsewhere). The runtimes: jobs/deployment/runtimes.py."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.contract import StageContext, register
from safeio import atomic_path

from jobs.data.files import load_split
from jobs.deployment.quantize import val_inputs
from jobs.deployment.runtimes import ONNX_FILE, TensorRTRunner, onnx_parity, ort_session, tensorrt_unavailable


@dataclass
class ExportParams:
    head_stage: str = "head"
    data_stage: str = "preprocess"
    opset: int = field(default=18, metadata={"min": 13})
    max_abs_tolerance: float = field(default=1e-4, metadata={"min": 0.0})
    val_limit: int = field(default=256, metadata={"min": 0})


@register("export_onnx", ExportParams)
def export_onnx(p: ExportParams, ctx: StageContext) -> dict:
    import onnx
    import torch

    from jobs.training.trained import load_trained
    model, transform, meta, _ = load_trained(ctx.load_upstream, p.head_stage, ctx.log)
    size = meta["resolution"]
    path = ctx.out_dir / ONNX_FILE
    example = torch.randn(2, meta["model_channels"], size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(path) as tmp:
        torch.onnx.export(model, (example,), str(tmp), input_names=["pixels"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), opset_version=p.opset, dynamo=True, external_data=False,
                          verbose=False)
    onnx.checker.check_model(str(path))
    x, y = val_inputs(load_split(ctx.load_upstream, p.data_stage), transform, p.val_limit)
    parity = onnx_parity(model, path, x)
    if parity["max_abs_diff"] > p.max_abs_tolerance:
        raise RuntimeError(f"ONNX Runtime differs from eager by {parity['max_abs_diff']:.2e} "
                           f"(> {p.max_abs_tolerance:.0e}); the export is not faithful")
    ctx.log.info("ONNX parity on %d images: max |diff| %.2e, top-1 agreement %.4f, batch 1 and %d both ran",
                 len(x), parity["max_abs_diff"], parity["top1_agreement"], len(x))
    ctx.record(precision="fp32", total_samples=len(x))
    return {**parity, "onnx_file": path.name, "size_mb": path.stat().st_size / 2**20, "opset": p.opset}


@dataclass
class TensorRTParams:
    export_stage: str = "export_onnx"
    head_stage: str = field(default="head", metadata={"help": "the trained model: its input transform feeds the engine"})
    data_stage: str = "preprocess"
    fp16: bool = True
    batch_size: int = field(default=32, metadata={"min": 1})
    timed_iterations: int = field(default=50, metadata={"min": 1})
    val_limit: int = field(default=256, metadata={"min": 0})


@register("tensorrt", TensorRTParams)
def tensorrt_stage(p: TensorRTParams, ctx: StageContext) -> dict:
    """Build an engine from the ONNX file and time it; skipped (never faked) without GPU/TensorRT."""
    reason = tensorrt_unavailable()
    if reason:
        ctx.log.warning("tensorrt skipped: %s", reason)
        return {"status": "skipped", "skip_reason": reason}
    onnx_path = ctx.need(p.export_stage) / ONNX_FILE
    engine_path = ctx.out_dir / "model.plan"
    from jobs.training.trained import load_trained
    _, transform, _, _ = load_trained(ctx.load_upstream, p.head_stage, ctx.log)
    x, _ = val_inputs(load_split(ctx.load_upstream, p.data_stage), transform, p.val_limit)
    runner = TensorRTRunner.build(onnx_path, engine_path, p.fp16, max_batch=max(p.batch_size, len(x)))
    ort_logits = ort_session(onnx_path).run(None, {"pixels": x.numpy()})[0]
    trt_logits = runner(x).float().cpu().numpy()
    timing = runner.time(x[:1], p.timed_iterations), runner.time(x[:p.batch_size], p.timed_iterations)
    ctx.record(precision="fp16" if p.fp16 else "fp32", device="cuda", num_devices=1)
    return {"engine_file": engine_path.name, "size_mb": engine_path.stat().st_size / 2**20,
            "max_abs_diff_vs_ort": float(np.abs(trt_logits - ort_logits).max()),
            "top1_agreement_vs_ort": float((trt_logits.argmax(1) == ort_logits.argmax(1)).mean()),
            "latency_b1_p50_ms": timing[0]["p50_ms"], "latency_b1_p90_ms": timing[0]["p90_ms"],
            "throughput_per_s": p.batch_size / (timing[1]["p50_ms"] / 1e3)}


