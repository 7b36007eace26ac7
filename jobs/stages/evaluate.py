"""Stage kind `evaluate`: each trained model's best checkpoint on the test set.

Per model (models/<stage>/): per-class precision/recall/F1 with the class names, the confusion
matrix as CSV and PNG. Top level: the same files for the model with the best *validation*
accuracy (choosing by test accuracy would leak the test set), ablation.csv comparing the models,
and a report fragment with the table and a short summary of the accuracy/compute trade-off.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.registry import StageContext, register
from pipeline.state import atomic_write_text

from jobs.data.files import load_arrays

ABLATION_COLUMNS = ("stage", "regime", "test_acc", "macro_f1", "trainable_params_m", "epochs", "samples_per_epoch",
                    "epochs_x_samples", "early_stop_epoch", "device", "wall_s")


@dataclass
class EvaluateParams:
    model_stages: list[str] = field(default_factory=lambda: ["train"])
    data_stage: str = "preprocess"
    batch_size: int = field(default=256, metadata={"min": 1})


@register("evaluate", EvaluateParams)
def run(p: EvaluateParams, ctx: StageContext) -> dict:
    import os
    os.environ.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(ctx.cache_dir))
    arrays = load_arrays(ctx.need(p.data_stage) / "split.npz", p.data_stage)
    results = {stage: evaluate_model(ctx.need(stage), arrays, p, ctx, ctx.out_dir / "models" / stage)
               for stage in p.model_stages}
    best = max(results, key=lambda s: results[s]["val_acc"])
    for name in ("confusion_matrix.csv", "per_class.csv", "confusion.png"):
        shutil.copyfile(ctx.out_dir / "models" / best / name, ctx.out_dir / name)
    rows = [ablation_row(stage, results[stage], ctx.need(stage)) for stage in p.model_stages]
    lines = [",".join(ABLATION_COLUMNS)] + [",".join(str(r[c]) for c in ABLATION_COLUMNS) for r in rows]
    atomic_write_text(ctx.out_dir / "ablation.csv", "\n".join(lines) + "\n")
    atomic_write_text(ctx.out_dir / "report.md", _fragment(ctx, rows, results, best))
    ctx.record(total_samples=int(len(arrays["y_test"])) * len(p.model_stages))
    top = results[best]
    return {"test_acc": top["test_acc"], "macro_precision": top["macro_precision"],
            "macro_recall": top["macro_recall"], "macro_f1": top["macro_f1"], "val_acc": top["val_acc"],
            "test_size": top["test_size"], "best_epoch": top["best_epoch"], "best_model": best, "models": results}


def evaluate_model(stage_dir: Path, arrays: dict, p: EvaluateParams, ctx: StageContext, out: Path) -> dict:
    import torch
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from jobs.models.registry import build_model
    from jobs.evaluation.plots import plot_confusion
    from jobs.training.loop import TrainParams, evaluate, resolve_device
    from jobs.training.transforms import make_prepare, transform_from_meta

    best = ctx.load_upstream(stage_dir.name, "best.pt",
                             lambda path: torch.load(path, map_location="cpu", weights_only=False))
    meta = best["meta"]
    if "spec" in meta:                       # written by kind `train`: registry model + surgery
        model, prepare = rebuild_model(meta, ctx.log), transform_from_meta(meta)
    else:
        model, prepare = build_model(meta["model"], meta["num_classes"], meta["image_size"]), make_prepare(meta)
    model.load_state_dict(best["model"])
    device = resolve_device(ctx.device)
    x, y = torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"])
    result = evaluate(model.to(device), x, y, prepare, device, TrainParams(batch_size=p.batch_size))
    pred, true = result["pred"].numpy(), y.numpy()
    classes = meta["classes"]
    labels = list(range(len(classes)))
    prec, rec, f1, support = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(true, pred, labels=labels)
    out.mkdir(parents=True, exist_ok=True)
    _write_tables(out, classes, cm, prec, rec, f1, support)
    acc = float((pred == true).mean())
    plot_confusion(cm, classes, out / "confusion.png", f"{ctx.experiment}/{stage_dir.name}: test (acc {100 * acc:.1f}%)")
    ctx.log.info("%s: test acc %.2f%% | macro P %.3f R %.3f F1 %.3f on %d images", stage_dir.name, 100 * acc,
                 prec.mean(), rec.mean(), f1.mean(), len(true))
    return {"test_acc": acc, "test_loss": result["loss"], "macro_precision": float(prec.mean()),
            "macro_recall": float(rec.mean()), "macro_f1": float(f1.mean()), "test_size": int(len(true)),
            "best_epoch": int(best["epoch"]), "val_acc": float(best["val_acc"]), "regime": meta.get("regime", "")}


def rebuild_model(meta: dict, log):
    """The model a `train` stage saved: its spec (no pretrained weights: best.pt has them all) and
    its surgery steps in order, freeze skipped (it changes no module, only what trains)."""
    from jobs.models.registry import create_model
    from jobs.models.surgery import apply_surgery
    model = create_model({**meta["spec"], "pretrained": "none"}, meta["num_classes"], log,
                         image_size=meta["resolution"])
    apply_surgery(model, [s for s in meta.get("surgery", []) if "freeze" not in s], log)
    return model


def _write_tables(out: Path, classes, cm, prec, rec, f1, support) -> None:
    header = "true\\pred," + ",".join(_csv(c) for c in classes)
    rows = [f"{_csv(c)}," + ",".join(str(int(v)) for v in cm[i]) for i, c in enumerate(classes)]
    atomic_write_text(out / "confusion_matrix.csv", "\n".join([header, *rows]) + "\n")
    lines = ["class,name,precision,recall,f1,support"]
    lines += [f"{i},{_csv(c)},{prec[i]:.4f},{rec[i]:.4f},{f1[i]:.4f},{int(support[i])}" for i, c in enumerate(classes)]
    atomic_write_text(out / "per_class.csv", "\n".join(lines) + "\n")


def _csv(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


def ablation_row(stage: str, result: dict, stage_dir: Path) -> dict:
    acct = json.loads((stage_dir / "accounting.json").read_text())
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    return {"stage": stage, "regime": result["regime"] or stage, "test_acc": round(result["test_acc"], 4),
            "macro_f1": round(result["macro_f1"], 4),
            "trainable_params_m": round(acct.get("trainable_params", 0) / 1e6, 4),
            "epochs": acct.get("epochs"), "samples_per_epoch": acct.get("samples_per_epoch"),
            "epochs_x_samples": (acct.get("epochs") or 0) * (acct.get("samples_per_epoch") or 0),
            "early_stop_epoch": metrics.get("early_stop_epoch") or "", "device": acct.get("device"),
            "wall_s": acct.get("wall_s")}


def _fragment(ctx, rows: list[dict], results: dict, best: str) -> str:
    top = results[best]
    table = ["| " + " | ".join(ABLATION_COLUMNS) + " |", "|" + "---|" * len(ABLATION_COLUMNS)]
    table += ["| " + " | ".join(str(r[c]) for c in ABLATION_COLUMNS) + " |" for r in rows]
    return (f"### {ctx.stage}: test set\n\nTest accuracy **{100 * top['test_acc']:.2f}%** on {top['test_size']} "
            f"images for `{best}` (chosen by validation accuracy); macro precision {top['macro_precision']:.3f}, "
            f"recall {top['macro_recall']:.3f}, F1 {top['macro_f1']:.3f}.\n\n"
            + ("\n".join(table) + "\n\n" + trade_off_summary(rows) + "\n\n" if len(rows) > 1 else "")
            + "![confusion matrix](confusion.png)\n\nPer class: [per_class.csv](per_class.csv); "
            "matrix: [confusion_matrix.csv](confusion_matrix.csv); comparison: [ablation.csv](ablation.csv).\n")


def trade_off_summary(rows: list[dict]) -> str:
    """Generated from the measured rows: the most accurate model and the cheapest one close to it."""
    best = max(rows, key=lambda r: r["test_acc"])
    close = [r for r in rows if r["test_acc"] >= best["test_acc"] - 0.01]
    cheapest = min(close, key=lambda r: r["wall_s"] or float("inf"))
    text = (f"Most accurate: `{best['stage']}` ({best['regime']}) at {100 * best['test_acc']:.2f}% test accuracy, "
            f"{best['trainable_params_m']} M trainable parameters, {best['wall_s']} s.")
    if cheapest is not best and best["wall_s"] and cheapest["wall_s"]:
        text += (f" Within 1 point of it, `{cheapest['stage']}` ({cheapest['regime']}) reaches "
                 f"{100 * cheapest['test_acc']:.2f}% in {cheapest['wall_s']} s "
                 f"({best['wall_s'] / cheapest['wall_s']:.1f}x less time).")
    return text
