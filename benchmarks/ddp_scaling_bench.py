"""Data-parallel scaling of the shared training loop (jobs/training/loop.py fit with
jobs/training/distributed.py): training images per second with 1 and 2 processes on this machine's
CPU (gloo), side by side in one run, the same global batch; on a GPU also 1 GPU with bf16 and
channels_last. Prints one JSON line.

python benchmarks/ddp_scaling_bench.py [--images 2048] [--epochs 2] [--model resnet18]

Synthetic CIFAR-sized uint8 images (throughput does not depend on what they show). Each process
gets cpu_count // processes threads, as the pipeline's jobs do (OMP_NUM_THREADS = the job's CPUs).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(rank: int, world: int, args, out: str, port: int, device: str = "cpu", amp: bool = False) -> None:
    import torch

    from jobs.models.registry import create_model
    from jobs.training.loop import fit
    from jobs.training.params import FitEnv, TrainParams
    from jobs.training.transforms import BatchTransform
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    gen = torch.Generator().manual_seed(0)
    n = args.images
    data = {"x_train": torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=gen),
            "y_train": torch.randint(0, 10, (n,), generator=gen),
            "x_val": torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=gen),
            "y_val": torch.randint(0, 10, (64,), generator=gen)}
    folder = Path(out) / f"rank{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    env = FitEnv(folder, folder / "checkpoint.pt", logging.getLogger("bench"), seed=0, device=device,
                 fingerprint="bench", rank=rank, world_size=world)
    p = TrainParams(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=0.01, amp=amp,
                    channels_last=amp, log_every=10**6)
    model = create_model(args.model, 10, image_size=32)
    run = fit(model, data, BatchTransform(3, 3, 32, 32, "imagenet"), p, env)
    if rank == 0:   # the last epoch: the first one includes warm-up
        (Path(out) / "rate.json").write_text(json.dumps(run["history"][-1]["img_per_s"]))


def measure(world: int, args, **kw) -> float:
    import torch.multiprocessing as mp
    out = tempfile.mkdtemp(prefix=f"ddp-{world}-")
    if world == 1:
        train(0, 1, args, out, _port(), **kw)
    else:
        mp.spawn(train, args=(world, args, out, _port()), nprocs=world, join=True)
    return round(json.loads((Path(out) / "rate.json").read_text()), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64, help="global batch")
    ap.add_argument("--model", default="resnet18")
    args = ap.parse_args()
    import torch
    rates = {"cpu_1_process": measure(1, args), "cpu_2_processes": measure(2, args)}
    if torch.cuda.is_available():
        rates["gpu_1_bf16_channels_last"] = measure(1, args, device="cuda", amp=True)
    print(json.dumps({"model": args.model, "images": args.images, "global_batch": args.batch_size,
                      "cpus": os.cpu_count(), "img_per_s": rates,
                      "speedup_2_vs_1": round(rates["cpu_2_processes"] / rates["cpu_1_process"], 2)}))


if __name__ == "__main__":
    main()
