"""Inference runtimes for an exported model: ONNX Runtime sessions and their parity with eager
PyTorch, and TensorRT engines (GPU only) built from the ONNX file and timed with CUDA events."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from safeio import atomic_path

from jobs.deployment.quantize import predict

ONNX_FILE = "model.onnx"     # what export_onnx writes; tensorrt and the benchmark read it


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


def tensorrt_unavailable() -> str | None:
    import torch
    if not torch.cuda.is_available():
        return "no CUDA device visible (TensorRT needs an NVIDIA GPU)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the TensorRT Python package is not installed (pip install tensorrt)"
    return None


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
