"""Stage kinds for the from-scratch networks: scratch_cnn (hand-written gradients, no autograd)
and numpy_mlp (pure NumPy), which read an upstream `prepare` stage's split.npz (`data_stage`), and
layernorm_check (the hand-written LayerNorms against torch.nn.LayerNorm; no data)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.contract import StageContext, register
from safeio import atomic_write_json, atomic_write_text
from safeio.markdown import markdown_table

from jobs.data.files import PROBS_FILE, DataError, load_split, save_arrays

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081     # torchvision's MNIST example normalisation
DATA_STAGE_HELP = "the upstream prepare stage whose split.npz this stage reads"


@dataclass
class ScratchCNNParams:
    data_stage: str = field(default="prepare", metadata={"help": DATA_STAGE_HELP})
    epochs: int = field(default=3, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    lr: float = field(default=0.05, metadata={"min": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=5e-4, metadata={"min": 0.0})
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden: int = field(default=128, metadata={"min": 1})
    max_train: int = field(default=0, metadata={
        "min": 0, "help": "train on a seeded random subset of this many training images; 0 = all"})


@register("scratch_cnn", ScratchCNNParams)
def scratch_cnn_stage(p: ScratchCNNParams, ctx: StageContext) -> dict:
    import torch

    from jobs.evaluation.plots import plot_history
    from jobs.scratch.layers import evaluate_scratch, scratch_cnn, train_scratch
    from jobs.training.loop import resolve_device

    torch.manual_seed(ctx.seed)
    device = resolve_device(ctx.device)
    arrays = load_split(ctx.load_upstream, p.data_stage)
    data = _grey_tensors(arrays, p, ctx.seed, device)
    classes = [str(c) for c in arrays["classes"]]
    model = scratch_cnn(data["x_train"].shape[-1], len(classes), tuple(p.channels), p.hidden, ctx.seed)
    for param in model.parameters():
        param.data, param.grad = param.data.to(device), param.grad.to(device)
    history = train_scratch(model, data, p.epochs, p.batch_size, p.lr, p.momentum, p.weight_decay, ctx.seed, ctx.log,
                            ctx.progress)
    test = evaluate_scratch(model, data["x_test"], data["y_test"])
    n_params = sum(q.data.numel() for q in model.parameters())
    _curves(ctx, history, "val", "epoch", plot_history)
    atomic_write_text(ctx.report_path, f"### {ctx.stage}: CNN without autograd ({len(classes)} classes, "
                      f"`{p.data_stage}`)\n\nTest accuracy **{100 * test['acc']:.2f}%** after {p.epochs} epochs.\n\n"
                      "![curves](curves.png)\n")
    n = len(data["y_train"])
    seconds = sum(h["seconds"] for h in history)
    ctx.record(epochs=p.epochs, samples_per_epoch=n, total_samples=n * p.epochs, trainable_params=n_params,
               total_params=n_params, throughput_per_s=round(n * p.epochs / seconds, 1), precision="fp32")
    ctx.log.info("test acc %.2f%%", 100 * test["acc"])
    return {"val_acc": history[-1]["val_acc"], "test_acc": test["acc"], "test_loss": test["loss"]}


def _grey_tensors(arrays: dict, p: ScratchCNNParams, seed: int, device) -> dict:
    """uint8 (N, H, W) splits -> normalised float (N, 1, H, W) and int64 labels on the device."""
    import torch

    if arrays["x_train"].ndim != 3:
        raise DataError(f"scratch_cnn takes greyscale images (N, H, W), got {arrays['x_train'].shape}; set "
                        f"`channels: grey` in stage {p.data_stage!r}")
    train = np.arange(len(arrays["y_train"]))
    if p.max_train:     # a random subset, not the first images: the prepared split is in class order
        train = np.sort(np.random.default_rng(seed).permutation(train)[:p.max_train])

    def norm(x):
        return ((torch.from_numpy(x).float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1).to(device)
    out = {"x_train": norm(arrays["x_train"][train]), "y_train": torch.from_numpy(arrays["y_train"][train]).to(device)}
    for s in ("val", "test"):
        out[f"x_{s}"], out[f"y_{s}"] = norm(arrays[f"x_{s}"]), torch.from_numpy(arrays[f"y_{s}"]).to(device)
    return out


@dataclass
class NumpyMLPParams:
    """Defaults are the MLP practical's (cifar10_utils preprocessing, its template's init and
    train_mlp_numpy.py's flags); `preprocess: standardize, init: he, learning_rate: 2e-3` is this
    project's earlier recipe (0.41 vs the practical's 0.48 on the same real images)."""
    dnn_hidden_units: str = field(default="100", metadata={"help": "comma-separated hidden sizes, e.g. 512,256"})
    learning_rate: float = field(default=1e-3, metadata={"min": 0.0})
    max_steps: int = field(default=1400, metadata={"min": 1})
    batch_size: int = field(default=200, metadata={"min": 1})
    eval_freq: int = field(default=100, metadata={"min": 1})
    preprocess: Literal["mean_image", "standardize"] = field(default="mean_image", metadata={
        "help": "mean_image: pixels 0..255 minus the training set's mean image, no scaling (the practical's); "
                "standardize: [0, 1] then each feature to zero mean and unit variance"})
    init: Literal["normal", "he"] = field(default="normal", metadata={
        "help": "normal: weights N(0, weight_std^2) (the practical's template); he: N(0, 2 / fan_in); biases 0"})
    weight_std: float = field(default=1e-4, metadata={"min": 0.0, "help": "std of init: normal"})
    data_stage: str = field(default="prepare", metadata={"help": DATA_STAGE_HELP})


@register("numpy_mlp", NumpyMLPParams)
def numpy_mlp_stage(p: NumpyMLPParams, ctx: StageContext) -> dict:
    from jobs.evaluation.plots import plot_history
    from jobs.scratch.numpy_mlp import MLP, parse_hidden, train_mlp

    arrays = load_split(ctx.load_upstream, p.data_stage)
    data = cifar_features(arrays, p.preprocess)
    classes = [str(c) for c in arrays["classes"]]
    mlp = MLP(data["x_train"].shape[1], parse_hidden(p.dnn_hidden_units), len(classes), seed=ctx.seed,
              init=p.init, weight_std=p.weight_std)
    ctx.log.info("numpy MLP %s, %s init (std %s), preprocess %s, SGD lr %g, %d steps of %d", p.dnn_hidden_units,
                 p.init, p.weight_std if p.init == "normal" else "sqrt(2/fan_in)", p.preprocess, p.learning_rate,
                 p.max_steps, p.batch_size)
    history = train_mlp(mlp, data, p.learning_rate, p.max_steps, p.batch_size, p.eval_freq, ctx.seed, ctx.log,
                        ctx.progress)
    _curves(ctx, history, "test", "step", plot_history)
    save_arrays(ctx.out_dir / PROBS_FILE, val=mlp.forward(data["x_val"]), test=mlp.forward(data["x_test"]))
    final = history[-1]
    atomic_write_text(ctx.report_path, f"### {ctx.stage}: NumPy MLP ({p.dnn_hidden_units}; "
                      f"{len(classes)} classes, `{p.data_stage}`)\n\nPreprocessing `{p.preprocess}`, init "
                      f"`{p.init}`, SGD lr {p.learning_rate:g}, batch {p.batch_size}.\n\n"
                      f"Test accuracy **{100 * final['test_acc']:.2f}%** after {p.max_steps} steps.\n\n"
                      "![curves](curves.png)\n")
    n_params = sum(v.size for layer in mlp.linear_layers() for v in layer.params.values())
    n_train = len(data["y_train"])
    ctx.record(epochs=round(p.max_steps * p.batch_size / n_train, 3), samples_per_epoch=n_train,
               total_samples=p.max_steps * p.batch_size, trainable_params=n_params, total_params=n_params,
               throughput_per_s=round(p.max_steps * p.batch_size / final["seconds"], 1), precision="fp32",
               device="cpu")
    return {"test_acc": final["test_acc"], "test_loss": final["test_loss"], "trainable_params": n_params}


def cifar_features(raw: dict, preprocess: str = "standardize") -> dict[str, np.ndarray]:
    """Flatten to (N, 3072) float32. mean_image: pixel values minus the training set's mean image
    (cifar10_utils' preprocessing); standardize: [0, 1], then the training set's per-feature
    mean and std. Every split is shifted with the training set's statistics."""
    def flat(split):
        x = raw[f"x_{split}"]
        return x.reshape(len(x), -1).astype(np.float32)
    x_train = flat("train")
    scale = 1.0 if preprocess == "mean_image" else 1 / 255
    mean = (x_train * scale).mean(0)
    std = 1.0 if preprocess == "mean_image" else (x_train * scale).std(0) + 1e-8
    out = {"x_train": (x_train * scale - mean) / std, "y_train": raw["y_train"]}
    for split in ("val", "test"):
        if f"x_{split}" in raw:
            out[f"x_{split}"], out[f"y_{split}"] = (flat(split) * scale - mean) / std, raw[f"y_{split}"]
    return out


def _curves(ctx, history, held_out: str, x: str, plot_history) -> None:
    atomic_write_json(ctx.out_dir / "history.json", history)
    plot_history(history, ctx.out_dir / "curves.png", f"{ctx.experiment}/{ctx.stage}", x=x, held_out=held_out)


@dataclass
class LayerNormCheckParams:
    rows: int = field(default=256, metadata={"min": 1, "help": "input rows (N)"})
    features: int = field(default=512, metadata={"min": 2, "help": "normalised features (D)"})
    repeats: int = field(default=20, metadata={"min": 1, "help": "timed forward + backward calls per implementation"})


@register("layernorm_check", LayerNormCheckParams)
def layernorm_check_stage(p: LayerNormCheckParams, ctx: StageContext) -> dict:
    """The two hand-written LayerNorms (jobs/scratch/layernorm.py) against torch.nn.LayerNorm and
    each other on the same inputs: output and gradient differences, gradcheck, time per call."""
    from jobs.scratch.layernorm import compare_layernorms
    table = compare_layernorms(p.rows, p.features, ctx.seed, p.repeats)
    columns = ["implementation", "max_diff_out_fp32", "max_diff_grad_x_fp32", "max_diff_out_fp64",
               "max_diff_grad_x_fp64", "max_diff_grad_gamma_fp64", "max_diff_vs_autograd_fp64", "gradcheck_fp64",
               "fwd_bwd_ms"]
    for r in table:
        ctx.log.info("%s: max |diff| vs torch.nn.LayerNorm out %.2e grad_x %.2e (fp64), gradcheck %s, %.3f ms",
                     r["implementation"], r["max_diff_out_fp64"], r["max_diff_grad_x_fp64"], r["gradcheck_fp64"],
                     r["fwd_bwd_ms"])
    atomic_write_json(ctx.out_dir / "layernorm.json", table)
    atomic_write_text(ctx.report_path, f"### {ctx.stage}: LayerNorm, three ways\n\n"
                      f"Input ({p.rows}, {p.features}), N(1, 3^2) entries, random gamma and beta, one upstream "
                      f"gradient for all. Differences are the largest absolute difference from "
                      f"torch.nn.LayerNorm (last column but two: from LayerNormAutograd); time is the median "
                      f"float32 forward + backward of {p.repeats} calls on {ctx.device}.\n\n"
                      + markdown_table(table, columns, fmt=_cell) + "\n")
    worst = max(max(v for k, v in r.items() if k.startswith("max_diff") and k.endswith("fp64")) for r in table)
    return {"max_diff_fp64": worst, "gradcheck": all(r["gradcheck_fp64"] for r in table),
            "fwd_bwd_ms": {r["implementation"]: r["fwd_bwd_ms"] for r in table}}


def _cell(value) -> str:
    return f"{value:.2e}" if isinstance(value, float) and not isinstance(value, bool) and value < 0.01 else str(value)
