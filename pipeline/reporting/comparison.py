"""The report's variant comparison: one row per variant of an experiment (its changed values, the
metrics its stages recorded, what it cost), a CSV, and a plot of the metric against the compute
with the Pareto front marked (no other variant is both cheaper and better).

Everything comes from the variants' records (variants/<name>/variant.json) and their stages'
accounting.json files; a variant's cost counts every stage it used, shared ones included.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import safeio
from pipeline import contract
from pipeline.accounting.record import total_device_hours
from pipeline.core import paths
from pipeline.core.paths import StagePaths
from safeio.markdown import markdown_table

COLUMNS = ("variant", "changed", "status", "val_acc", "test_acc", "trainable_params", "epochs",
           "samples_per_epoch", "total_samples", "wall_s", "gpu_hours", "cpu_hours")


def variant_rows(indexes: list[dict]) -> list[dict]:
    """One comparison row per recorded variant (pipeline/core/state.py `recorded_variants`)."""
    return [_row(index) for index in indexes]


def _row(index: dict) -> dict:
    stages = index.get("raw", {}).get("stages", {})
    dirs = [Path(d) for s, d in index["dirs"].items() if not contract.experiment_wide(stages.get(s, {}).get("kind"))]
    records = [safeio.read_json(StagePaths(d).accounting, {}) or {} for d in dirs]
    done = [StagePaths(d).success.exists() for d in dirs]
    statuses = [r.get("status") for r in records]
    status = "done" if all(done) else "failed" if "failed" in statuses else "incomplete"
    trained = [r for r in records if r.get("epochs")]      # the stages that trained (epochs x samples)

    def last(key):
        values = [r[key] for r in records if r.get(key) not in (None, "")]
        return values[-1] if values else None
    changed = ", ".join(f"{k}={v}" for k, v in index["changed"].items())
    if dirs and not any(paths.VARIANTS in d.parts for d in dirs):      # e.g. only resources changed
        changed += " (ran nothing of its own: every stage is the plain run's, with the plain run's resources)"
    return {"variant": index["name"], "changed": changed,
            "status": status, "val_acc": last("val_acc"), "test_acc": last("test_acc"),
            "trainable_params": last("trainable_params"),
            "epochs": sum(int(r["epochs"]) for r in trained) if trained else None,
            "samples_per_epoch": trained[-1].get("samples_per_epoch") if trained else None,
            "total_samples": sum(int(r.get("total_samples") or 0) for r in trained) if trained else None,
            "wall_s": round(sum(float(r.get("wall_s") or 0) for r in records), 1), **total_device_hours(records)}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indexes of the points (cost, score) that no other point beats: at most the cost and at
    least the score, strictly better in one. Sorted by cost."""
    front = [i for i, (c, s) in enumerate(points)
             if not any(c2 <= c and s2 >= s and (c2, s2) != (c, s) for c2, s2 in points)]
    return sorted(front, key=lambda i: points[i])


def axes(rows: list[dict]) -> tuple[str, str] | None:
    """(score column, cost column) of the plot: test_acc where every finished variant has it, else
    val_acc; GPU-hours where any variant used a GPU, else CPU-hours. None: nothing to plot."""
    finished = [r for r in rows if r["status"] == "done"]
    for score in ("test_acc", "val_acc"):
        if finished and all(r[score] is not None for r in finished):
            cost = "gpu_hours" if any(r["gpu_hours"] for r in finished) else "cpu_hours"
            return score, cost
    return None


def write_comparison(results: Path, experiment: str, indexes: list[dict]) -> str:
    """variants/comparison.csv and comparison.png; the markdown section for report.md."""
    rows = variant_rows(indexes)
    folder = paths.variants_dir(results, experiment)
    link = f"{experiment}/{paths.VARIANTS}"       # links are relative to results/
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    safeio.atomic_write_text(folder / paths.COMPARISON_CSV, buf.getvalue())
    plotted = axes(rows)
    lines = [f"### Variants of {experiment}\n", f"{len(rows)} variant(s); "
             f"[{paths.COMPARISON_CSV}]({link}/{paths.COMPARISON_CSV}). A variant's cost counts every stage it "
             "used, shared stages included.\n", markdown_table(rows, COLUMNS)]
    if plotted:
        front = _plot(rows, *plotted, folder / paths.COMPARISON_PNG, experiment)
        lines += ["", f"![{plotted[0]} against {plotted[1]}]({link}/{paths.COMPARISON_PNG})", "",
                  f"Pareto front ({plotted[0]} against {plotted[1]}; no other variant is both cheaper and better): "
                  + ", ".join(f"`{name}`" for name in front) + "."]
    else:
        lines.append("\nNo plot: no finished variant recorded a val_acc or test_acc.")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], score: str, cost: str, path: Path, experiment: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    done = [r for r in rows if r["status"] == "done"]
    points = [(float(r[cost]), float(r[score])) for r in done]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", label="variant")
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "o-", color="tab:red",
            label="Pareto front")
    for r, (x, y) in zip(done, points):
        ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(cost.replace("_", "-"))
    ax.set_ylabel(score)
    ax.set_title(f"{experiment}: variants")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    with safeio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return [done[i]["variant"] for i in front]
