"""One training loop for every regime: train_one_epoch / evaluate, checkpoints, resume, early stop.

A regime is configuration (TrainParams), not a copy of this file. Data are in-memory tensors
(uint8 images + int64 labels); a `prepare` function turns a uint8 batch into model input on the
training device, so no per-sample Python work happens in the hot loop.
"""
from __future__ import annotations

import math
import random
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from safeio import atomic_path

from jobs.training.distributed import Dist
from jobs.training.params import FitEnv, TrainParams  # noqa: F401 - the loop's parameters, re-exported

BEST_CHECKPOINT = "best.pt"    # the best epoch's weights and meta; evaluation and init_from read it

Prepare = Callable[[torch.Tensor, bool], torch.Tensor]   # (uint8 batch, training) -> float input


def seed_everything(seed: int, log) -> None:
    """One seed for every RNG; deterministic kernels where torch has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    log.info("seed %d; deterministic algorithms on (ops without a deterministic kernel warn in this log)", seed)


def determinism_flags() -> str:
    """The switches seed_everything sets, as they are now (for the log and the report)."""
    return (f"cudnn.deterministic={torch.backends.cudnn.deterministic} cudnn.benchmark={torch.backends.cudnn.benchmark} "
            f"deterministic_algorithms={torch.are_deterministic_algorithms_enabled()}")


def device_name() -> str:
    """The GPU's name, else the CPU model from /proc/cpuinfo."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "cpu"


def environment_summary() -> str:
    cuda = torch.version.cuda if torch.cuda.is_available() else "no CUDA device"
    device = device_name()
    try:
        import torchvision
        tv = torchvision.__version__
    except ImportError:
        tv = "not installed"
    import platform
    return (f"python {platform.python_version()}, torch {torch.__version__}, torchvision {tv}, "
            f"CUDA {cuda}, device {device}, threads {torch.get_num_threads()}")


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("this stage asks for a GPU (resources.gpus > 0) but no CUDA device is visible; "
                           "run it on a GPU partition or set resources.gpus=0 to train on the CPU")
    return torch.device(requested)


def make_optimizer(params, p: TrainParams) -> torch.optim.Optimizer:
    if p.optimizer == "sgd":
        # Nesterov needs momentum; momentum 0 is plain SGD, w -= lr * (grad + weight_decay * w).
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay,
                               nesterov=p.momentum > 0)
    if p.optimizer == "adam":   # L2 added to the gradient (coupled), unlike AdamW's decoupled decay
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)


def make_scheduler(opt, p: TrainParams, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warmup, then cosine to zero, constant, or step (x gamma every step_size epochs)."""
    total = max(1, p.epochs * steps_per_epoch)
    warmup = int(p.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if p.schedule == "constant":
            return 1.0
        if p.schedule == "step":
            return p.gamma ** ((step // steps_per_epoch) // p.step_size)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def batches(n: int, batch_size: int, generator: torch.Generator | None):
    """Index batches; shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def epoch_batches(n: int, p: TrainParams, generator: torch.Generator):
    """One training epoch's index batches: a shuffled pass over the n images, or with
    steps_per_epoch, that many full batches from successive shuffled passes (each epoch starts
    a fresh pass; what is left of the last one is not carried over, so an epoch is a function
    of the generator's state alone and resume stays exact)."""
    if not p.steps_per_epoch:
        yield from batches(n, p.batch_size, generator)
        return
    order = torch.empty(0, dtype=torch.long)
    for _ in range(p.steps_per_epoch):
        if len(order) < p.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        yield order[:p.batch_size]
        order = order[p.batch_size:]


def steps_in_epoch(n: int, p: TrainParams) -> int:
    return p.steps_per_epoch or math.ceil(n / p.batch_size)


def autocast(device: torch.device, p: TrainParams):
    """Mixed precision on CUDA when p.amp asks for it; a no-op context elsewhere."""
    enabled = p.amp and device.type == "cuda"
    dtype = torch.bfloat16 if p.amp_dtype == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def train_mode(model: nn.Module) -> None:
    """model.train(), except BatchNorm layers whose parameters are frozen: their running
    statistics stay fixed too, so a frozen backbone really is frozen."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(q.requires_grad for q in params):
                module.eval()


def make_loss(p: TrainParams) -> nn.CrossEntropyLoss:
    """The training loss: cross-entropy, with label smoothing when asked."""
    return nn.CrossEntropyLoss(label_smoothing=p.label_smoothing)


def mix_batch(inputs: torch.Tensor, targets: torch.Tensor, p: TrainParams, generator: torch.Generator | None):
    """MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) on a prepared batch. Returns
    (inputs, targets_a, targets_b, lam): the loss is lam * CE(a) + (1 - lam) * CE(b). Without
    either alpha, the batch as it is and lam = 1. Random draws come from `generator` (the loop's,
    saved in the resume checkpoint), so a run is reproducible and resumes exactly."""
    use = [kind for kind, alpha in (("mixup", p.mixup_alpha), ("cutmix", p.cutmix_alpha)) if alpha > 0]
    if not use:
        return inputs, targets, targets, 1.0
    draw = torch.randint(0, 2**31 - 1, (3,), generator=generator).tolist()
    kind = use[draw[0] % len(use)]
    rng = np.random.default_rng(draw[1])
    lam = float(rng.beta(*(2 * [p.mixup_alpha if kind == "mixup" else p.cutmix_alpha])))
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(draw[2])).to(inputs.device)
    if kind == "mixup":
        return lam * inputs + (1 - lam) * inputs[perm], targets, targets[perm], lam
    h, w = inputs.shape[-2:]                                   # a box of area (1 - lam), clipped at the edges
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = inputs.clone()
    mixed[..., y0:y1, x0:x1] = inputs[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)                  # the pasted area's true share
    return mixed, targets, targets[perm], lam


def mixed_loss(loss_fn, logits: torch.Tensor, targets_a: torch.Tensor, targets_b: torch.Tensor, lam: float):
    if lam == 1.0:
        return loss_fn(logits, targets_a)
    return lam * loss_fn(logits, targets_a) + (1 - lam) * loss_fn(logits, targets_b)


def train_one_epoch(model, x, y, prepare: Prepare, opt, sched, scaler, device, p: TrainParams,
                    generator, log, epoch: int, dist: Dist | None = None, progress=None) -> dict:
    """One epoch; with several processes (`dist`), this rank's share of every global batch, and
    loss, accuracy and images per second over all ranks. `progress` hears of every step (it
    throttles its own writes)."""
    dist = dist or Dist()
    train_mode(model)
    loss_fn = make_loss(p)
    total_loss, correct, seen = 0.0, 0, 0
    steps = steps_in_epoch(len(y), p)
    started = time.perf_counter()
    for step, idx in enumerate(epoch_batches(len(y), p, generator), 1):
        idx = dist.shard(idx)
        inputs, targets = _to_device(x[idx], y[idx], prepare, device, p, training=True)
        inputs, targets_a, targets_b, lam = mix_batch(inputs, targets, p, generator)
        targets = targets_a if lam >= 0.5 else targets_b             # train acc: against the dominant target
        with autocast(device, p):
            logits = model(inputs)                                   # (N, classes)
            loss = mixed_loss(loss_fn, logits, targets_a, targets_b, lam)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        if progress is not None:     # rank 0's running numbers; with several ranks the speed of all
            speed = {} if dist.active else {"images_per_s": seen / (time.perf_counter() - started)}
            progress(epoch - 1 + step / steps, p.epochs, "epoch", train_loss=total_loss / seen, **speed)
        if step % p.log_every == 0 and step < steps:
            # Plain lines, no carriage returns: readable in a SLURM log file.
            log.info("epoch %d step %d/%d | loss %.4f | %.0f img/s", epoch, step, steps,
                     total_loss / seen, seen / (time.perf_counter() - started))
    elapsed = time.perf_counter() - started
    total_loss, correct, seen = dist.sum(total_loss, correct, seen)
    return {"loss": total_loss / seen, "acc": correct / seen, "seconds": elapsed, "img_per_s": seen / elapsed}


@torch.no_grad()
def evaluate(model, x, y, prepare: Prepare, device, p: TrainParams, batch_size: int | None = None) -> dict:
    """Mean loss, accuracy and predictions over (x, y)."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, preds = 0.0, []
    for idx in batches(len(y), batch_size or p.batch_size, None):
        inputs, targets = _to_device(x[idx], y[idx], prepare, device, p, training=False)
        with autocast(device, p):
            logits = model(inputs)
        total_loss += loss_fn(logits.float(), targets).item()
        preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds)
    return {"loss": total_loss / len(y), "acc": (pred == y).float().mean().item(), "pred": pred}


def _to_device(xb, yb, prepare: Prepare, device, p: TrainParams, training: bool):
    inputs = prepare(xb.to(device, non_blocking=True), training)     # (N, C, H, W) float
    if p.channels_last and inputs.dim() == 4:     # images; cached features are (N, D)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, yb.to(device, non_blocking=True)


def fit(model: nn.Module, data: dict[str, torch.Tensor], prepare: Prepare, p: TrainParams, env: FitEnv,
        trainable=None, meta: dict | None = None, best_model: nn.Module | None = None,
        on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train with per-epoch checkpoints; resume from env.checkpoint_path when it matches this run.

    data: x_train, y_train, x_val, y_val (uint8 images, int64 labels; or features, with an
    identity `prepare`). Returns the history and the best epoch; the best weights (with `meta`,
    what an evaluation needs to rebuild the model) are in env.out_dir / "best.pt": those of
    `best_model` when given (the whole network around a head trained on cached features).
    `on_epoch(epoch, history entry)` runs after each epoch's checkpoint is written: a search
    reports the epoch's val numbers to its pruner there, and may stop the run by raising.
    """
    from jobs.training.distributed import setup, teardown
    dist = setup(env, p.dist_timeout_s)
    try:
        return _fit(model, data, prepare, p, env, trainable, meta, best_model, dist, on_epoch)
    finally:
        teardown(dist)


def _fit(model, data, prepare, p: TrainParams, env: FitEnv, trainable, meta, best_model, dist: Dist,
         on_epoch) -> dict:
    from jobs.training.distributed import wrap
    device = resolve_device(env.device)
    if device.type == "cuda" and dist.active:
        device = torch.device("cuda", dist.local_rank)
    model.to(device)
    if p.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [q for q in (trainable if trainable is not None else model.parameters()) if q.requires_grad]
    net = wrap(model, dist, device, p.sync_bn)           # what the training steps call (DDP with several ranks)
    model = net.module if dist.active else net            # SyncBatchNorm-converted, if asked; eval and weights
    steps_per_epoch = steps_in_epoch(len(data["y_train"]), p)
    opt = make_optimizer(params, p)
    sched = make_scheduler(opt, p, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=p.amp and p.amp_dtype == "fp16" and device.type == "cuda")
    generator = torch.Generator().manual_seed(env.seed)
    run = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "history": []}
    if env.checkpoint_path.exists():
        run = _resume(env, model, opt, sched, scaler, generator, run)
    first = p.epochs + 1 if run.get("early_stop_epoch") else run["epoch"] + 1  # an early stop is final
    if env.progress is not None and first <= p.epochs:
        env.progress(first - 1, p.epochs, "epoch")     # the ETA's origin: a resumed run counts from here
    for epoch in range(first, p.epochs + 1):
        train = train_one_epoch(net, data["x_train"], data["y_train"], prepare, opt, sched, scaler, device, p,
                                generator, env.log, epoch, dist, env.progress)
        val = evaluate(model, data["x_val"], data["y_val"], prepare, device, p)
        val["loss"], val["acc"] = dist.from_main(val["loss"], val["acc"])   # one decision on every rank
        run["history"].append({"epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"],
                               "val_loss": val["loss"], "val_acc": val["acc"], "lr": sched.get_last_lr()[0],
                               "img_per_s": train["img_per_s"], "seconds": train["seconds"],
                               "samples": p.steps_per_epoch * p.batch_size or len(data["y_train"])})
        if val["acc"] > run["best_acc"]:
            run.update(best_acc=val["acc"], best_epoch=epoch)
            if dist.is_main:
                save_atomic(env.out_dir / BEST_CHECKPOINT, {"model": (best_model or model).state_dict(),
                                                            "epoch": epoch, "val_acc": val["acc"], "meta": meta or {}})
        run["epoch"] = epoch
        stop = p.patience and epoch - run["best_epoch"] >= p.patience
        run["early_stop_epoch"] = epoch if stop else None
        if dist.is_main:          # the one writer; every rank resumes from it
            save_atomic(env.checkpoint_path, _checkpoint(env, model, opt, sched, scaler, generator, run, p))
        # Logged after the checkpoint is on disk: a job killed after this line resumes after this epoch.
        env.log.info("Epoch %d/%d | Train Loss: %.4f | Train Acc: %.2f%% | Val Loss: %.4f | Val Acc: %.2f%% "
                     "| lr %.2e | %.0f img/s", epoch, p.epochs, train["loss"], 100 * train["acc"], val["loss"],
                     100 * val["acc"], sched.get_last_lr()[0], train["img_per_s"])
        if env.progress is not None:
            env.progress(epoch, p.epochs, "epoch", train_loss=train["loss"], val_acc=val["acc"],
                         images_per_s=train["img_per_s"])
        if on_epoch is not None:
            on_epoch(epoch, run["history"][-1])
        if stop:
            env.log.info("early stop at epoch %d: no better val acc for %d epochs", epoch, p.patience)
            break
    env.log.info("best val acc %.2f%% at epoch %d", 100 * run["best_acc"], run["best_epoch"])
    return run


def _checkpoint(env: FitEnv, model, opt, sched, scaler, generator, run, p: TrainParams) -> dict:
    """Everything a restarted job needs to continue exactly where this epoch ended."""
    from dataclasses import asdict
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(), "run": run, "config": asdict(p), "fingerprint": env.fingerprint,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "loader": generator.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}


def _resume(env: FitEnv, model, opt, sched, scaler, generator, fresh: dict) -> dict:
    ckpt = _read_checkpoint(env)
    if ckpt is None:
        return fresh
    if ckpt.get("fingerprint") != env.fingerprint:
        env.log.info("ignoring checkpoint from a different config/code (fingerprint %s)", ckpt.get("fingerprint"))
        return fresh
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    generator.set_state(rng["loader"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    run = ckpt["run"]
    env.log.info("resumed from %s after epoch %d (best val acc %.2f%% at epoch %d)", env.checkpoint_path,
                 run["epoch"], 100 * run["best_acc"], run["best_epoch"])
    return run


def _read_checkpoint(env: FitEnv) -> dict | None:
    """The resume checkpoint, or None when it cannot be read (truncated, corrupted): then it is
    set aside under a new name, so it neither fails every later run nor gets lost."""
    path = env.checkpoint_path
    try:
        ckpt = read_checkpoint(path)
        if not isinstance(ckpt, dict) or "run" not in ckpt:
            raise ValueError("not a checkpoint written by this training loop")
        return ckpt
    except Exception as err:  # noqa: BLE001 - any reader error means: start clean
        if env.rank > 0:     # rank 0 sets it aside; the others only start clean too
            env.log.warning("checkpoint %s is unreadable (%s); training starts clean", path, type(err).__name__)
            return None
        aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        env.log.warning("checkpoint %s is unreadable (%s: %s); set aside as %s, training starts clean",
                        path, type(err).__name__, str(err)[:200], aside)
        return None


def read_checkpoint(path) -> dict:
    """A file torch.save wrote here (best.pt, the resume file), on the CPU. Not weights_only: it
    holds meta, config and RNG states besides tensors, and only this project's own files are read."""
    return torch.load(path, map_location="cpu", weights_only=False)


def save_atomic(path, obj) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def peak_gpu_mem_mb() -> float | None:
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)
