"""What progress reporting costs the training loop: one epoch of the shared loop (train_one_epoch,
a small CNN on random 28 px images, every step calling `progress`) with and without a
ProgressWriter, alternated in one run; and the cost of one call on its own (throttled, and when
it writes). Prints one JSON line.

python benchmarks/progress_bench.py [--repeats 7] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jobs.training.loop import make_optimizer, make_scheduler, train_one_epoch  # noqa: E402
from jobs.training.params import TrainParams  # noqa: E402
from pipeline.core.progress import ProgressWriter  # noqa: E402


def epoch_seconds(progress, repeats: int) -> list[float]:
    p = TrainParams(epochs=1, batch_size=32, log_every=10**9)
    torch.manual_seed(0)
    x, y = torch.randint(0, 256, (1024, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (1024,))
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(256, 10))
    opt = make_optimizer(model.parameters(), p)
    sched = make_scheduler(opt, p, 32)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        train_one_epoch(model, x, y, lambda b, training: b.float() / 255, opt, sched, scaler, torch.device("cpu"),
                        p, torch.Generator().manual_seed(0), logging.getLogger("bench"), 1, progress=progress)
        times.append(time.perf_counter() - start)
    return times


def per_call_us(writer, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        writer(i / n, 1.0, "epoch", train_loss=0.5, images_per_s=100.0)
    return 1e6 * (time.perf_counter() - start) / n


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--repeats", type=int, default=7)
    args.add_argument("--threads", type=int, default=2)
    a = args.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        writer = ProgressWriter(Path(tmp) / "progress.json")
        times = {None: [], writer: []}
        epoch_seconds(None, 1)                # warm-up: the first epoch of a process is the slowest
        for i in range(a.repeats):            # alternated (ABBA), so drift and order hit both alike
            for progress in ((None, writer) if i % 2 == 0 else (writer, None)):
                times[progress] += epoch_seconds(progress, 1)
        without, with_ = times[None], times[writer]
        throttled = per_call_us(ProgressWriter(Path(tmp) / "a.json", every_s=3600), 20000)
        writing = per_call_us(ProgressWriter(Path(tmp) / "b.json", every_s=0), 200)
    steps = 1024 // 32
    print(json.dumps({"what": "train_one_epoch, 32 steps of batch 32, 28 px, small CNN, CPU",
                      "threads": a.threads, "repeats": a.repeats,
                      "epoch_s_without": round(float(np.median(without)), 4),
                      "epoch_s_with_progress": round(float(np.median(with_)), 4),
                      "ratio_with_over_without": round(float(np.median(with_) / np.median(without)), 4),
                      "call_us_throttled": round(throttled, 2), "call_us_writing": round(writing, 1),
                      "step_us": round(1e6 * float(np.median(without)) / steps, 1),
                      "call_over_step_ratio": round(throttled / (1e6 * float(np.median(without)) / steps), 6)}))


if __name__ == "__main__":
    main()
