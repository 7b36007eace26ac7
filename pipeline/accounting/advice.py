"""Advice for the next submit: per stage with history, the `time`, `mem`, `cpus_per_task` and
`gpus` its successful attempts show it needs (their peak plus a stated margin, rounded up to
values a scheduler likes), what each change saves per run, and raises for a stage whose last
attempt ran out of memory or time. `advise` prints it, `submit --right-size` applies it to the
stages with history (never to the config file), and the report holds the same table.

History is what the report collects (pipeline/reporting/report.py): every attempt the
scheduler accounted, else the stage's own record of a plain-process run."""
from __future__ import annotations

import dataclasses
import math

from pipeline import executors
from pipeline.accounting.record import unit_hours

# Margins over the largest use seen, and why: the scheduler samples memory every
# JobAcctGatherFrequency seconds (peaks between samples are missed) and run times vary.
MEM_MARGIN = 1.5      # peak RSS + 50%
TIME_MARGIN = 1.5     # longest successful run + 50%
CPU_MARGIN = 1.25     # cores busy on average + 25%
GPU_TARGET = 0.8      # GPUs kept for the utilisation seen to reach 80% on each
RAISE = 2.0           # OUT_OF_MEMORY: twice the memory; TIMEOUT: twice the limit
# Values a scheduler likes (whole GiB steps above 1G; limits in round minutes, at least 5: the
# backfill scheduler works in minutes, and a limit below a few minutes leaves no room for start-up).
MEM_STEPS_MB = (256, 512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152, 65536,
                98304, 131072, 196608, 262144)
TIME_STEPS_MIN = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 360, 480, 720, 1080, 1440, 2160, 2880, 4320)
SUCCEEDED = ("COMPLETED", "done")
_TIMEOUT, _OOM = "TIMEOUT", "OUT_OF_MEMORY"


def round_mem(mb: float) -> str:
    """MiB -> the smallest friendly `mem` value that holds it (`512M`, `3G`)."""
    step = next((s for s in MEM_STEPS_MB if s >= mb), math.ceil(mb / 65536) * 65536)
    return f"{step // 1024}G" if step >= 1024 else f"{step}M"


def round_time(seconds: float) -> str:
    """Seconds -> the smallest friendly `time` value that holds it (`00:05:00`, `1-12:00:00`)."""
    minutes = next((m for m in TIME_STEPS_MIN if m * 60 >= seconds), math.ceil(seconds / 86400) * 1440)
    days, rest = divmod(int(minutes), 1440)
    clock = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{clock}" if days else clock


def _num(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclasses.dataclass
class Advice:
    stage: str
    seen: str                       # what the advice rests on
    asked: dict                     # time, mem, cpus_per_task, gpus as configured
    advised: dict                   # the same keys, only those that change
    saves: dict                     # per run: cpu_hours, gpu_hours, mem_gb_hours reserved but unused
    why: list[str]


RESOURCES = ("time", "mem", "cpus_per_task", "gpus")


def advise_stage(stage: str, asked: dict, row: dict, attempts: list[dict]) -> Advice | None:
    """One stage's advice from what it asks (RESOURCES: its `resources` values), its efficiency.csv
    row and its attempts.csv rows; None without history."""
    asked = {k: asked[k] for k in RESOURCES}
    good = [a for a in attempts if str(a.get("state")) in SUCCEEDED]
    last = str((attempts[-1] if attempts else {}).get("state") or row.get("sacct_state") or "")
    if not good and last not in (_TIMEOUT, _OOM):
        return None
    advised, why = {}, []
    if last == _TIMEOUT:
        advised["time"] = round_time(executors.request_seconds(asked["time"]) * RAISE)
        why.append(f"the last attempt hit its time limit: limit x{RAISE:g}")
    elif good:
        longest = max(_num(a.get("elapsed_s")) or 0 for a in good)
        advised["time"] = round_time(max(longest * TIME_MARGIN, 1))
        why.append(f"longest successful run {longest:g} s, +{TIME_MARGIN - 1:.0%}")
    asked_mb = executors.request_mem_mb(asked["mem"])
    peaks = [p for a in good if (p := _num(a.get("maxrss_step_mb"))) is not None]
    peak = max(peaks) if peaks else (_num(row.get("peak_rss_mb")) if good else None)
    if last == _OOM:
        advised["mem"] = round_mem(asked_mb * RAISE)
        why.append(f"the last attempt ran out of memory: mem x{RAISE:g}")
    elif peak:
        advised["mem"] = round_mem(peak * MEM_MARGIN)
        why.append(f"peak RSS {peak:.0f} MiB, +{MEM_MARGIN - 1:.0%}")
    busy = _cores_busy(good, row)
    if busy is not None:
        advised["cpus_per_task"] = max(1, min(asked["cpus_per_task"], math.ceil(busy * CPU_MARGIN)))
        why.append(f"{busy:.2f} cores busy on average, +{CPU_MARGIN - 1:.0%}")
    util = _num(row.get("gpu_util_mean"))
    if asked["gpus"] > 1 and util is not None and good:
        advised["gpus"] = max(1, min(asked["gpus"], math.ceil(asked["gpus"] * util / 100 / GPU_TARGET)))
        why.append(f"GPUs {util:g}% busy on average (target {GPU_TARGET:.0%})")
    advised = {k: v for k, v in advised.items() if v != asked[k]}
    seen = f"{len(good)} successful attempt(s)" + (f", last {last}" if last in (_TIMEOUT, _OOM) else "")
    return Advice(stage, seen, asked, advised, _saves(asked, advised, good, asked_mb), why)


def _cores_busy(good: list[dict], row: dict) -> float | None:
    """Cores the successful attempts kept busy on average: the scheduler's CPU efficiency x cores,
    else the sampler's utilisation x the cores the stage had."""
    busy = [e * c for a in good if (e := _num(a.get("cpu_eff"))) is not None and (c := _num(a.get("alloc_cpus")))]
    if busy:
        return max(busy)
    util, cpus = _num(row.get("cpu_util")), _num(row.get("cpus"))
    return util * cpus if util is not None and cpus and good else None


def _saves(asked: dict, advised: dict, good: list[dict], asked_mb: float) -> dict:
    """Per run, at the longest successful run's length: what the advice stops reserving unused."""
    seconds = max((_num(a.get("elapsed_s")) or 0 for a in good), default=0)
    out = {}
    if "cpus_per_task" in advised:
        out["cpu_hours"] = unit_hours(asked["cpus_per_task"] - advised["cpus_per_task"], seconds)
    if "gpus" in advised:
        out["gpu_hours"] = unit_hours(asked["gpus"] - advised["gpus"], seconds)
    if "mem" in advised:
        out["mem_gb_hours"] = unit_hours((asked_mb - executors.request_mem_mb(advised["mem"])) / 1024, seconds)
    return out


def advise(resources: dict, rows: list[dict], attempts_of) -> list[Advice]:
    """Advice for every stage (name -> its resources as asked now: a dict with RESOURCES) with history in `rows`
    (efficiency.csv rows); `attempts_of(row)` gives a row's attempts.csv rows."""
    out = []
    for row in rows:
        stage = str(row.get("stage"))
        if row.get("variant") or stage not in resources:
            continue
        advice = advise_stage(stage, resources[stage], row, attempts_of(row))
        if advice:
            out.append(advice)
    return out


def table(advice: list[Advice]) -> list[dict]:
    """Rows for a printed or markdown table: asked -> advised per resource, savings, why."""
    rows = []
    for a in advice:
        row = {"stage": a.stage, "history": a.seen}
        for key in ("time", "mem", "cpus_per_task", "gpus"):
            row[key] = f"{a.asked[key]} -> {a.advised[key]}" if key in a.advised else f"{a.asked[key]}"
        row["saves per run"] = ", ".join(f"{v:g} {k.replace('_', '-')}" for k, v in a.saves.items() if v > 0)
        row["why"] = "; ".join(a.why)
        rows.append(row)
    return rows


def apply(exp, advice: list[Advice]) -> list[str]:
    """Set the advised resources on `exp`'s stages in memory (the config file is never rewritten);
    one line per stage changed, saying what changed."""
    changed = []
    for a in advice:
        if not a.advised:
            continue
        stage = exp.stages[a.stage]
        stage.resources = dataclasses.replace(stage.resources, **a.advised)
        # the jobs' resolved config says what they were given, too
        spec = exp.raw["stages"][a.stage]        # a new mapping: YAML anchors may share the old one
        spec["resources"] = {**(spec.get("resources") or {}), **a.advised}
        changed.append(f"{a.stage}: " + ", ".join(f"{k} {a.asked[k]} -> {v}" for k, v in a.advised.items()))
    return changed
