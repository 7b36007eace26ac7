"""ONNX export with a parity check, a TensorRT FP16 engine (GPU only), and the deployment
benchmark that compares every variant side by side."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.registry import StageContext, register
from pipeline.state import atomic_path

from jobs.stages.deploy import predict, val_pixels


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

    from jobs.deployment.vit import load_classifier
    model, saved = load_classifier(ctx.need(p.head_stage) / "model.pt", ctx.cache_dir)
    size = saved["meta"]["img_size"]
    path = ctx.out_dir / "model.onnx"
    example = torch.randn(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(path) as tmp:
        torch.onnx.export(model, (example,), str(tmp), input_names=["pixels"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), opset_version=p.opset, dynamo=True, external_data=False,
                          verbose=False)
    onnx.checker.check_model(str(path))
    x, y = val_pixels(ctx, p.data_stage, size, p.val_limit)
    parity = onnx_parity(model, path, x)
    if parity["max_abs_diff"] > p.max_abs_tolerance:
        raise RuntimeError(f"ONNX Runtime differs from eager by {parity['max_abs_diff']:.2e} "
                           f"(> {p.max_abs_tolerance:.0e}); the export is not faithful")
    ctx.log.info("ONNX parity on %d images: max |diff| %.2e, top-1 agreement %.4f, batch 1 and %d both ran",
                 len(x), parity["max_abs_diff"], parity["top1_agreement"], len(x))
    ctx.record(precision="fp32", total_samples=len(x))
    return {**parity, "onnx_file": path.name, "size_mb": path.stat().st_size / 2**20, "opset": p.opset}


def ort_session(path: Path, threads: int = 2):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_parity(model, path: Path, x) -> dict:
    """Eager fp32 vs ONNX Runtime on the same inputs, at batch 1 and at the full batch."""
    eager = predict(model, x).numpy()
    session = ort_session(path)
    ort_out = session.run(None, {"pixels": x.numpy()})[0]
    single = session.run(None, {"pixels": x[:1].numpy()})[0]
    return {"max_abs_diff": float(np.abs(ort_out - eager).max()),
            "max_abs_diff_batch1": float(np.abs(single - eager[:1]).max()),
            "top1_agreement": float((ort_out.argmax(1) == eager.argmax(1)).mean()), "parity_images": len(x)}


@dataclass
class TensorRTParams:
    export_stage: str = "export_onnx"
    data_stage: str = "preprocess"
    fp16: bool = True
    batch_size: int = field(default=32, metadata={"min": 1})
    timed_iterations: int = field(default=50, metadata={"min": 1})
    val_limit: int = field(default=256, metadata={"min": 0})


def tensorrt_unavailable() -> str | None:
    import torch
    if not torch.cuda.is_available():
        return "no CUDA device visible (TensorRT needs an NVIDIA GPU)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the TensorRT Python package is not installed (pip install tensorrt)"
    return None


@register("tensorrt", TensorRTParams)
def tensorrt_stage(p: TensorRTParams, ctx: StageContext) -> dict:
    """Build an engine from the ONNX file and time it; skipped (never faked) without GPU/TensorRT."""
    reason = tensorrt_unavailable()
    if reason:
        ctx.log.warning("tensorrt skipped: %s", reason)
        return {"status": "skipped", "skip_reason": reason}
    onnx_path = ctx.need(p.export_stage) / "model.onnx"
    engine_path = ctx.out_dir / "model.plan"
    size = _input_size(onnx_path)
    x, _ = val_pixels(ctx, p.data_stage, size, p.val_limit)
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


def _input_size(onnx_path: Path) -> int:
    import onnx
    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)


class TensorRTRunner:
    """A TensorRT 10 engine with a dynamic batch, fed and read through torch CUDA tensors."""

    def __init__(self, engine):
        import torch
        self.engine, self.context = engine, engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    @classmethod
    def build(cls, onnx_path: Path, engine_path: Path, fp16: bool, max_batch: int) -> "TensorRTRunner":
        import tensorrt as trt
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            raise RuntimeError("TensorRT could not parse the ONNX file: " +
                               "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        shape = network.get_input(0).shape
        profile = builder.create_optimization_profile()
        profile.set_shape(network.get_input(0).name, (1, *shape[1:]), (max_batch, *shape[1:]), (max_batch, *shape[1:]))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        with atomic_path(engine_path) as tmp:
            tmp.write_bytes(bytes(serialized))
        return cls(trt.Runtime(logger).deserialize_cuda_engine(serialized))

    def __call__(self, x):
        import torch
        x = x.cuda().contiguous()
        out = torch.empty((x.shape[0], self.engine.get_tensor_shape("logits")[-1]), device="cuda")
        self.stream.wait_stream(torch.cuda.current_stream())   # x was made on the default stream
        self.context.set_input_shape("pixels", tuple(x.shape))
        self.context.set_tensor_address("pixels", x.data_ptr())
        self.context.set_tensor_address("logits", out.data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out

    def time(self, x, iterations: int, warmup: int = 10) -> dict:
        """CUDA-event timing per call, ms."""
        import torch
        for _ in range(warmup):
            self(x)
        times = []
        for _ in range(iterations):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            self(x)
            end.record(self.stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
        return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90))}
