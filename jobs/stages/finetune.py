"""Stage kind `finetune`: ResNet-18 from ImageNet weights (or an upstream checkpoint), one regime.

Regimes (configuration, not code paths): linear_probe trains fc only, partial also layer4, full
trains everything. All use the shared loop in train_loop.py. A linear probe without augmentation
computes the frozen backbone's features once and trains the head on them: the same function of
the same inputs (frozen BatchNorm stays in eval mode either way), at a fraction of the compute.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.registry import StageContext, register
from pipeline.state import atomic_write_json, atomic_write_text

from jobs.data.files import load_arrays, verify_manifest
from jobs.training.loop import TrainParams


@dataclass
class FinetuneParams(TrainParams):
    regime: Literal["linear_probe", "partial", "full"] = "full"
    model: Literal["resnet18"] = "resnet18"
    resolution: int = field(default=224, metadata={"min": 16, "help": "input side in pixels (28 px glyphs are resized)"})
    augment: bool = field(default=False, metadata={"help": "small rotations and resized crops, on the batch"})
    cache_features: bool = field(default=True, metadata={"help": "linear probe without augmentation: features once"})
    init_from: str = field(default="", metadata={"help": "upstream stage whose best.pt to start from; '' = ImageNet"})
    weights_stage: str = "download"
    data_stage: str = "preprocess"
    eval_batch_size: int = field(default=256, metadata={"min": 1})


def set_offline(ctx: StageContext) -> None:
    """Everything after the download stage reads local files only."""
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TORCH_HOME=str(ctx.cache_dir))


def imagenet_weights(ctx: StageContext, stage: str) -> dict:
    import torch
    folder = ctx.need(stage)
    path = Path(json.loads((folder / "metrics.json").read_text())["weights_file"])
    verify_manifest(path.parent, stage)
    return torch.load(path, map_location="cpu", weights_only=True)


def initial_model(p: FinetuneParams, ctx: StageContext, num_classes: int):
    import torch

    from jobs.models.registry import build_model, load_backbone
    model = build_model(p.model, num_classes, p.resolution)
    if p.init_from:
        best = ctx.load_upstream(p.init_from, "best.pt",
                                 lambda path: torch.load(path, map_location="cpu", weights_only=False))
        model.load_state_dict(best["model"])
        ctx.log.info("starting from %s", ctx.need(p.init_from) / "best.pt")
    else:
        load_backbone(model, imagenet_weights(ctx, p.weights_stage))
        ctx.log.info("starting from the ImageNet weights (new %d-class head)", num_classes)
    return model


@register("finetune", FinetuneParams)
def run(p: FinetuneParams, ctx: StageContext) -> dict:
    import torch

    from jobs.models.registry import count_params, set_trainable
    from jobs.evaluation.plots import plot_history
    from jobs.training.loop import device_name, environment_summary, fit, peak_gpu_mem_mb, seed_everything
    from jobs.training.transforms import ImagenetBatch

    set_offline(ctx)
    seed_everything(ctx.seed, ctx.log)
    ctx.log.info("environment: %s", environment_summary())
    arrays = load_arrays(ctx.need(p.data_stage) / "split.npz", p.data_stage)
    data = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "classes"}
    classes = [str(c) for c in arrays["classes"]]
    model = initial_model(p, ctx, len(classes))
    set_trainable(model, p.regime)
    trainable, total = count_params(model)
    meta = {"model": p.model, "num_classes": len(classes), "image_size": p.resolution, "resolution": p.resolution,
            "input": "imagenet", "classes": classes, "regime": p.regime}
    started = time.perf_counter()
    if p.regime == "linear_probe" and p.cache_features and not p.augment:
        run_state, mode = probe_on_cached_features(model, data, p, ctx, meta), "cached_features"
    else:
        prepare = ImagenetBatch(p.resolution, p.augment, generator=torch.Generator().manual_seed(ctx.seed + 1))
        run_state, mode = fit(model, data, prepare, p, ctx, meta=meta), "full_forward"
    seconds = time.perf_counter() - started
    history = run_state["history"]
    atomic_write_json(ctx.out_dir / "history.json", history)
    plot_history(history, ctx.out_dir / "curves.png", f"{ctx.experiment}/{ctx.stage}")
    atomic_write_text(ctx.out_dir / "report.md", _fragment(ctx, p, run_state, mode, trainable))
    n = len(data["y_train"])
    ctx.record(epochs=len(history), samples_per_epoch=n, total_samples=n * len(history), trainable_params=trainable,
               total_params=total, throughput_per_s=round(n * len(history) / seconds, 1),
               precision=f"amp-{p.amp_dtype}" if p.amp and ctx.device == "cuda" else "fp32",
               peak_gpu_mem_mb=peak_gpu_mem_mb(), device_name=device_name(), probe_mode=mode,
               resolution=p.resolution, regime=p.regime)
    return {"val_acc": run_state["best_acc"], "best_epoch": run_state["best_epoch"], "epochs_run": len(history),
            "early_stop_epoch": run_state.get("early_stop_epoch"), "probe_mode": mode, "regime": p.regime,
            "trainable_params": trainable}


def probe_on_cached_features(model, data: dict, p: FinetuneParams, ctx: StageContext, meta: dict) -> dict:
    """Backbone features once (eval mode, no augmentation), then the shared loop trains the head."""
    import torch

    from jobs.training.loop import fit, resolve_device, save_atomic
    from jobs.training.transforms import ImagenetBatch, identity
    device = resolve_device(ctx.device)
    head, model.fc = model.fc, torch.nn.Identity()
    started = time.perf_counter()
    features = {f"x_{s}": extract_features(model, data[f"x_{s}"], ImagenetBatch(p.resolution), device, p)
                for s in ("train", "val")}
    ctx.log.info("cached %d x %d backbone features in %.1f s", *features["x_train"].shape,
                 time.perf_counter() - started)
    model.fc = head
    run_state = fit(head, {**features, "y_train": data["y_train"], "y_val": data["y_val"]}, identity, p, ctx)
    best = torch.load(ctx.out_dir / "best.pt", map_location="cpu", weights_only=False)
    model.fc.load_state_dict(best["model"])      # the head's best epoch inside the whole model
    save_atomic(ctx.out_dir / "best.pt", {"model": model.cpu().state_dict(), "epoch": best["epoch"],
                                    "val_acc": best["val_acc"], "meta": meta})
    return run_state


def extract_features(backbone, x, prepare, device, p: FinetuneParams):
    """(N, H, W) uint8 -> (N, 512) float32 features, in eval mode."""
    import torch
    backbone.eval().to(device)
    if p.channels_last:
        backbone.to(memory_format=torch.channels_last)
    out = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=p.amp and device.type == "cuda"):
        for start in range(0, len(x), p.eval_batch_size):
            batch = prepare(x[start:start + p.eval_batch_size].to(device), False)
            if p.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            out.append(backbone(batch).float())
    return torch.cat(out)


def _fragment(ctx, p: FinetuneParams, run_state: dict, mode: str, trainable: int) -> str:
    return (f"### {ctx.stage} ({p.regime}, {trainable:,} trainable parameters, {p.resolution} px, {mode})\n\n"
            f"![curves](curves.png)\n\nBest val accuracy {100 * run_state['best_acc']:.2f}% at epoch "
            f"{run_state['best_epoch']} of {len(run_state['history'])}.\n")
