"""Stage kind `train_classifier`: a model trained by the shared loop on an upstream split."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.registry import StageContext, register
from pipeline.state import atomic_write_json, atomic_write_text

from jobs.training.loop import TrainParams


@dataclass
class ClassifierTrainParams(TrainParams):
    model: str = "small_cnn"
    data_stage: str = "preprocess"


@register("train_classifier", ClassifierTrainParams)
def run(p: ClassifierTrainParams, ctx: StageContext) -> dict:
    import torch

    from jobs.stages.digits import load_split
    from jobs.models.registry import build_model, count_params
    from jobs.evaluation.plots import plot_history
    from jobs.training.loop import device_name, environment_summary, fit, peak_gpu_mem_mb, seed_everything
    from jobs.training.transforms import grey_batch

    seed_everything(ctx.seed, ctx.log)
    ctx.log.info("environment: %s", environment_summary())
    arrays = load_split(ctx.need(p.data_stage))
    data = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "classes"}
    classes = [str(c) for c in arrays["classes"]]
    image_size = data["x_train"].shape[-1]
    model = build_model(p.model, len(classes), image_size)
    trainable, total = count_params(model)
    meta = {"model": p.model, "num_classes": len(classes), "image_size": image_size, "classes": classes}
    run_state = fit(model, data, grey_batch, p, ctx, meta=meta)
    history = run_state["history"]
    atomic_write_json(ctx.out_dir / "history.json", history)
    plot_history(history, ctx.out_dir / "curves.png", f"{ctx.experiment}/{ctx.stage}")
    atomic_write_text(ctx.out_dir / "report.md", _fragment(ctx, run_state))
    n = len(data["y_train"])
    train_seconds = sum(h["seconds"] for h in history)
    ctx.record(epochs=len(history), samples_per_epoch=n, total_samples=n * len(history),
               trainable_params=trainable, total_params=total,
               throughput_per_s=round(n * len(history) / train_seconds, 1) if train_seconds else None,
               precision=f"amp-{p.amp_dtype}" if p.amp and ctx.device == "cuda" else "fp32",
               peak_gpu_mem_mb=peak_gpu_mem_mb(), device_name=device_name())
    return {"val_acc": run_state["best_acc"], "best_epoch": run_state["best_epoch"],
            "epochs_run": len(history), "early_stop_epoch": run_state.get("early_stop_epoch")}


def _fragment(ctx: StageContext, run_state: dict) -> str:
    h = run_state["history"][-1]
    return (f"### {ctx.stage}: training curves\n\n![curves](curves.png)\n\n"
            f"Best val accuracy {100 * run_state['best_acc']:.2f}% at epoch {run_state['best_epoch']} of "
            f"{len(run_state['history'])}; last epoch train loss {h['train_loss']:.4f}.\n")
