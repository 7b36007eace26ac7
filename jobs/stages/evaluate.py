"""Stage kind `evaluate`: trained models, their ensembles and flip TTA, scored on one split.

Rows, each scored like a model (files in models/<row>/):
  <stage>                      best.pt of each of `model_stages`
  <stage>+flip                 the same with horizontal-flip TTA (`tta: true`)
  ensemble_soft                the mean of the members' probabilities (`ensembles: [soft]`)
  ensemble_val_weighted        members weighted by their validation accuracy, measured here on the
                               val split (`ensembles: [val_weighted]`)
  ensemble_<kind>+flip         the same over the members' TTA probabilities, same weights
Files: evaluation.csv (every row; the training cost columns come from each model stage's
accounting.json, an ensemble's is its members' sum), ablation.csv (the plain model rows),
models/<row>/{per_class.csv, confusion_matrix.csv, confusion.png, classification_report.txt}, the
same four at the top for the plain model with the best *validation* accuracy (choosing by the
scored split would leak it), and a report fragment.
metrics.json: split, accuracy, macro_precision/recall/f1, n_images, val_acc, best_epoch, best_model,
models, rows; test_acc and test_size only when split is test, so a val score is never read as a
test score (efficiency.csv takes test_acc from here).
"""
from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.contract import ConfigError, StageContext, UpstreamError, register
from safeio import atomic_path, atomic_write_text
from safeio.markdown import markdown_table

from jobs.data.files import PROBS_FILE, load_split

EVALUATION_COLUMNS = ("row", "kind", "tta", "accuracy", "macro_precision", "macro_recall", "macro_f1", "n_images",
                      "trainable_params", "epochs_x_samples", "wall_s", "gpu_hours", "cpu_hours")
ABLATION_COLUMNS = ("stage", "regime", "accuracy", "macro_f1", "trainable_params_m", "epochs", "samples_per_epoch",
                    "epochs_x_samples", "early_stop_epoch", "device", "wall_s")
ROW_FILES = ("confusion_matrix.csv", "per_class.csv", "confusion.png", "classification_report.txt")
FLIP = "+flip"


@dataclass
class EvaluateParams:
    model_stages: list[str] = field(default_factory=lambda: ["train"], metadata={
        "help": "upstream stages whose best.pt is scored (each must be in `needs`)"})
    scored_stages: list[str] = field(default_factory=list, metadata={
        "help": "upstream stages that wrote their own class probabilities (probs.npz: numpy_mlp), scored "
                "here on the same split beside the model stages; not in ensembles or TTA"})
    data_stage: str = "preprocess"
    batch_size: int = field(default=256, metadata={"min": 1})
    split: Literal["test", "val"] = field(default="test", metadata={"help": "the split scored"})
    ensembles: list[Literal["soft", "val_weighted"]] = field(default_factory=list, metadata={
        "help": "ensembles over `members`: soft (mean probabilities), val_weighted (weights = val accuracy)"})
    members: list[str] = field(default_factory=list, metadata={
        "help": "the model stages the ensembles combine; empty = all model_stages"})
    labels: dict[str, str] = field(default_factory=dict, metadata={
        "help": "row -> what it is (e.g. 'Level 1: ResNet-50, head only'): the report's summary table lists "
                "these rows in this order with their cost; empty = no summary table"})
    per_class: list[str] = field(default_factory=list, metadata={
        "help": "rows whose per-class precision/recall/F1 table, hardest and easiest classes go into the "
                "report; empty = the best model's"})
    tta: bool = field(default=False, metadata={"help": "also score each model and ensemble with horizontal-flip TTA"})
    baseline: str = field(default="", metadata={
        "help": "a model stage (a control) every other model is compared with on the same images: paired "
                "difference, train - val gap per epoch, next steps; '' = none"})

    def __post_init__(self):
        listed = self.model_stages + self.scored_stages
        twice = sorted({s for s in listed if listed.count(s) > 1})
        if twice:
            raise ConfigError("model_stages", f"{twice[0]!r} is listed twice (model_stages, scored_stages); "
                                              "list each stage once")
        if self.baseline and self.baseline not in self.model_stages:
            raise ConfigError("baseline", f"{self.baseline!r} is not one of model_stages {self.model_stages}")
        rows = self.row_names()
        unknown = [name for name in list(self.labels) + self.per_class if name not in rows]
        if unknown:
            raise ConfigError("labels" if unknown[0] in self.labels else "per_class",
                              f"{unknown[0]!r} is not a row this stage scores; rows: {', '.join(rows)}")
        outside = [m for m in self.members if m not in self.model_stages]
        if outside:
            raise ConfigError("members", f"{outside[0]!r} is not one of model_stages {self.model_stages}")
        if self.ensembles and len(self.ensemble_members) < 2:
            raise ConfigError("ensembles", f"an ensemble needs at least 2 members, got {self.ensemble_members}; "
                                           "list more model_stages (or members) or remove ensembles")

    def row_names(self) -> list[str]:
        """The rows this stage will score, in order (see the module docstring)."""
        flips = ("", FLIP) if self.tta else ("",)
        rows = [s + f for s in self.model_stages for f in flips] + list(self.scored_stages)
        return rows + [f"ensemble_{kind}{f}" for kind in dict.fromkeys(self.ensembles) for f in flips]

    @property
    def ensemble_members(self) -> list[str]:
        return self.members or self.model_stages


@dataclass
class Row:
    name: str
    kind: str                  # model | ensemble
    tta: bool
    members: list[str]         # the model stages it is made of
    probs: np.ndarray          # (N, classes) on the scored split
    weights: list[float] | None = None


@register("evaluate", EvaluateParams)
def run(p: EvaluateParams, ctx: StageContext) -> dict:
    from jobs.evaluation.metrics import score
    from jobs.models.registry import use_weights_cache
    use_weights_cache(ctx.cache_dir, offline=True)                 # rebuilding a model never downloads
    arrays = load_split(ctx.load_upstream, p.data_stage)
    classes, y = [str(c) for c in arrays["classes"]], arrays[f"y_{p.split}"]
    ctx.log.info("scoring the %s split: %d images, %d classes", p.split, len(y), len(classes))
    rows, models = model_rows(p, ctx, arrays, classes)
    rows += ensemble_rows(p, ctx, rows, models)
    scores = {}
    for row in rows:
        scores[row.name] = score(row.probs, y, classes)
        write_row_files(ctx, p.split, row.name, scores[row.name], classes)
    stages = p.model_stages + p.scored_stages
    best = max(stages, key=lambda s: -1.0 if models[s]["val_acc"] is None else models[s]["val_acc"])
    for name in ROW_FILES:
        with atomic_path(ctx.out_dir / name) as tmp:             # a killed stage leaves no half copy
            shutil.copyfile(ctx.out_dir / "models" / best / name, tmp)
    costs = {s: training_cost(ctx, s) for s in stages}
    table = [evaluation_row(row, scores[row.name], costs) for row in rows]
    ablation = [ablation_row(s, scores[s], models[s], costs[s]) for s in stages]
    write_csv(ctx.out_dir / "evaluation.csv", EVALUATION_COLUMNS, table)
    write_csv(ctx.out_dir / "ablation.csv", ABLATION_COLUMNS, ablation, {"accuracy": f"{p.split}_acc"})
    compared, comparison = against_baseline(p, ctx, rows, y)
    atomic_write_text(ctx.report_path,
                      fragment(ctx, p.split, table, ablation, scores[best], best) + summary_table(p, table)
                      + per_class_section(p.per_class or [best], scores, classes, p.split) + comparison)
    return {**metrics(p.split, rows, scores, models, best), **({"vs_baseline": compared} if compared else {})}


def against_baseline(p: EvaluateParams, ctx: StageContext, rows: list[Row], y: np.ndarray) -> tuple[dict, str]:
    """Each plain model against `baseline` on the same images, and the report section ('' without one)."""
    from jobs.evaluation.compare import gap_table, next_steps, paired_difference
    if not p.baseline:
        return {}, ""
    correct = {r.name: r.probs.argmax(1) == y for r in rows if r.kind == "model" and not r.tta}
    done = {s: ctx.upstream_metrics(s) for s in p.model_stages}
    curves = {s: {"train_val_gap": m.get("train_val_gap"), "val_acc": m.get("val_acc_per_epoch")} for s, m in done.items()}
    compared, lines = {}, [f"#### Against `{p.baseline}` on the same {p.split} images\n"]
    for stage in (s for s in p.model_stages if s != p.baseline):
        diff = paired_difference(correct[stage], correct[p.baseline])
        compared[stage] = {**diff, "next_steps": next_steps(stage, p.baseline, diff, curves)}
        lines.append(f"`{stage}` minus `{p.baseline}`: **{100 * diff['delta']:+.2f} points** of accuracy "
                     f"(standard error {100 * diff['se']:.2f}; {diff['only_model_right']} images only `{stage}` "
                     f"gets right, {diff['only_baseline_right']} only `{p.baseline}`, of {diff['n_images']}).\n")
        ctx.log.info("%s vs %s: %+.2f points (SE %.2f)", stage, p.baseline, 100 * diff["delta"], 100 * diff["se"])
    table = gap_table(curves)
    if table:
        lines.append("Train - val accuracy per epoch (above 0: the model fits its training images better than "
                     "unseen ones; growing: overfitting; below 0 or flat near 0 while val still rises: "
                     "underfitting):\n\n" + table + "\n")
    steps = [s for c in compared.values() for s in c["next_steps"]]
    lines.append("Next steps, from these numbers:\n\n" + "\n".join(f"- {s}" for s in dict.fromkeys(steps)) + "\n")
    return compared, "\n" + "\n".join(lines)


# ------------------------------------------------------------------------------- probabilities
def model_rows(p: EvaluateParams, ctx: StageContext, arrays: dict, classes: list[str]) -> tuple[list[Row], dict]:
    """Each model stage's probabilities on the split (and mirrored, with tta), and what is known of
    it: the checkpoint's val accuracy and epoch, and, for val_weighted, its val accuracy measured here."""
    from jobs.evaluation.metrics import accuracy, predict_proba
    from jobs.training.trained import load_trained
    from jobs.training.loop import resolve_device
    device, x = resolve_device(ctx.device), arrays[f"x_{p.split}"]
    rows, models, images = [], {}, 0
    for stage in p.model_stages:
        model, transform, meta, best = load_trained(ctx.load_upstream, stage, ctx.log)
        check_classes(stage, meta, classes, p.data_stage)
        predict = partial(predict_proba, model, transform=transform, device=device, batch_size=p.batch_size)
        plain = predict(x)
        rows.append(Row(stage, "model", False, [stage], plain))
        images += len(x)
        if p.tta:
            rows.append(Row(stage + FLIP, "model", True, [stage], predict(x, flip=True)))
            images += 2 * len(x)                                  # the image and its mirror
        # val_acc is None for a model trained on train + val (kind retrain): no held-out val score
        val_acc = None if best.get("val_acc") is None else float(best["val_acc"])
        models[stage] = {"val_acc": val_acc, "best_epoch": int(best["epoch"]),
                         "regime": meta.get("regime", "")}
        if "val_weighted" in p.ensembles:
            val_probs = plain if p.split == "val" else predict(arrays["x_val"])
            models[stage]["val_acc_measured"] = accuracy(val_probs, arrays["y_val"])
            images += 0 if p.split == "val" else len(arrays["y_val"])
        model.cpu()                                               # frees the device for the next model
    for stage in p.scored_stages:
        probs = ctx.load_upstream(stage, PROBS_FILE, np.load)
        rows.append(Row(stage, "model", False, [stage], probs[p.split]))
        val_acc = accuracy(probs["val"], arrays["y_val"])
        models[stage] = {"val_acc": val_acc, "best_epoch": 0, "regime": "", "val_acc_measured": val_acc}
    ctx.record(total_samples=images)
    return rows, models


def check_classes(stage: str, meta: dict, classes: list[str], data_stage: str) -> None:
    """A model scored on data with other classes would give meaningless numbers: refuse it."""
    trained = meta.get("classes") or [None] * meta["num_classes"]
    if len(trained) != len(classes) or (trained[0] is not None and list(trained) != classes):
        raise ValueError(f"model stage {stage!r} was trained on {len(trained)} classes that differ from the "
                         f"{len(classes)} of {data_stage!r}'s split.npz; set data_stage to the stage it was "
                         f"trained on")


def ensemble_rows(p: EvaluateParams, ctx: StageContext, rows: list[Row], models: dict) -> list[Row]:
    """One row per ensemble over its members, and its +flip twin over the members' TTA rows."""
    from jobs.evaluation.metrics import soft_vote, val_weighted_vote, val_weights
    by_name = {row.name: row for row in rows}
    members = p.ensemble_members
    val_accs = [models[s].get("val_acc_measured", 0.0) for s in members]
    if "val_weighted" in p.ensembles:
        ctx.log.info("val_weighted ensemble weights (val accuracy measured here, normalised): %s",
                     ", ".join(f"{s} {w:.4f}" for s, w in zip(members, val_weights(val_accs))))
        if p.split == "val":
            ctx.log.warning("val_weighted on split val: its weights come from the split it is scored on")
    out = []
    for kind in dict.fromkeys(p.ensembles):                       # a kind listed twice makes one row
        for suffix in ("", FLIP) if p.tta else ("",):
            probs = [by_name[s + suffix].probs for s in members]
            if kind == "soft":
                out.append(Row(f"ensemble_soft{suffix}", "ensemble", bool(suffix), list(members), soft_vote(probs)))
            else:
                out.append(Row(f"ensemble_val_weighted{suffix}", "ensemble", bool(suffix), list(members),
                               val_weighted_vote(probs, val_accs), val_weights(val_accs).round(6).tolist()))
    return out


# ---------------------------------------------------------------------------------------- files
def write_row_files(ctx: StageContext, split: str, name: str, s: dict, classes: list[str]) -> None:
    """models/<row>/: confusion matrix (CSV, PNG), per-class table, sklearn's classification report."""
    from jobs.evaluation.plots import plot_confusion
    out = ctx.out_dir / "models" / name
    out.mkdir(parents=True, exist_ok=True)
    header = "true\\pred," + ",".join(_csv(c) for c in classes)
    matrix = [f"{_csv(c)}," + ",".join(str(int(v)) for v in s["confusion"][i]) for i, c in enumerate(classes)]
    atomic_write_text(out / "confusion_matrix.csv", "\n".join([header, *matrix]) + "\n")
    pc = s["per_class"]
    lines = ["class,name,precision,recall,f1,support"]
    lines += [f"{i},{_csv(c)},{pc['precision'][i]:.4f},{pc['recall'][i]:.4f},{pc['f1'][i]:.4f},"
              f"{int(pc['support'][i])}" for i, c in enumerate(classes)]
    atomic_write_text(out / "per_class.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / "classification_report.txt", f"{name}, {split} split\n\n{s['report']}")
    plot_confusion(s["confusion"], classes, out / "confusion.png",
                   f"{ctx.experiment}/{name}: {split} (acc {100 * s['accuracy']:.1f}%)")
    ctx.log.info("%s: %s acc %.2f%% | macro P %.3f R %.3f F1 %.3f on %d images", name, split, 100 * s["accuracy"],
                 s["macro_precision"], s["macro_recall"], s["macro_f1"], s["n_images"])


def _plain(value) -> str:
    """A cell as str() writes it (these tables keep every digit, unlike safeio.markdown.cell); None empty."""
    return "" if value is None else str(value)


def _csv(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict], rename: dict | None = None) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([(rename or {}).get(c, c) for c in columns])
    writer.writerows([["" if r[c] is None else r[c] for c in columns] for r in rows])
    atomic_write_text(path, buf.getvalue())


def training_cost(ctx: StageContext, stage: str) -> dict:
    """What training a model stage cost (its accounting.json) and its early-stop epoch (metrics.json).
    Unreadable files leave the cells empty with a warning: they do not change any score."""
    def read(reader) -> dict:
        try:
            return reader(stage)
        except UpstreamError as err:
            ctx.log.warning("cost columns of %s left empty: %s", stage, err)
            return {}
    acct, done = read(ctx.upstream_accounting), read(ctx.upstream_metrics)
    epochs, samples = acct.get("epochs"), acct.get("samples_per_epoch")
    return {"trainable_params": acct.get("trainable_params"), "epochs": epochs, "samples_per_epoch": samples,
            "epochs_x_samples": epochs * samples if epochs and samples else None, "device": acct.get("device"),
            "wall_s": acct.get("wall_s"), "early_stop_epoch": done.get("early_stop_epoch"),
            **ctx.upstream_cost(acct)}


def evaluation_row(row: Row, s: dict, costs: dict) -> dict:
    """One line of evaluation.csv; an ensemble's cost columns are its members' sum (it trains them all)."""
    def total(key: str, digits: int = 2):
        values = [costs[m][key] for m in row.members]
        return None if None in values else round(sum(values), digits)
    return {"row": row.name, "kind": row.kind, "tta": "yes" if row.tta else "no",
            **{k: round(s[k], 4) for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")},
            "n_images": s["n_images"], "trainable_params": total("trainable_params"),
            "epochs_x_samples": total("epochs_x_samples"), "wall_s": total("wall_s"),
            "gpu_hours": total("gpu_hours", 4), "cpu_hours": total("cpu_hours", 4)}


def ablation_row(stage: str, s: dict, model: dict, cost: dict) -> dict:
    params = cost["trainable_params"]
    return {"stage": stage, "regime": model["regime"] or stage, "accuracy": round(s["accuracy"], 4),
            "macro_f1": round(s["macro_f1"], 4), "trainable_params_m": round(params / 1e6, 4) if params else None,
            **{k: cost[k] for k in ("epochs", "samples_per_epoch", "epochs_x_samples", "early_stop_epoch",
                                    "device", "wall_s")}}


# ----------------------------------------------------------------------------- metrics, report
def headline(s: dict, split: str) -> dict:
    out = {k: s[k] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "n_images", "loss")}
    if split == "test":                           # today's names, kept for readers of test results
        out.update(test_acc=s["accuracy"], test_size=s["n_images"], test_loss=s["loss"])
    return out


def metrics(split: str, rows: list[Row], scores: dict, models: dict, best: str) -> dict:
    top = headline(scores[best], split)
    top.pop("loss")
    top.pop("test_loss", None)
    return {"split": split, **top, "val_acc": models[best]["val_acc"], "best_epoch": models[best]["best_epoch"],
            "best_model": best, "models": {s: {**headline(scores[s], split), **m} for s, m in models.items()},
            "rows": {r.name: {"kind": r.kind, "tta": r.tta, "members": r.members, **headline(scores[r.name], split),
                              **({"weights": r.weights} if r.weights else {})} for r in rows}}


def fragment(ctx, split: str, table: list[dict], ablation: list[dict], top: dict, best: str) -> str:
    effect = effect_sentence(table, split)
    return (f"### {ctx.stage}: {split} split\n\n{split.capitalize()} accuracy **{100 * top['accuracy']:.2f}%** on "
            f"{top['n_images']} images for `{best}` (chosen by validation accuracy); macro precision "
            f"{top['macro_precision']:.3f}, recall {top['macro_recall']:.3f}, F1 {top['macro_f1']:.3f}.\n\n"
            + markdown_table(table, EVALUATION_COLUMNS, fmt=_plain) + "\n\n" + (effect + "\n\n" if effect else "")
            + (trade_off_summary(ablation, split) + "\n\n" if len(ablation) > 1 else "")
            + f"Classification report of `{best}`:\n\n```text\n{top['report'].rstrip()}\n```\n\n"
            "![confusion matrix](confusion.png)\n\nPer class: [per_class.csv](per_class.csv); "
            "matrix: [confusion_matrix.csv](confusion_matrix.csv); every row: [evaluation.csv](evaluation.csv); "
            "models: [ablation.csv](ablation.csv).\n")


SUMMARY_COLUMNS = ("accuracy", "trainable_params", "epochs_x_samples", "wall_s", "gpu_hours", "cpu_hours")


def summary_table(p: EvaluateParams, table: list[dict]) -> str:
    """The rows named in `labels`, in that order, with what each is and what it cost ('' without labels)."""
    if not p.labels:
        return ""
    by_row = {r["row"]: r for r in table}
    head = ["row", "approach", f"{p.split} accuracy", "trainable params", "epochs x samples", "wall s",
            "GPU-hours", "CPU-hours"]

    def cells(r: dict) -> list[str]:
        return [f"{100 * r['accuracy']:.2f}%"] + [f"{r[c]:,}" if isinstance(r[c], int) else _plain(r[c])
                                                  for c in SUMMARY_COLUMNS[1:]]
    rows = [[f"`{name}`", label, *cells(by_row[name])] for name, label in p.labels.items()]
    return "\n#### Summary\n\n" + markdown_table(rows, head, fmt=str) + "\n"


def per_class_section(names: list[str], scores: dict, classes: list[str], split: str, most: int = 20) -> str:
    """Per row: the hardest and easiest classes by F1, and (up to `most` classes) the per-class table."""
    out = []
    for name in names:
        pc = scores[name]["per_class"]
        order = sorted(range(len(classes)), key=lambda i: (pc["f1"][i], classes[i]))
        hard, easy = order[0], order[-1]
        out.append(f"\n#### Per class: `{name}` ({split} split)\n\nHardest class: **{classes[hard]}** (F1 "
                   f"{pc['f1'][hard]:.3f}, recall {pc['recall'][hard]:.3f}); easiest: **{classes[easy]}** "
                   f"(F1 {pc['f1'][easy]:.3f}, recall {pc['recall'][easy]:.3f}).\n")
        if len(classes) <= most:
            rows = [[i, c, f"{pc['precision'][i]:.3f}", f"{pc['recall'][i]:.3f}", f"{pc['f1'][i]:.3f}",
                     int(pc["support"][i])] for i, c in enumerate(classes)]
            out.append(markdown_table(rows, ["id", "class", "precision", "recall", "F1", "support"], fmt=str) + "\n")
    return "".join(out)


def effect_sentence(table: list[dict], split: str) -> str:
    """One sentence, from the numbers, on what ensembling and flip TTA changed ('' when neither ran).
    Ensembles are compared with the best single model on this split: the bar they must clear."""
    acc = {r["row"]: r["accuracy"] for r in table}
    single = max((r["row"] for r in table if r["kind"] == "model" and r["tta"] == "no"), key=acc.get)
    parts = []
    ensembles = [r["row"] for r in table if r["kind"] == "ensemble" and r["tta"] == "no"]
    if ensembles:
        parts.append("ensembling changed accuracy by " + ", ".join(
            f"{_points(acc[e] - acc[single])} (`{e}`, {100 * acc[e]:.2f}%)" for e in ensembles)
            + f" against the best single model `{single}` ({100 * acc[single]:.2f}%)")
    deltas = [acc[r["row"]] - acc[r["row"][:-len(FLIP)]] for r in table if r["tta"] == "yes"]
    if deltas:
        parts.append(f"flip TTA changed it by {_points(float(np.mean(deltas)))} on average over {len(deltas)} "
                     f"rows (from {_points(min(deltas))} to {_points(max(deltas))})")
    return f"On the {split} split, " + "; ".join(parts) + "." if parts else ""


def _points(delta: float) -> str:
    return f"{100 * delta:+.2f} points"


def trade_off_summary(rows: list[dict], split: str) -> str:
    """Generated from the measured rows: the most accurate model and the cheapest one close to it."""
    best = max(rows, key=lambda r: r["accuracy"])
    close = [r for r in rows if r["accuracy"] >= best["accuracy"] - 0.01]
    cheapest = min(close, key=lambda r: r["wall_s"] or float("inf"))
    text = (f"Most accurate: `{best['stage']}` ({best['regime']}) at {100 * best['accuracy']:.2f}% {split} accuracy, "
            f"{best['trainable_params_m']} M trainable parameters, {best['wall_s']} s.")
    if cheapest is not best and best["wall_s"] and cheapest["wall_s"]:
        text += (f" Within 1 point of it, `{cheapest['stage']}` ({cheapest['regime']}) reaches "
                 f"{100 * cheapest['accuracy']:.2f}% in {cheapest['wall_s']} s "
                 f"({best['wall_s'] / cheapest['wall_s']:.1f}x less time).")
    return text
