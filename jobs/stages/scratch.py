"""Stage kinds for the from-scratch networks: MNIST/CIFAR-10 download, scratch_cnn, numpy_mlp."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.registry import StageContext, register
from pipeline.state import atomic_write_json, atomic_write_text

from jobs.data.files import verify_manifest, write_manifest
from jobs.data.formats import CIFAR10_FILES, read_cifar10, read_idx

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081     # torchvision's MNIST example normalisation


@dataclass
class DownloadParams:
    """Fetch through torchvision unless the files are already staged in the data folder."""


def _mnist_dir(data_dir: Path) -> Path:
    return data_dir / "MNIST" / "raw"


def _present(folder: Path, names: list[str]) -> list[Path]:
    """Each name as the raw or .gz file that exists (raw preferred); empty if any is missing."""
    found = []
    for name in names:
        hits = [folder / n for n in (name, name + ".gz") if (folder / n).exists()]
        if not hits:
            return []
        found.append(hits[0])
    return found


@register("mnist_download", DownloadParams)
def mnist_download(p: DownloadParams, ctx: StageContext) -> dict:
    folder = _mnist_dir(ctx.data_dir)
    files = _present(folder, MNIST_FILES)
    if not files:
        from torchvision.datasets import MNIST
        ctx.log.info("downloading MNIST into %s (torchvision, checksums verified)", ctx.data_dir)
        MNIST(str(ctx.data_dir), train=True, download=True)
        files = _present(folder, MNIST_FILES)
    else:
        ctx.log.info("MNIST already staged in %s: not downloading", folder)
    write_manifest(folder, files, source="torchvision.datasets.MNIST")
    return {"files": len(files)}


@register("cifar10_download", DownloadParams)
def cifar10_download(p: DownloadParams, ctx: StageContext) -> dict:
    folder = ctx.data_dir / "cifar-10-batches-py"
    if not all((folder / n).exists() for n in CIFAR10_FILES):
        from torchvision.datasets import CIFAR10
        ctx.log.info("downloading CIFAR-10 into %s (torchvision, md5 verified)", ctx.data_dir)
        CIFAR10(str(ctx.data_dir), train=True, download=True)
    else:
        ctx.log.info("CIFAR-10 already staged in %s: not downloading", folder)
    write_manifest(folder, [folder / n for n in CIFAR10_FILES], source="torchvision.datasets.CIFAR10")
    return {"files": len(CIFAR10_FILES)}


def load_mnist(data_dir: Path, producer: str = "mnist_download") -> dict[str, np.ndarray]:
    folder = _mnist_dir(data_dir)
    verify_manifest(folder, producer)
    tr_x, tr_y, te_x, te_y = (read_idx(f) for f in _present(folder, MNIST_FILES))
    return {"x_train": tr_x, "y_train": tr_y.astype(np.int64), "x_test": te_x, "y_test": te_y.astype(np.int64)}


@dataclass
class ScratchCNNParams:
    epochs: int = field(default=3, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    lr: float = field(default=0.05, metadata={"min": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=5e-4, metadata={"min": 0.0})
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden: int = field(default=128, metadata={"min": 1})
    val_size: int = field(default=5000, metadata={"min": 1, "help": "held out from the official train set"})
    max_train: int = field(default=0, metadata={"min": 0, "help": "use only this many training images; 0 = all"})


@register("scratch_cnn", ScratchCNNParams)
def scratch_cnn_stage(p: ScratchCNNParams, ctx: StageContext) -> dict:
    import torch

    from jobs.evaluation.plots import plot_history
    from jobs.scratch.layers import evaluate_scratch, scratch_cnn, train_scratch
    from jobs.training.loop import resolve_device

    torch.manual_seed(ctx.seed)
    device = resolve_device(ctx.device)
    raw = load_mnist(ctx.data_dir, _producer(ctx))
    data = _mnist_tensors(raw, p, ctx.seed, device)
    model = scratch_cnn(raw["x_train"].shape[-1], 10, tuple(p.channels), p.hidden, ctx.seed)
    for param in model.parameters():
        param.data, param.grad = param.data.to(device), param.grad.to(device)
    history = train_scratch(model, data, p.epochs, p.batch_size, p.lr, p.momentum, p.weight_decay, ctx.seed, ctx.log)
    test = evaluate_scratch(model, data["x_test"], data["y_test"])
    n_params = sum(q.data.numel() for q in model.parameters())
    _curves(ctx, history, "val", "epoch", plot_history)
    atomic_write_text(ctx.out_dir / "report.md", f"### {ctx.stage}: CNN without autograd on MNIST\n\n"
                      f"Test accuracy **{100 * test['acc']:.2f}%** after {p.epochs} epochs.\n\n![curves](curves.png)\n")
    n = len(data["y_train"])
    seconds = sum(h["seconds"] for h in history)
    ctx.record(epochs=p.epochs, samples_per_epoch=n, total_samples=n * p.epochs, trainable_params=n_params,
               total_params=n_params, throughput_per_s=round(n * p.epochs / seconds, 1), precision="fp32")
    ctx.log.info("test acc %.2f%%", 100 * test["acc"])
    return {"val_acc": history[-1]["val_acc"], "test_acc": test["acc"], "test_loss": test["loss"]}


def _mnist_tensors(raw, p: ScratchCNNParams, seed: int, device) -> dict:
    import torch

    def norm(x):                               # uint8 (N, 28, 28) -> float (N, 1, 28, 28)
        return ((torch.from_numpy(x).float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1).to(device)
    order = np.random.default_rng(seed).permutation(len(raw["y_train"]))
    val, train = order[:p.val_size], order[p.val_size:]
    if p.max_train:
        train = train[:p.max_train]
    return {"x_train": norm(raw["x_train"][train]), "y_train": torch.from_numpy(raw["y_train"][train]).to(device),
            "x_val": norm(raw["x_train"][val]), "y_val": torch.from_numpy(raw["y_train"][val]).to(device),
            "x_test": norm(raw["x_test"]), "y_test": torch.from_numpy(raw["y_test"]).to(device)}


@dataclass
class NumpyMLPParams:
    dnn_hidden_units: str = field(default="100", metadata={"help": "comma-separated hidden sizes, e.g. 512,256"})
    learning_rate: float = field(default=2e-3, metadata={"min": 0.0})
    max_steps: int = field(default=1500, metadata={"min": 1})
    batch_size: int = field(default=200, metadata={"min": 1})
    eval_freq: int = field(default=100, metadata={"min": 1})
    data_dir: str = field(default="", metadata={"help": "CIFAR-10 folder; default <data>/cifar-10-batches-py"})


@register("numpy_mlp", NumpyMLPParams)
def numpy_mlp_stage(p: NumpyMLPParams, ctx: StageContext) -> dict:
    from jobs.evaluation.plots import plot_history
    from jobs.scratch.numpy_mlp import MLP, parse_hidden, train_mlp

    folder = Path(p.data_dir) if p.data_dir else ctx.data_dir / "cifar-10-batches-py"
    verify_manifest(folder, _producer(ctx))
    data = cifar_features(read_cifar10(folder))
    mlp = MLP(data["x_train"].shape[1], parse_hidden(p.dnn_hidden_units), 10, seed=ctx.seed)
    history = train_mlp(mlp, data, p.learning_rate, p.max_steps, p.batch_size, p.eval_freq, ctx.seed, ctx.log)
    _curves(ctx, history, "test", "step", plot_history)
    final = history[-1]
    atomic_write_text(ctx.out_dir / "report.md", f"### {ctx.stage}: NumPy MLP ({p.dnn_hidden_units}) on CIFAR-10\n\n"
                      f"Test accuracy **{100 * final['test_acc']:.2f}%** after {p.max_steps} steps.\n\n"
                      "![curves](curves.png)\n")
    n_params = sum(v.size for layer in mlp.linear_layers() for v in layer.params.values())
    n_train = len(data["y_train"])
    ctx.record(epochs=round(p.max_steps * p.batch_size / n_train, 3), samples_per_epoch=n_train,
               total_samples=p.max_steps * p.batch_size, trainable_params=n_params, total_params=n_params,
               throughput_per_s=round(p.max_steps * p.batch_size / final["seconds"], 1), precision="fp32",
               device="cpu")
    return {"test_acc": final["test_acc"], "test_loss": final["test_loss"]}


def cifar_features(raw: dict) -> dict[str, np.ndarray]:
    """Flatten to (N, 3072) float32 and standardise with the training set's per-feature statistics."""
    x_train = raw["x_train"].reshape(len(raw["x_train"]), -1).astype(np.float32) / 255
    x_test = raw["x_test"].reshape(len(raw["x_test"]), -1).astype(np.float32) / 255
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    return {"x_train": (x_train - mean) / std, "y_train": raw["y_train"],
            "x_test": (x_test - mean) / std, "y_test": raw["y_test"]}


def _curves(ctx, history, held_out: str, x: str, plot_history) -> None:
    atomic_write_json(ctx.out_dir / "history.json", history)
    plot_history(history, ctx.out_dir / "curves.png", f"{ctx.experiment}/{ctx.stage}", x=x, held_out=held_out)


def _producer(ctx) -> str:
    """The upstream stage that stages the data: named in 'missing file' errors."""
    return " / ".join(ctx.upstream) or "download"
