"""Stage kind `train`: any registry model (project, torchvision, timm) with config surgery, trained
by the shared loop (jobs/training/loop.py, fit) on an upstream split.npz, grey or colour.

Order: create_model (pretrained weights, new head) -> `init_from` an upstream best.pt -> surgery
steps in the config's order -> fit. When only the head trains on fixed inputs, the backbone's
features are computed once and the head is fitted on them (jobs/training/features.py; `probe_mode`
in accounting.json says which way it ran). best.pt's `meta` holds what evaluate needs to rebuild
the same model and input transform (jobs/stages/evaluate.py, rebuild_model).
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pipeline.contract import ConfigError, StageContext, register
from safeio import atomic_write_json, atomic_write_text

from jobs.models.spec import ModelSpec
from jobs.training.params import TrainParams


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
        default_factory=list, metadata={"help": "on whole uint8 batches on the device, training only: rotate and "
                                                "resized_crop with the resize in one resampling, then the rest in order"})
    rotate_deg: float = field(default=15.0, metadata={
        "min": 0.0, "max": 180.0, "help": "augment rotate: angle drawn uniformly in +-this many degrees"})
    crop_area: list[float] = field(default_factory=lambda: [0.35, 1.0], metadata={
        "help": "augment resized_crop: [min, max] share of the image's area kept, then resized back"})
    normalize: Literal["imagenet", "dataset", "mean_image", "none"] = field(default="imagenet", metadata={
        "help": "imagenet / dataset: per-channel mean and std; mean_image: pixels 0..255 minus the training "
                "set's mean image (the MLP practical's preprocessing; needs resolution 0); none: [0, 1]"})
    cache_features: bool = field(default=True, metadata={
        "help": "only the head trains, no augment/mixup/cutmix: backbone features once, then the head on them"})
    sample_grid: bool = field(default=False, metadata={
        "help": "write augmented_grid.png: 16 training images as the model sees them in training, with labels"})
    weights_stage: str = field(default="download", metadata={
        "help": "pretrained: imagenet: the upstream stage that staged the weights (its manifest is checked)"})

    def __post_init__(self):
        area = self.crop_area
        if len(area) != 2 or not 0 < area[0] <= area[1] <= 1:
            raise ConfigError("crop_area", f"got {area}; expected [min, max] with 0 < min <= max <= 1, e.g. [0.35, 1.0]")


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


@register("train", TrainStageParams, several_processes=True)   # data parallel: jobs/training/distributed.py
def run(p: TrainStageParams, ctx: StageContext) -> dict:
    return fit_model(p, ctx)


def fit_model(p: TrainStageParams, ctx: StageContext, on_epoch=None, train_on_val: bool = False) -> dict:
    """What kind `train` does, also for the search's trials and its retrain (jobs/stages/search.py):
    build, fit, write outputs and accounting into ctx.out_dir; the metrics. `on_epoch` goes to the
    loop (a trial's pruning); `train_on_val` trains on train + val and returns the final epoch's
    test accuracy (the val numbers are then of seen images, not a measure)."""
    import torch

    from jobs.data.files import load_split
    from jobs.models.registry import count_params, use_weights_cache
    from jobs.training.loop import determinism_flags, environment_summary, seed_everything

    use_weights_cache(ctx.cache_dir, offline=True)
    if p.model.pretrained == "imagenet":
        check_staged_weights(ctx, p.weights_stage)
    seed_everything(ctx.seed, ctx.log)
    facts = {"environment": environment_summary(), "determinism": determinism_flags()}
    ctx.log.info("environment: %s", facts["environment"])
    ctx.log.info("determinism: %s", facts["determinism"])
    arrays = load_split(ctx.load_upstream, p.data_stage)
    data = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "classes"}
    if train_on_val:
        data["x_train"] = torch.cat([data["x_train"], data["x_val"]])
        data["y_train"] = torch.cat([data["y_train"], data["y_val"]])
    classes = [str(c) for c in arrays["classes"]]
    model, summaries, meta = build(p, ctx, data["x_train"], len(classes), facts)
    meta["classes"] = classes
    prepare = make_transform(meta, p.augment, torch.Generator().manual_seed(ctx.seed + 1))
    facts["transforms"] = log_transform(ctx, prepare, data)
    if p.sample_grid and ctx.is_main:
        write_sample_grid(ctx, meta, p.augment, data, classes)
    trainable, total = count_params(model)
    ctx.log.info("params: trainable %s of %s (%.1f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    run_state, mode = train_model(model, data, prepare, p, ctx, meta, on_epoch)
    history = run_state["history"]
    facts.update(summaries=summaries, mode=mode, trainable=trainable, total=total, classes=classes)
    per_epoch = p.steps_per_epoch * p.batch_size or len(data["y_train"])    # samples one epoch draws
    if ctx.is_main:                  # with several processes, rank 0 writes; the others computed alike
        _write_outputs(ctx, p, run_state, facts)
        _record(ctx, p, run_state, mode, per_epoch, trainable, total, meta["resolution"])
    counts = {"epochs_run": len(history), "early_stop_epoch": run_state.get("early_stop_epoch"),
              "trainable_params": trainable, "total_params": total, "probe_mode": mode}
    if train_on_val:     # val images were trained on: no val numbers, the test split's instead
        return {**final_test_accuracy(model, data, prepare, p, ctx, meta), "val_acc": None,
                "best_epoch": len(history), **counts}
    return {"val_acc": run_state["best_acc"], "best_epoch": run_state["best_epoch"],
            "val_acc_per_epoch": [round(h["val_acc"], 4) for h in history],
            "train_val_gap": [round(h["train_acc"] - h["val_acc"], 4) for h in history], **counts}


def check_staged_weights(ctx: StageContext, stage: str) -> None:
    """ImageNet weights come only from what the download stage staged in the cache, checked
    against its sha256 manifest (a damaged file stops here, naming it and the stage to rerun)."""
    from jobs.data.files import verify_manifest
    ctx.need(stage)                  # it must be upstream, so it ran first
    verify_manifest(ctx.cache_dir, stage)


def final_test_accuracy(model, data: dict, prepare, p: TrainStageParams, ctx: StageContext, meta: dict) -> dict:
    """The final epoch's model on the test split; best.pt becomes that model (trained on train +
    val there is no held-out epoch to pick), so evaluate stages read what was measured."""
    from jobs.training.loop import BEST_CHECKPOINT, evaluate, resolve_device, save_atomic
    device = resolve_device(ctx.device)
    model.to(device)
    test = evaluate(model, data["x_test"], data["y_test"], prepare, device, p)
    if ctx.is_main:
        save_atomic(ctx.out_dir / BEST_CHECKPOINT, {"model": model.state_dict(), "epoch": p.epochs, "val_acc": None,
                                                    "test_acc": test["acc"], "meta": meta})
    ctx.log.info("final model on the test split (%d images): acc %.2f%%", len(data["y_test"]), 100 * test["acc"])
    return {"test_acc": test["acc"], "test_loss": test["loss"]}


def train_model(model, data: dict, prepare, p: TrainStageParams, ctx: StageContext, meta: dict, on_epoch=None):
    """fit on the full forward, or the head alone on cached backbone features when that computes
    the same (jobs/training/features.py); returns (run state, mode) and logs the mode and why."""
    from jobs.training.features import CACHED, FULL, cache_blocker, fit_head_on_features
    from jobs.training.loop import fit
    blocker = cache_blocker(model, p)
    if not blocker:
        ctx.log.info("training mode %s: only the head trains on fixed inputs, so the backbone's features are "
                     "computed once", CACHED)
        return fit_head_on_features(model, data, prepare, p, ctx, meta, on_epoch), CACHED
    ctx.log.info("training mode %s: %s", FULL, blocker)
    return fit(model, data, prepare, p, ctx, meta=meta, on_epoch=on_epoch), FULL


def _write_outputs(ctx: StageContext, p: TrainStageParams, run_state: dict, facts: dict) -> None:
    from jobs.evaluation.plots import plot_history
    history = run_state["history"]
    atomic_write_json(ctx.out_dir / "history.json", history)
    plot_history(history, ctx.out_dir / "curves.png", f"{ctx.experiment}/{ctx.stage}")
    from jobs.training.summary import train_summary
    grid = (ctx.out_dir / "augmented_grid.png").exists()
    atomic_write_text(ctx.report_path, train_summary(ctx.stage, ctx.seed, p, run_state, facts, grid))


def _record(ctx: StageContext, p: TrainStageParams, run_state: dict, mode: str, n: int, trainable: int, total: int,
            resolution: int) -> None:
    """Accounting; throughput counts the feature pass too when the head trained on cached features."""
    from jobs.training.loop import device_name, peak_gpu_mem_mb
    history = run_state["history"]
    seconds = sum(h["seconds"] for h in history) + run_state.get("feature_seconds", 0.0)
    ctx.record(epochs=len(history), samples_per_epoch=n, total_samples=n * len(history),
               trainable_params=trainable, total_params=total,
               throughput_per_s=round(n * len(history) / seconds, 1) if seconds else None,
               precision=f"amp-{p.amp_dtype}" if p.amp and ctx.device == "cuda" else "fp32",
               peak_gpu_mem_mb=peak_gpu_mem_mb(), device_name=device_name(), resolution=resolution,
               model=p.model.name, probe_mode=mode)
    if "feature_seconds" in run_state:
        ctx.record(feature_seconds=run_state["feature_seconds"])


def build(p: TrainStageParams, ctx: StageContext, x_train, num_classes: int, facts: dict):
    """The model (weights, init_from, surgery), the surgery summaries and best.pt's meta."""
    from jobs.models.registry import create_model
    from jobs.models.surgery import apply_surgery
    native = int(x_train.shape[1])
    resolution = p.resolution or native
    channels = 3 if x_train.dim() == 4 else 1
    _log_pretrained(ctx, p.model)
    facts["model"] = {}
    model = create_model(p.model, num_classes, ctx.log, image_size=resolution, info=facts["model"])
    upstream = _read_upstream_best(ctx, p.init_from) if p.init_from else None
    # An upstream model built with the same structural surgery (se, replace_activation) has those
    # modules' weights too: load it after the surgery. Otherwise before, into the plain network.
    after = upstream is not None and _structural(p.surgery) and \
        _structural(upstream.get("meta", {}).get("surgery", [])) == _structural(p.surgery)
    if upstream is not None and not after:
        _load_upstream_weights(ctx, model, p.init_from, upstream)
    summaries = apply_surgery(model, p.surgery, ctx.log)
    if after:
        ctx.log.info("init_from %s after the surgery: it was trained with the same se/replace_activation steps",
                     p.init_from)
        _load_upstream_weights(ctx, model, p.init_from, upstream)
    for s in summaries:
        ctx.log.info("surgery %s: %s", s["op"], {k: v for k, v in s.items() if k not in ("op", "replaced")})
    spec = {**asdict(p.model), "pretrained": "none"}     # best.pt holds every weight; rebuild needs none
    meta = {"spec": spec, "pretrained_at_train": p.model.pretrained, "surgery": p.surgery,
            "num_classes": num_classes, "resolution": resolution, "native": native, "image_size": resolution,
            "channels": channels, "model_channels": model_channels(p.model), "normalize": p.normalize,
            "model": p.model.name, "rotate_deg": p.rotate_deg, "crop_area": list(p.crop_area)}
    if p.normalize == "dataset":
        from jobs.training.transforms import channel_stats
        meta["mean"], meta["std"] = channel_stats(x_train, meta["model_channels"])
    elif p.normalize == "mean_image":
        from jobs.training.transforms import mean_image
        meta["mean"] = mean_image(x_train, meta["model_channels"])
    return model, summaries, meta


def make_transform(meta: dict, augment, generator):
    from jobs.training.transforms import transform_from_meta
    return transform_from_meta(meta, augment, generator)


def log_transform(ctx: StageContext, prepare, data: dict) -> list[str]:
    """The transform summary for train and val, and one batch's shape per split (val transform: it
    draws nothing); the lines, also for the report."""
    lines = [f"transform {prepare.describe(True)}", f"transform {prepare.describe(False)}"]
    for split in ("train", "val"):
        xb = data[f"x_{split}"][:8]
        out = prepare(xb, False)
        lines.append(f"one {split} batch: x {tuple(xb.shape)} {str(xb.dtype).replace('torch.', '')} -> input "
                     f"{tuple(out.shape)} {str(out.dtype).replace('torch.', '')}")
    for line in lines:
        ctx.log.info("%s", line)
    return lines


def write_sample_grid(ctx: StageContext, meta: dict, augment, data: dict, classes: list[str], n: int = 16) -> None:
    """augmented_grid.png: the first n training images after the training transform (augmented,
    then un-normalised for display), titled with their (relabelled) class. The transform has a
    generator of its own, so drawing the grid leaves training's random numbers as they were."""
    import torch

    from jobs.evaluation.plots import plot_image_grid
    grid_transform = make_transform(meta, augment, torch.Generator().manual_seed(ctx.seed + 2))
    x, y = data["x_train"][:n], data["y_train"][:n].tolist()
    with torch.no_grad():
        shown = grid_transform(x, True)
    mean = shown.new_tensor(grid_transform.mean).view(1, -1, 1, 1)
    std = shown.new_tensor(grid_transform.std).view(1, -1, 1, 1)
    images = (shown * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()      # (n, R, R, C)
    labels = [f"{label}: {classes[label]}" for label in y]
    plot_image_grid(images, labels, ctx.out_dir / "augmented_grid.png", f"{ctx.stage}: training inputs, augment "
                    f"{list(augment) or 'none'} (label id: class)")
    ctx.log.info("sample grid: %d augmented training images with their labels in %s", len(images),
                 ctx.out_dir / "augmented_grid.png")


def _log_pretrained(ctx: StageContext, spec: ModelSpec) -> None:
    from jobs.training.summary import pretrained_reason
    ctx.log.info("model %s, pretrained: %s (%s)", spec.name, spec.pretrained, pretrained_reason(spec.pretrained))


def _structural(surgery: list[dict]) -> list[dict]:
    """The steps that add or replace modules (every step but freeze)."""
    return [step for step in surgery if "freeze" not in step]


def _read_upstream_best(ctx: StageContext, stage: str) -> dict:
    import torch

    from jobs.training.loop import BEST_CHECKPOINT
    return ctx.load_upstream(stage, BEST_CHECKPOINT, lambda path: torch.load(path, map_location="cpu",
                                                                             weights_only=False))


def _load_upstream_weights(ctx: StageContext, model, stage: str, best: dict) -> None:
    """An upstream best.pt into the model (see build for before or after surgery); the head is
    kept at random init when its shape differs (another number of classes)."""
    from jobs.models.registry import find_head
    from jobs.training.loop import BEST_CHECKPOINT
    state, own = best["model"], model.state_dict()
    head = find_head(model)[0] + "."
    skipped = [k for k, v in state.items() if k.startswith(head) and k in own and own[k].shape != v.shape]
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if unexpected or any(k not in skipped for k in missing):
        raise ValueError(f"init_from {stage}: best.pt does not fit model {type(model).__name__}: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]} (init_from loads after surgery only when "
                         f"{stage!r} had the same se/replace_activation steps)")
    ctx.log.info("init_from %s: %d tensors from %s%s", stage, len(state) - len(skipped),
                 ctx.need(stage) / BEST_CHECKPOINT, f"; head re-initialised ({', '.join(skipped)})" if skipped else "")
