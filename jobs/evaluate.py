"""Stage kind `evaluate_classifier`: test-set metrics of a trained model's best checkpoint."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.registry import StageContext, register
from pipeline.state import atomic_write_text


@dataclass
class EvaluateParams:
    model_stage: str = "train"
    data_stage: str = "preprocess"
    batch_size: int = 256


@register("evaluate_classifier", EvaluateParams)
def run(p: EvaluateParams, ctx: StageContext) -> dict:
    import torch
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from .digits import load_split
    from .models import build_model
    from .plots import plot_confusion
    from .train import _upstream, grey_prepare
    from .train_loop import TrainParams, evaluate, resolve_device

    best = torch.load(_upstream(ctx, p.model_stage) / "best.pt", map_location="cpu", weights_only=False)
    meta = best["meta"]
    model = build_model(meta["model"], meta["num_classes"], meta["image_size"])
    model.load_state_dict(best["model"])
    device = resolve_device(ctx.device)
    arrays = load_split(_upstream(ctx, p.data_stage))
    x, y = torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"])
    result = evaluate(model.to(device), x, y, grey_prepare, device, TrainParams(batch_size=p.batch_size))
    pred, true = result["pred"].numpy(), y.numpy()
    classes = meta["classes"]
    labels = list(range(len(classes)))
    prec, rec, f1, support = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(true, pred, labels=labels)
    _write_outputs(ctx, classes, cm, prec, rec, f1, support)
    metrics = {"test_acc": float((pred == true).mean()), "test_loss": result["loss"],
               "macro_precision": float(prec.mean()), "macro_recall": float(rec.mean()),
               "macro_f1": float(f1.mean()), "test_size": int(len(true)), "best_epoch": int(best["epoch"]),
               "val_acc": float(best["val_acc"])}
    plot_confusion(cm, classes, ctx.out_dir / "confusion.png",
                   f"{ctx.experiment}: test confusion (acc {100 * metrics['test_acc']:.1f}%)")
    atomic_write_text(ctx.out_dir / "report.md", _fragment(ctx, metrics))
    ctx.record(total_samples=int(len(true)))
    ctx.log.info("test acc %.2f%% | macro P %.3f R %.3f F1 %.3f on %d images", 100 * metrics["test_acc"],
                 metrics["macro_precision"], metrics["macro_recall"], metrics["macro_f1"], len(true))
    return metrics


def _write_outputs(ctx, classes, cm, prec, rec, f1, support) -> None:
    header = "true\\pred," + ",".join(classes)
    rows = [f"{c}," + ",".join(str(int(v)) for v in cm[i]) for i, c in enumerate(classes)]
    atomic_write_text(ctx.out_dir / "confusion_matrix.csv", "\n".join([header, *rows]) + "\n")
    lines = ["class,name,precision,recall,f1,support"]
    lines += [f"{i},{c},{prec[i]:.4f},{rec[i]:.4f},{f1[i]:.4f},{int(support[i])}" for i, c in enumerate(classes)]
    atomic_write_text(ctx.out_dir / "per_class.csv", "\n".join(lines) + "\n")


def _fragment(ctx, m: dict) -> str:
    return (f"### {ctx.stage}: test set\n\n"
            f"Test accuracy **{100 * m['test_acc']:.2f}%** on {m['test_size']} images; macro precision "
            f"{m['macro_precision']:.3f}, recall {m['macro_recall']:.3f}, F1 {m['macro_f1']:.3f} "
            f"(best checkpoint: epoch {m['best_epoch']}, val acc {100 * m['val_acc']:.2f}%).\n\n"
            "![confusion matrix](confusion.png)\n\nPer class: [per_class.csv](per_class.csv); "
            "matrix: [confusion_matrix.csv](confusion_matrix.csv).\n")
