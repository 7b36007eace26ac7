"""EMNIST training-path benchmarks, measured side by side in one run; prints one JSON line.

1. Linear probe with cached backbone features vs the same probe with a full forward every epoch
   (the real `train` stage of configs/emnist.yaml's linear_probe both ways, `cache_features` on and
   off, 10 epochs, same data and seed): time ratio, accuracy gap.
2. Training-step throughput of our path (uint8 batches resized/normalised on the device,
   channels_last) vs a naive seed-style recipe (per-sample PIL Resize, Grayscale(3), ToTensor,
   Normalize in a DataLoader; NCHW fp32), same resolution and batch; ours at 64/112/224 px.

Data: EMNIST-format files written by tests/support/datasets.py (62 glyph classes + noise); ResNet-18 with
random weights (no download here). python benchmarks/emnist_bench.py [--resolution 64]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.datasets import write_emnist, write_random_resnet18  # noqa: E402
from pipeline.core import config  # noqa: E402
from pipeline.runner import run_stage  # noqa: E402


def probe_pair(work: Path, resolution: int, per_class: int) -> dict:
    write_emnist(work / "data" / "emnist", per_class_train=per_class, per_class_test=2)
    weights = write_random_resnet18(work / "w.pt")
    base = [f"paths.data={work / 'data'}", f"paths.cache={work / 'cache'}", f"paths.logs={work / 'logs'}",
            f"stages.download.weights_files.resnet18={weights}", "resources.gpus=0",
            f"stages.linear_probe.resolution={resolution}", "stages.linear_probe.epochs=10",
            "stages.linear_probe.patience=0", "stages.linear_probe.amp=false", "stages.linear_probe.batch_size=128",
            "stages.linear_probe.log_every=1000"]
    out = {}
    for mode, cache in (("cached", "true"), ("full_forward", "false")):
        exp = config.load(ROOT / "configs" / "emnist.yaml", base + [f"paths.results={work / mode}",
                                                                    f"stages.linear_probe.cache_features={cache}"])
        for stage in ("download", "preprocess"):
            run_stage(exp, stage)
        record = run_stage(exp, "linear_probe")
        out[mode] = {"wall_s": record["wall_s"], "val_acc": record["val_acc"]}
    return {"probe_train_images": record["samples_per_epoch"], "probe_resolution": resolution,
            "probe_cached_s": out["cached"]["wall_s"], "probe_full_forward_s": out["full_forward"]["wall_s"],
            "probe_speedup": round(out["full_forward"]["wall_s"] / out["cached"]["wall_s"], 2),
            "probe_val_acc_cached": round(out["cached"]["val_acc"], 4),
            "probe_val_acc_full_forward": round(out["full_forward"]["val_acc"], 4),
            "probe_acc_diff_pt": round(100 * abs(out["cached"]["val_acc"] - out["full_forward"]["val_acc"]), 2)}


def _model():
    from jobs.models.registry import create_model
    torch.manual_seed(0)
    return create_model("resnet18", 62)


def _step(model, opt, inputs, targets):
    loss = torch.nn.functional.cross_entropy(model(inputs), targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def ours_img_per_s(images: np.ndarray, labels: np.ndarray, resolution: int, batch: int, steps: int) -> float:
    from jobs.training.transforms import BatchTransform
    model = _model().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    prepare = BatchTransform(1, 3, resolution, 28, "imagenet")     # grey 28 px -> 3 channels, resized, normalised
    x, y = torch.from_numpy(images), torch.from_numpy(labels)

    def run(n):
        for s in range(n):
            idx = slice((s * batch) % (len(y) - batch), (s * batch) % (len(y) - batch) + batch)
            inputs = prepare(x[idx], True).contiguous(memory_format=torch.channels_last)
            _step(model, opt, inputs, y[idx])
    run(1)
    start = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - start)


def naive_img_per_s(images: np.ndarray, labels: np.ndarray, resolution: int, batch: int, steps: int) -> float:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class Glyphs(Dataset):
        tf = transforms.Compose([transforms.Resize((resolution, resolution)), transforms.Grayscale(3),
                                 transforms.ToTensor(),
                                 transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return self.tf(Image.fromarray(images[i])), int(labels[i])
    model = _model().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = iter(DataLoader(Glyphs(), batch_size=batch, shuffle=True, num_workers=0))
    inputs, targets = next(loader)
    _step(model, opt, inputs, targets)
    start = time.perf_counter()
    for _ in range(steps):
        inputs, targets = next(loader)
        _step(model, opt, inputs, targets)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=64, help="probe and ours-vs-naive resolution")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=30, help="training glyphs per class for the probe")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1024, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 62, 1024).astype(np.int64)
    result = {"benchmark": "emnist", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch": args.batch}
    for res in (64, 112, 224):
        steps = args.steps if res < 224 else max(2, args.steps // 2)
        result[f"ours_img_per_s_{res}px"] = round(ours_img_per_s(images, labels, res, args.batch, steps), 1)
        if res in (args.resolution, 224):   # the seed recipe ran at 224 px
            naive = naive_img_per_s(images, labels, res, args.batch, steps)
            result[f"naive_img_per_s_{res}px"] = round(naive, 1)
            result[f"ours_over_naive_{res}px"] = round(result[f"ours_img_per_s_{res}px"] / naive, 2)
    with tempfile.TemporaryDirectory() as work:
        result.update(probe_pair(Path(work), args.resolution, args.per_class))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
