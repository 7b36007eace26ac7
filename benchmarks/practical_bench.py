"""The MLP/ConvNet practical (configs/mlp_cnn_practical.yaml) on real CIFAR-10 images; prints one
JSON line: test accuracy of every model, the ConvNet's steps, and each stage's wall time.

python benchmarks/practical_bench.py ../shared/datasets/cifar10-train-10k [--convnet-minutes 20]

The folder holds one CIFAR-10 training batch (data_batch_1 + batches.meta). It is split here,
seeded and stratified, 8,000/2,000 and written in the official layout (the 2,000 as test_batch);
the DAG then runs unchanged (its 90/10 train/val split of the 8,000), locally, on the CPU. Every
recipe is the config's, except the ConvNet's length: it runs as many 100-step epochs as fit in
--convnet-minutes, from a measured time per step.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cifar10_swap_bench import stage_real_batch  # noqa: E402

CONFIG = "configs/mlp_cnn_practical.yaml"
MLPS = ["mlp_default", "mlp_adam", "mlp_deep", "mlp_tuned"]
STEPS_PER_EPOCH = 100


def seconds_per_convnet_step(batch_size: int = 32, steps: int = 5) -> float:
    """Adam steps of the practical's ConvNet on random input, timed after a warm-up step."""
    import torch

    from jobs.models.nets import PreActVGG
    model = PreActVGG(10)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    for i in range(steps + 1):
        if i == 1:
            started = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path, help="folder with CIFAR-10's data_batch_1 and batches.meta")
    ap.add_argument("--convnet-minutes", type=float, default=20.0, help="time for the ConvNet (> 0)")
    args = ap.parse_args()
    if args.convnet_minutes <= 0:
        sys.exit("--convnet-minutes must be > 0")
    if not (args.folder / "data_batch_1").exists():
        sys.exit(f"no data_batch_1 in {args.folder}: pass the folder of real CIFAR-10 images "
                 f"(../shared/datasets/cifar10-train-10k on the project's machines)")
    work = Path(tempfile.mkdtemp(prefix="practical-bench-"))
    sizes = stage_real_batch(args.folder, work / "data")
    sets = [f"paths.{k}={work / k}" for k in ("data", "results", "logs", "cache")]
    models = [*MLPS, "convnet"]
    step_s = seconds_per_convnet_step()
    eval_s = 800 * step_s / 32 / 3                      # 800 val images, forward only: about a third of a step each
    convnet_epochs = max(1, int(60 * args.convnet_minutes / (STEPS_PER_EPOCH * step_s + eval_s)))
    sets += [f"stages.convnet.epochs={convnet_epochs}", f"stages.convnet.steps_per_epoch={STEPS_PER_EPOCH}",
             "stages.convnet.resources.gpus=0"]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "submit", "evaluate", "layernorm", "-c", CONFIG,
                    "--executor", "local", *[a for s in sets for a in ("--set", s)]],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    results = work / "results" / "mlp_cnn_practical"
    scored = json.loads((results / "evaluate" / "metrics.json").read_text())["models"]
    wall_s = {s: json.loads((results / s / "accounting.json").read_text()).get("wall_s")
              for s in ["numpy_mlp", *models]}
    print(json.dumps({
        "data": f"{args.folder} (real CIFAR-10 training images, JPEG-re-encoded), 8k/2k split, 10 classes",
        "images": sizes, "dag_wall_s": round(wall, 1),
        "test_acc": {s: round(m["accuracy"], 4) for s, m in scored.items()},
        "convnet": {"steps": convnet_epochs * STEPS_PER_EPOCH, "batch_size": 32, "measured_s_per_step": step_s},
        "stage_wall_s": wall_s,
        "layernorm": json.loads((results / "layernorm" / "metrics.json").read_text()),
        "results": str(results)}))


if __name__ == "__main__":
    main()
