"""The stage sampler's overhead against a training step, measured side by side in one run;
prints one JSON line.

python benchmarks/sampler_bench.py [--threads 2] [--steps 40] [--every 5]

Two measures: (1) what one sample costs in CPU time, as a share of the interval between samples
(the sampler's steady-state share of one core); (2) the median training step (ResNet-18, batch 32,
64 px, channels_last, random data) with the sampler running at `--every` seconds against without,
alternating blocks of steps so drift on a shared machine hits both.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pipeline.accounting.samplers import Sampler, SamplerSettings  # noqa: E402


def sample_cost_s(samples: int = 200) -> float:
    """Median CPU seconds of one sample (CPU times and RSS of the process and its children)."""
    sampler = Sampler(SamplerSettings(every_s=3600))
    costs = []
    for _ in range(samples):
        start = time.process_time()
        sampler._sample()
        costs.append(time.process_time() - start)
    return statistics.median(costs)


def step_times(steps: int, every_s: float | None) -> list[float]:
    import torch
    import torchvision
    model = torchvision.models.resnet18(num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 3, 64, 64).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,))
    times = []

    def run():
        for _ in range(steps):
            start = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - start)
    if every_s is None:
        run()
    else:
        with Sampler(SamplerSettings(every_s=every_s)):
            run()
    return times[2:]           # the first steps warm up the allocator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=float, default=5.0)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    cost = sample_cost_s()
    without, with_ = [], []
    for _ in range(3):                       # alternate blocks: A B A B A B
        without += step_times(args.steps // 3, None)
        with_ += step_times(args.steps // 3, args.every)
    step_without, step_with = statistics.median(without), statistics.median(with_)
    print(json.dumps({
        "bench": "sampler_overhead", "threads": args.threads, "every_s": args.every,
        "sample_cost_ms": round(cost * 1000, 3),
        "sampler_share_of_a_core": round(cost / args.every, 6),          # the overhead ratio, steady state
        "sample_cost_over_step": round(cost / step_without, 6),            # one sample against one step
        "step_ms_without": round(step_without * 1000, 1), "step_ms_with": round(step_with * 1000, 1),
        "step_ratio_with_over_without": round(step_with / step_without, 4),
    }))


if __name__ == "__main__":
    main()
