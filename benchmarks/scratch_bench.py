"""Scratch layers vs PyTorch, measured side by side in one run; prints one JSON line.

python benchmarks/scratch_bench.py [--threads 2] [--repeats 20]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jobs.scratch import layers as L  # noqa: E402
from jobs.scratch.numpy_mlp import MLP, CrossEntropy  # noqa: E402


def side_by_side(a, b, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median seconds of a and b, alternating calls so drift on a shared machine hits both."""
    for _ in range(warmup):
        a()
        b()
    times = {a: [], b: []}
    for _ in range(repeats):
        for fn in (a, b):
            start = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - start)
    return float(np.median(times[a])), float(np.median(times[b]))


def conv_pair(repeats: int) -> dict:
    x = torch.randn(64, 32, 28, 28)
    g = torch.randn(64, 64, 28, 28)
    mine = L.Conv2D(32, 64, 3, padding=1, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.Conv2d(32, 64, 3, padding=1)

    @torch.no_grad()
    def scratch():
        mine.forward(x)
        mine.backward(g)

    xr = x.clone().requires_grad_()

    def autograd():
        ref.zero_grad(set_to_none=True)
        xr.grad = None
        ref(xr).backward(g)
    t_mine, t_ref = side_by_side(scratch, autograd, repeats)
    return {"conv_scratch_ms": round(1e3 * t_mine, 2), "conv_torch_ms": round(1e3 * t_ref, 2),
            "conv_scratch_over_torch": round(t_mine / t_ref, 2)}


def mlp_pair(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3072)).astype(np.float32)
    y = rng.integers(0, 10, 200)
    onehot = np.eye(10, dtype=np.float32)[y]
    mlp, ce = MLP(3072, [100], 10), CrossEntropy()

    def numpy_step():
        probs = mlp.forward(x)
        mlp.backward(ce.backward(probs, onehot))
        mlp.sgd_step(2e-3)
    net = torch.nn.Sequential(torch.nn.Linear(3072, 100), torch.nn.ELU(), torch.nn.Linear(100, 10))
    opt = torch.optim.SGD(net.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    t_np, t_torch = side_by_side(numpy_step, torch_step, repeats)
    return {"mlp_numpy_step_ms": round(1e3 * t_np, 3), "mlp_torch_step_ms": round(1e3 * t_torch, 3),
            "mlp_numpy_over_torch": round(t_np / t_torch, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"benchmark": "scratch", "threads": args.threads, "torch": torch.__version__,
              "numpy": np.__version__, **conv_pair(args.repeats), **mlp_pair(args.repeats)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
