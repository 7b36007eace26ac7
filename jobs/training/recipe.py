"""The train recipe that kinds train, hpo (each trial) and retrain share: any registry model
(project, torchvision, timm) with config surgery, trained by the shared loop (loop.py, fit) on an
upstream split.npz, grey or colour, with its outputs, report section and accounting.

Order: create_model (pretrained weights, new head) -> `init_from` an upstream best.pt -> surgery
steps in the config's order -> fit. When only the head trains on fixed inputs, the backbone's
features are computed once and the head is fitted on them (features.py; `probe_mode` in the
accounting says which way it ran). best.pt's `meta` holds what an evaluation needs to rebuild the
same model and input transform (trained.py, rebuild_model).
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from safeio import atomic_write_json, atomic_write_text

from jobs.data.files import UpstreamReader, load_split, verify_manifest
from jobs.models.registry import PROJECT_MODELS, count_params, create_model, find_head, use_weights_cache
from jobs.models.spec import ModelSpec
from jobs.models.surgery import apply_surgery
from jobs.training.features import CACHED, FULL, cache_blocker, fit_head_on_features
from jobs.training.loop import (BEST_CHECKPOINT, FitEnv, determinism_flags, device_name, environment_summary,
                                evaluate, fit, peak_gpu_mem_mb, read_checkpoint, resolve_device, save_atomic,
                                seed_everything)
from jobs.training.params import TrainStageParams
from jobs.training.summary import pretrained_reason, train_summary
from jobs.training.transforms import channel_stats, mean_image, transform_from_meta

GRID_FILE = "augmented_grid.png"


@dataclass(kw_only=True)
class TrainEnv(FitEnv):
    """Where one run of the recipe happens: the loop's FitEnv, and what the recipe reads and
    writes through the stage that runs it. The stage kinds build it from their context."""
    experiment: str
    stage: str
    report_path: Path                     # the stage's section of report.md
    cache_dir: Path                       # pretrained weights, read offline
    need: Callable[[str], Path]           # an upstream stage's folder; refuses one not in the stage's `needs`
    load_upstream: UpstreamReader
    record: Callable[..., None]           # accounting fields, e.g. record(epochs=3)


def run_recipe(p: TrainStageParams, env: TrainEnv, on_epoch=None, train_on_val: bool = False) -> dict:
    """Build, fit, write outputs and accounting into env.out_dir; the metrics. `on_epoch` goes to
    the loop (a trial's pruning); `train_on_val` trains on train + val and returns the final epoch's
    test accuracy (the val numbers are then of seen images, not a measure)."""
    use_weights_cache(env.cache_dir, offline=True)
    if p.model.pretrained == "imagenet":
        check_staged_weights(env, p.weights_stage)
    seed_everything(env.seed, env.log)
    facts = {"environment": environment_summary(), "determinism": determinism_flags()}
    env.log.info("environment: %s", facts["environment"])
    env.log.info("determinism: %s", facts["determinism"])
    data, classes = load_data(env, p.data_stage, train_on_val)
    model, summaries, meta = build(p, env, data["x_train"], len(classes), facts)
    meta["classes"] = classes
    prepare = transform_from_meta(meta, p.augment, torch.Generator().manual_seed(env.seed + 1))
    facts["transforms"] = log_transform(env, prepare, data)
    if p.sample_grid and env.is_main:
        write_sample_grid(env, meta, p.augment, data, classes)
    trainable, total = count_params(model)
    env.log.info("params: trainable %s of %s (%.1f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    run_state, mode = train_model(model, data, prepare, p, env, meta, on_epoch)
    facts.update(summaries=summaries, mode=mode, trainable=trainable, total=total, classes=classes)
    if env.is_main:                  # with several processes, rank 0 writes; the others computed alike
        per_epoch = p.steps_per_epoch * p.batch_size or len(data["y_train"])    # samples one epoch draws
        _write_outputs(env, p, run_state, facts)
        _record(env, p, run_state, mode, per_epoch, trainable, total, meta["resolution"])
    history = run_state["history"]
    counts = {"epochs_run": len(history), "early_stop_epoch": run_state.get("early_stop_epoch"),
              "trainable_params": trainable, "total_params": total, "probe_mode": mode}
    if train_on_val:     # val images were trained on: no val numbers, the test split's instead
        return {**final_test_accuracy(model, data, prepare, p, env, meta), "val_acc": None,
                "best_epoch": len(history), **counts}
    return {"val_acc": run_state["best_acc"], "best_epoch": run_state["best_epoch"],
            "val_acc_per_epoch": [round(h["val_acc"], 4) for h in history],
            "train_val_gap": [round(h["train_acc"] - h["val_acc"], 4) for h in history], **counts}


def load_data(env: TrainEnv, data_stage: str, train_on_val: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The upstream split as tensors (val appended to train with `train_on_val`), and the class names."""
    arrays = load_split(env.load_upstream, data_stage)
    data = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "classes"}
    if train_on_val:
        data["x_train"] = torch.cat([data["x_train"], data["x_val"]])
        data["y_train"] = torch.cat([data["y_train"], data["y_val"]])
    return data, [str(c) for c in arrays["classes"]]


def model_channels(spec: ModelSpec) -> int:
    """Input channels the model takes: 3, unless a project net says otherwise (its `in_channels`
    keyword, else that parameter's default: the digits CNN takes 1)."""
    factory = PROJECT_MODELS.get(spec.name)
    if spec.source not in ("auto", "project") or factory is None:
        return 3
    if "in_channels" in spec.kwargs:
        return int(spec.kwargs["in_channels"])
    param = inspect.signature(factory).parameters.get("in_channels")
    return 3 if param is None or param.default is inspect.Parameter.empty else int(param.default)


def check_staged_weights(env: TrainEnv, stage: str) -> None:
    """ImageNet weights come only from what the download stage staged in the cache, checked
    against its sha256 manifest (a damaged file stops here, naming it and the stage to rerun)."""
    env.need(stage)                  # it must be upstream, so it ran first
    verify_manifest(env.cache_dir, stage)


def final_test_accuracy(model, data: dict, prepare, p: TrainStageParams, env: FitEnv, meta: dict) -> dict:
    """The final epoch's model on the test split; best.pt becomes that model (trained on train +
    val there is no held-out epoch to pick), so evaluate stages read what was measured."""
    device = resolve_device(env.device)
    model.to(device)
    test = evaluate(model, data["x_test"], data["y_test"], prepare, device, p)
    if env.is_main:
        save_atomic(env.out_dir / BEST_CHECKPOINT, {"model": model.state_dict(), "epoch": p.epochs, "val_acc": None,
                                                    "test_acc": test["acc"], "meta": meta})
    env.log.info("final model on the test split (%d images): acc %.2f%%", len(data["y_test"]), 100 * test["acc"])
    return {"test_acc": test["acc"], "test_loss": test["loss"]}


def train_model(model, data: dict, prepare, p: TrainStageParams, env: FitEnv, meta: dict, on_epoch=None):
    """fit on the full forward, or the head alone on cached backbone features when that computes
    the same (features.py); returns (run state, mode) and logs the mode and why."""
    blocker = cache_blocker(model, p)
    if not blocker:
        env.log.info("training mode %s: only the head trains on fixed inputs, so the backbone's features are "
                     "computed once", CACHED)
        return fit_head_on_features(model, data, prepare, p, env, meta, on_epoch), CACHED
    env.log.info("training mode %s: %s", FULL, blocker)
    return fit(model, data, prepare, p, env, meta=meta, on_epoch=on_epoch), FULL


def _write_outputs(env: TrainEnv, p: TrainStageParams, run_state: dict, facts: dict) -> None:
    from jobs.evaluation.plots import plot_history
    history = run_state["history"]
    atomic_write_json(env.out_dir / "history.json", history)
    plot_history(history, env.out_dir / "curves.png", f"{env.experiment}/{env.stage}")
    grid = (env.out_dir / GRID_FILE).exists()
    atomic_write_text(env.report_path, train_summary(env.stage, env.seed, p, run_state, facts, grid))


def _record(env: TrainEnv, p: TrainStageParams, run_state: dict, mode: str, n: int, trainable: int, total: int,
            resolution: int) -> None:
    """Accounting; throughput counts the feature pass too when the head trained on cached features."""
    history = run_state["history"]
    seconds = sum(h["seconds"] for h in history) + run_state.get("feature_seconds", 0.0)
    env.record(epochs=len(history), samples_per_epoch=n, total_samples=n * len(history),
               trainable_params=trainable, total_params=total,
               throughput_per_s=round(n * len(history) / seconds, 1) if seconds else None,
               precision=f"amp-{p.amp_dtype}" if p.amp and env.device == "cuda" else "fp32",
               peak_gpu_mem_mb=peak_gpu_mem_mb(), device_name=device_name(), resolution=resolution,
               model=p.model.name, probe_mode=mode)
    if "feature_seconds" in run_state:
        env.record(feature_seconds=run_state["feature_seconds"])


def build(p: TrainStageParams, env: TrainEnv, x_train, num_classes: int, facts: dict):
    """The model (weights, init_from, surgery), the surgery summaries and best.pt's meta."""
    native = int(x_train.shape[1])
    resolution = p.resolution or native
    env.log.info("model %s, pretrained: %s (%s)", p.model.name, p.model.pretrained,
                 pretrained_reason(p.model.pretrained))
    facts["model"] = {}
    model = create_model(p.model, num_classes, env.log, image_size=resolution, info=facts["model"])
    summaries = _init_and_surgery(model, p, env)
    spec = {**asdict(p.model), "pretrained": "none"}     # best.pt holds every weight; rebuild needs none
    meta = {"spec": spec, "pretrained_at_train": p.model.pretrained, "surgery": p.surgery,
            "num_classes": num_classes, "resolution": resolution, "native": native, "image_size": resolution,
            "channels": 3 if x_train.dim() == 4 else 1, "model_channels": model_channels(p.model),
            "normalize": p.normalize, "model": p.model.name, "rotate_deg": p.rotate_deg,
            "crop_area": list(p.crop_area)}
    if p.normalize == "dataset":
        meta["mean"], meta["std"] = channel_stats(x_train, meta["model_channels"])
    elif p.normalize == "mean_image":
        meta["mean"] = mean_image(x_train, meta["model_channels"])
    return model, summaries, meta


def _init_and_surgery(model, p: TrainStageParams, env: TrainEnv) -> list[dict]:
    """`init_from` and the surgery steps on the built model; the surgery summaries.

    An upstream model built with the same structural surgery (se, replace_activation) has those
    modules' weights too: it loads after the surgery. Otherwise before, into the plain network."""
    upstream = env.load_upstream(p.init_from, BEST_CHECKPOINT, read_checkpoint) if p.init_from else None
    after = upstream is not None and _structural(p.surgery) and \
        _structural(upstream.get("meta", {}).get("surgery", [])) == _structural(p.surgery)
    if upstream is not None and not after:
        _load_upstream_weights(env, model, p.init_from, upstream)
    summaries = apply_surgery(model, p.surgery, env.log)
    if after:
        env.log.info("init_from %s after the surgery: it was trained with the same se/replace_activation steps",
                     p.init_from)
        _load_upstream_weights(env, model, p.init_from, upstream)
    for s in summaries:
        env.log.info("surgery %s: %s", s["op"], {k: v for k, v in s.items() if k not in ("op", "replaced")})
    return summaries


def log_transform(env: FitEnv, prepare, data: dict) -> list[str]:
    """The transform summary for train and val, and one batch's shape per split (val transform: it
    draws nothing); the lines, also for the report."""
    lines = [f"transform {prepare.describe(True)}", f"transform {prepare.describe(False)}"]
    for split in ("train", "val"):
        xb = data[f"x_{split}"][:8]
        out = prepare(xb, False)
        lines.append(f"one {split} batch: x {tuple(xb.shape)} {str(xb.dtype).replace('torch.', '')} -> input "
                     f"{tuple(out.shape)} {str(out.dtype).replace('torch.', '')}")
    for line in lines:
        env.log.info("%s", line)
    return lines


def write_sample_grid(env: TrainEnv, meta: dict, augment, data: dict, classes: list[str], n: int = 16) -> None:
    """augmented_grid.png: the first n training images after the training transform (augmented,
    then un-normalised for display), titled with their (relabelled) class. The transform has a
    generator of its own, so drawing the grid leaves training's random numbers as they were."""
    from jobs.evaluation.plots import plot_image_grid
    grid_transform = transform_from_meta(meta, augment, torch.Generator().manual_seed(env.seed + 2))
    x, y = data["x_train"][:n], data["y_train"][:n].tolist()
    with torch.no_grad():
        shown = grid_transform(x, True)
    mean = shown.new_tensor(grid_transform.mean).view(1, -1, 1, 1)
    std = shown.new_tensor(grid_transform.std).view(1, -1, 1, 1)
    images = (shown * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()      # (n, R, R, C)
    labels = [f"{label}: {classes[label]}" for label in y]
    plot_image_grid(images, labels, env.out_dir / GRID_FILE, f"{env.stage}: training inputs, augment "
                    f"{list(augment) or 'none'} (label id: class)")
    env.log.info("sample grid: %d augmented training images with their labels in %s", len(images),
                 env.out_dir / GRID_FILE)


def _structural(surgery: list[dict]) -> list[dict]:
    """The steps that add or replace modules (every step but freeze)."""
    return [step for step in surgery if "freeze" not in step]


def _load_upstream_weights(env: TrainEnv, model, stage: str, best: dict) -> None:
    """An upstream best.pt into the model (see _init_and_surgery for before or after surgery); the
    head is kept at random init when its shape differs (another number of classes)."""
    state, own = best["model"], model.state_dict()
    head = find_head(model)[0] + "."
    skipped = [k for k, v in state.items() if k.startswith(head) and k in own and own[k].shape != v.shape]
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if unexpected or any(k not in skipped for k in missing):
        raise ValueError(f"init_from {stage}: best.pt does not fit model {type(model).__name__}: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]} (init_from loads after surgery only when "
                         f"{stage!r} had the same se/replace_activation steps)")
    env.log.info("init_from %s: %d tensors from %s%s", stage, len(state) - len(skipped),
                 env.need(stage) / BEST_CHECKPOINT, f"; head re-initialised ({', '.join(skipped)})" if skipped else "")
