"""Stage kind `train`: any registry model (project, torchvision, timm) with config surgery, trained
by the shared loop (train_loop.fit) on an upstream split.npz, grey or colour.

Order: create_model (pretrained weights, new head) -> `init_from` an upstream best.pt -> surgery
steps in the config's order -> fit. best.pt's `meta` holds what evaluate needs to
rebuild the same model and input transform (jobs/evaluate.py, rebuild_model).
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pipeline.registry import StageContext, register
from pipeline.state import atomic_write_json, atomic_write_text

from jobs.models.registry import ModelSpec
from jobs.training.loop import TrainParams


@dataclass
class TrainModelSpec(ModelSpec):
    """ModelSpec with a typed `kwargs`, so the config schema accepts a mapping there."""
    kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "extra constructor arguments"})


@dataclass
class TrainStageParams(TrainParams):
    model: TrainModelSpec = field(default_factory=lambda: TrainModelSpec("resnet18"), metadata={
        "help": "{name, pretrained: none|imagenet|<file>, source: auto|torchvision|timm|project, kwargs}"})
    surgery: list[dict[str, Any]] = field(default_factory=list, metadata={
        "help": "steps applied after the weights load, in order: replace_activation, se, freeze"})
    data_stage: str = "prepare"
    init_from: str = field(default="", metadata={"help": "upstream stage whose best.pt to start from; '' = none"})
    resolution: int = field(default=0, metadata={"min": 0, "help": "input side in pixels; 0 = the data's own"})
    augment: list[Literal["crop_pad", "hflip", "color_jitter", "rotate", "resized_crop"]] = field(
        default_factory=list, metadata={"help": "on whole uint8 batches on the device, training only, in order"})
    normalize: Literal["imagenet", "dataset", "none"] = "imagenet"


def model_channels(spec: ModelSpec) -> int:
    """Input channels the model takes: 3, unless a project net says otherwise (its `in_channels`
    keyword, else that parameter's default: the digits CNN takes 1)."""
    from jobs.models.registry import PROJECT_MODELS
    factory = PROJECT_MODELS.get(spec.name)
    if spec.source not in ("auto", "project") or factory is None:
        return 3
    if "in_channels" in spec.kwargs:
        return int(spec.kwargs["in_channels"])
    param = inspect.signature(factory).parameters.get("in_channels")
    return 3 if param is None or param.default is inspect.Parameter.empty else int(param.default)


@register("train", TrainStageParams)
def run(p: TrainStageParams, ctx: StageContext) -> dict:
    import torch

    from jobs.data.files import load_arrays
    from jobs.stages.finetune import set_offline
    from jobs.models.registry import count_params
    from jobs.evaluation.plots import plot_history
    from jobs.training.loop import device_name, environment_summary, fit, peak_gpu_mem_mb, seed_everything

    set_offline(ctx)
    seed_everything(ctx.seed, ctx.log)
    ctx.log.info("environment: %s", environment_summary())
    ctx.log.info("determinism: cudnn.deterministic=%s cudnn.benchmark=%s deterministic_algorithms=%s",
                 torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                 torch.are_deterministic_algorithms_enabled())
    arrays = load_arrays(ctx.need(p.data_stage) / "split.npz", p.data_stage)
    data = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "classes"}
    classes = [str(c) for c in arrays["classes"]]
    model, summaries, meta = build(p, ctx, data["x_train"], len(classes))
    meta["classes"] = classes
    prepare = make_transform(meta, p.augment, torch.Generator().manual_seed(ctx.seed + 1))
    log_transform(ctx, prepare, data)
    trainable, total = count_params(model)
    ctx.log.info("params: trainable %s of %s (%.1f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    run_state = fit(model, data, prepare, p, ctx, meta=meta)
    history = run_state["history"]
    atomic_write_json(ctx.out_dir / "history.json", history)
    plot_history(history, ctx.out_dir / "curves.png", f"{ctx.experiment}/{ctx.stage}")
    atomic_write_text(ctx.out_dir / "report.md", _fragment(ctx, p, run_state, summaries, trainable, total))
    n, seconds = len(data["y_train"]), sum(h["seconds"] for h in history)
    ctx.record(epochs=len(history), samples_per_epoch=n, total_samples=n * len(history),
               trainable_params=trainable, total_params=total,
               throughput_per_s=round(n * len(history) / seconds, 1) if seconds else None,
               precision=f"amp-{p.amp_dtype}" if p.amp and ctx.device == "cuda" else "fp32",
               peak_gpu_mem_mb=peak_gpu_mem_mb(), device_name=device_name(), resolution=meta["resolution"],
               model=p.model.name)
    return {"val_acc": run_state["best_acc"], "best_epoch": run_state["best_epoch"], "epochs_run": len(history),
            "early_stop_epoch": run_state.get("early_stop_epoch"), "trainable_params": trainable,
            "total_params": total}


def build(p: TrainStageParams, ctx: StageContext, x_train, num_classes: int):
    """The model (weights, init_from, surgery), the surgery summaries and best.pt's meta."""
    from jobs.models.registry import create_model
    from jobs.models.surgery import apply_surgery
    native = int(x_train.shape[1])
    resolution = p.resolution or native
    channels = 3 if x_train.dim() == 4 else 1
    _log_pretrained(ctx, p.model)
    model = create_model(p.model, num_classes, ctx.log, image_size=resolution)
    if p.init_from:
        _load_upstream_weights(ctx, model, p.init_from)
    summaries = apply_surgery(model, p.surgery, ctx.log)
    for s in summaries:
        ctx.log.info("surgery %s: %s", s["op"], {k: v for k, v in s.items() if k not in ("op", "replaced")})
    spec = {**asdict(p.model), "pretrained": "none"}     # best.pt holds every weight; rebuild needs none
    meta = {"spec": spec, "pretrained_at_train": p.model.pretrained, "surgery": p.surgery,
            "num_classes": num_classes, "resolution": resolution, "native": native, "image_size": resolution,
            "channels": channels, "model_channels": model_channels(p.model), "normalize": p.normalize,
            "model": p.model.name}
    if p.normalize == "dataset":
        from jobs.training.transforms import channel_stats
        meta["mean"], meta["std"] = channel_stats(x_train, meta["model_channels"])
    return model, summaries, meta


def make_transform(meta: dict, augment, generator):
    from jobs.training.transforms import transform_from_meta
    return transform_from_meta(meta, augment, generator)


def log_transform(ctx: StageContext, prepare, data: dict) -> None:
    """The transform summary for train and val, and one batch's shape (val transform: it draws nothing)."""
    ctx.log.info("transform %s", prepare.describe(True))
    ctx.log.info("transform %s", prepare.describe(False))
    xb = data["x_train"][:8]
    out = prepare(xb, False)
    ctx.log.info("one batch: x %s %s -> input %s %s", tuple(xb.shape), str(xb.dtype).replace("torch.", ""),
                 tuple(out.shape), str(out.dtype).replace("torch.", ""))


def _log_pretrained(ctx: StageContext, spec: ModelSpec) -> None:
    reasons = {"none": "random init; no pretrained weights asked for, and none can be downloaded offline",
               "imagenet": "ImageNet weights from the local cache (TORCH_HOME / HF cache, staged by the "
                           "download stage; offline)"}
    ctx.log.info("model %s, pretrained: %s (%s)", spec.name, spec.pretrained,
                 reasons.get(spec.pretrained, "weights from a state_dict file"))


def _load_upstream_weights(ctx: StageContext, model, stage: str) -> None:
    """An upstream best.pt into the fresh model, before surgery; the head is kept at random init
    when its shape differs (another number of classes)."""
    import torch

    from jobs.models.registry import find_head
    best = ctx.load_upstream(stage, "best.pt", lambda path: torch.load(path, map_location="cpu", weights_only=False))
    state, own = best["model"], model.state_dict()
    head = find_head(model)[0] + "."
    skipped = [k for k, v in state.items() if k.startswith(head) and k in own and own[k].shape != v.shape]
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if unexpected or any(k not in skipped for k in missing):
        raise ValueError(f"init_from {stage}: best.pt does not fit model {type(model).__name__}: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]} (surgery that renames modules, like se, "
                         f"must not run before init_from)")
    ctx.log.info("init_from %s: %d tensors from %s%s", stage, len(state) - len(skipped),
                 ctx.need(stage) / "best.pt", f"; head re-initialised ({', '.join(skipped)})" if skipped else "")


def _fragment(ctx, p: TrainStageParams, run_state: dict, summaries: list[dict], trainable: int, total: int) -> str:
    h = run_state["history"][-1]
    surgery = "; ".join(s["op"] for s in summaries) or "none"
    return (f"### {ctx.stage}: training curves\n\n![curves](curves.png)\n\n"
            f"`{p.model.name}` (pretrained: {p.model.pretrained}), surgery: {surgery}; trainable params "
            f"{trainable:,} of {total:,}. Best val accuracy {100 * run_state['best_acc']:.2f}% at epoch "
            f"{run_state['best_epoch']} of {len(run_state['history'])}; last epoch train loss "
            f"{h['train_loss']:.4f}.\n")
