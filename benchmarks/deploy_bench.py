"""ViT-S/14 deployment speed on this CPU, measured side by side in one run; prints one JSON line.

Random weights (the architecture of DINOv2 ViT-S/14, via timm; no download), 224 px, a fixed
thread count, batch 8: fp32 eager vs int8 dynamic quantization (torch.ao and torchao) vs ONNX
Runtime. Latency is the median of interleaved timed calls after warm-up.
python benchmarks/deploy_bench.py [--threads 2] [--batch 8] [--iterations 20]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jobs.deployment.quantize import quantize_model  # noqa: E402
from jobs.deployment.runtimes import ort_session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import timm
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=200, img_size=224).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    variants = {"fp32": model, "int8_torch_ao": quantize_model(model, "torch_ao"),
                "int8_torchao": quantize_model(model, "torchao")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vit.onnx"
        torch.onnx.export(model, (x,), str(path), input_names=["pixels"], output_names=["logits"], dynamo=True,
                          external_data=False, verbose=False)
        session = ort_session(path, args.threads)
        variants["onnxruntime"] = lambda b: session.run(None, {"pixels": b.numpy()})[0]
        times = {k: [] for k in variants}
        with torch.no_grad():
            for fn in variants.values():
                fn(x)
                fn(x)
            for _ in range(args.iterations):      # interleaved: drift on a shared machine hits all alike
                for name, fn in variants.items():
                    start = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - start)
        ref = model(x).detach().numpy()
        ort_diff = float(np.abs(session.run(None, {"pixels": x.numpy()})[0] - ref).max())
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {"benchmark": "deploy", "model": "vit_small_patch14_dinov2 (random weights)", "img_size": 224,
              "threads": args.threads, "batch": args.batch, "iterations": args.iterations, "torch": torch.__version__,
              **{f"{k}_ms": round(1e3 * v, 1) for k, v in med.items()},
              "int8_torch_ao_speedup": round(med["fp32"] / med["int8_torch_ao"], 2),
              "int8_torchao_speedup": round(med["fp32"] / med["int8_torchao"], 2),
              "onnxruntime_speedup": round(med["fp32"] / med["onnxruntime"], 2),
              "onnxruntime_max_abs_diff": ort_diff, "cpu_count": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
