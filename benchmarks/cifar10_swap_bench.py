"""The activation-swap experiment (configs/cifar10_activation_swap.yaml) on real CIFAR-10 images;
prints one JSON line: the DAG's wall time, and val accuracy with and without the swap.

python benchmarks/cifar10_swap_bench.py ../shared/datasets/cifar10-train-10k [--epochs 3] [--resolution 64]

The folder holds one CIFAR-10 training batch (data_batch_1 + batches.meta). It is split here,
seeded and stratified, 8,000/2,000, and written in the official layout as cifar-10-batches-py (the
8,000 as the training batches, the 2,000 as test_batch) in a temporary data folder; the DAG then
runs unchanged (its own 90/10 train/val split of the 8,000, cat/dog/airplane only), locally.
No ImageNet weights can be downloaded here, so both networks start from random init
(`pretrained: none`); the config's default is `imagenet`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from jobs.data.files import stratified_split  # noqa: E402
from jobs.data.formats import cifar_images, read_pickle, write_cifar10  # noqa: E402

CONFIG = "configs/cifar10_activation_swap.yaml"


def stage_real_batch(source: Path, data_dir: Path, seed: int = 0) -> dict:
    batch = read_pickle(source / "data_batch_1")
    classes = [c.decode() for c in read_pickle(source / "batches.meta")[b"label_names"]]
    x, y = cifar_images([batch]), np.asarray(batch[b"labels"], dtype=np.int64)
    idx = stratified_split(y, {"train": 0.8, "test": 0.2}, seed)
    write_cifar10(data_dir / "cifar10" / "cifar-10-batches-py", x[idx["train"]], y[idx["train"]],
                  x[idx["test"]], y[idx["test"]], classes)
    return {"train": len(idx["train"]), "test": len(idx["test"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path, help="folder with CIFAR-10's data_batch_1 and batches.meta")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=64)
    args = ap.parse_args()
    if not (args.folder / "data_batch_1").exists():
        sys.exit(f"no data_batch_1 in {args.folder}: pass the folder of real CIFAR-10 images "
                 f"(../shared/datasets/cifar10-train-10k on the project's machines)")
    work = Path(tempfile.mkdtemp(prefix="swap-bench-"))
    sizes = stage_real_batch(args.folder, work / "data")
    sets = [f"paths.{k}={work / k}" for k in ("data", "results", "logs", "cache")] + ["stages.download.models=[]"]
    for stage in ("swap", "control"):
        sets += [f"stages.{stage}.model.pretrained=none", f"stages.{stage}.epochs={args.epochs}",
                 f"stages.{stage}.resolution={args.resolution}"]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "submit", "all", "-c", CONFIG, "--executor", "local",
                    *[a for s in sets for a in ("--set", s)]], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    results = work / "results" / "cifar10_activation_swap"
    scored = json.loads((results / "evaluate" / "metrics.json").read_text())["models"]
    history = {s: json.loads((results / s / "history.json").read_text()) for s in ("swap", "control")}
    print(json.dumps({
        "data": f"{args.folder} (real CIFAR-10 training images, JPEG-re-encoded), 8k/2k split, cat/dog/airplane",
        "images": sizes, "epochs": args.epochs, "resolution": args.resolution, "pretrained": "none",
        "dag_wall_s": round(wall, 1),
        "val_acc_swap": scored["swap"]["accuracy"], "val_acc_control": scored["control"]["accuracy"],
        "swap_minus_control_pt": round(100 * (scored["swap"]["accuracy"] - scored["control"]["accuracy"]), 2),
        "train_minus_val_acc_per_epoch": {s: [round(h["train_acc"] - h["val_acc"], 4) for h in hs]
                                          for s, hs in history.items()},
        "results": str(results)}))


if __name__ == "__main__":
    main()
