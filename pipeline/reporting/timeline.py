"""Where the time went: one row per attempt of every stage (results/attempts.csv), the timeline
figure drawn from them (queued, running, requeued; GPU stages marked), and each experiment's
totals (wall time from first submit to last end, GPU-hours, CPU-hours, energy, queue wait).

An attempt's times come from the scheduler's accounting where there is one (submit, start, end,
queue wait); a stage run as a plain process has only its own start and end (attempt_log)."""
from __future__ import annotations

import datetime
from pathlib import Path

from pipeline.accounting.record import attempt_columns, total_device_hours

MAX_LABELLED = 80    # stages named on the timeline's axis; more are drawn as unnamed rows
# Parts of a stage's accounting that ended without success and that a later attempt continued.
_REQUEUED = ("REQUEUED", "PREEMPTED", "NODE_FAIL", "interrupted", "killed")


def attempt_rows(row: dict, usage: dict | None) -> list[dict]:
    """One efficiency.csv row and its executor usage -> its attempts.csv rows (ATTEMPT_COLUMNS)."""
    base = {"experiment": row.get("experiment"), "stage": row.get("stage"), "variant": row.get("variant"),
            "gpus": row.get("num_devices") if row.get("device") == "cuda" else 0}
    parts = (usage or {}).get("parts")
    if parts:
        return [{**base, "attempt": i, **attempt_columns(p)} for i, p in enumerate(parts, 1)]
    return [{**base, "attempt": a.get("attempt"), "job": a.get("job_id"), "state": a.get("status"),
             "start": a.get("started_at"), "end": a.get("ended_at"), "elapsed_s": a.get("wall_s")}
            for a in row.get("attempt_log") or []]


def _time(text) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def _num(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def totals(rows: list[dict], attempts: list[dict]) -> dict:
    """An experiment's totals: wall_s (first submit, else first start, to the last end), gpu_hours,
    cpu_hours (record.py's formula), energy_j (what was measured: the scheduler's, else NVML's and
    RAPL's), queue_wait_s over every attempt. None where nothing measured it."""
    begins = [t for a in attempts for t in (_time(a.get("submit")), _time(a.get("start"))) if t is not None]
    ends = [t for a in attempts if (t := _time(a.get("end"))) is not None]
    waits = [w for a in attempts if (w := _num(a.get("queue_wait_s"))) is not None]
    energy = []
    for r in rows:
        sched = _num(r.get("sacct_energy_j"))
        own = [e for e in (_num(r.get("gpu_energy_j")), _num(r.get("cpu_energy_j"))) if e is not None]
        energy.append(sched if sched is not None else (sum(own) if own else None))
    cost = total_device_hours(rows, empty=None)
    return {"wall_s": round(max(ends) - min(begins), 1) if begins and ends else None,
            "gpu_hours": cost["gpu_hours"], "cpu_hours": cost["cpu_hours"],
            "energy_j": round(sum(e for e in energy if e is not None), 1) if any(e is not None for e in energy) else None,
            "queue_wait_s": round(sum(waits), 1) if waits else None, "attempts": len(attempts)}


def totals_paragraph(experiment: str, t: dict) -> str:
    """The totals in one paragraph (report.md and the end of `submit --wait`)."""
    def say(value, unit, why):
        return f"{value:g} {unit}" if value is not None else why
    return (f"{experiment}: {say(t['wall_s'], 's', 'no end recorded yet')} from the first submit (or start) to the last end "
            f"over {t['attempts']} attempt(s); {say(t['gpu_hours'], 'GPU-h', 'no GPU')}, "
            f"{say(t['cpu_hours'], 'CPU-h', 'no CPU-hours recorded')}; queue wait "
            f"{say(t['queue_wait_s'], 's', 'not recorded (no scheduler accounting)')}; energy "
            f"{say(t['energy_j'], 'J', 'not measured (no energy counter readable here)')}.")


def _colour(state: str) -> str:
    if state in _REQUEUED:
        return "tab:purple"
    return "tab:blue" if state.upper() in ("COMPLETED", "DONE", "") else "tab:red"


def draw(attempts: list[dict], path: Path) -> Path | None:
    """The timeline PNG: a row per stage, each attempt a bar, queued (orange) before running (blue),
    a requeued or interrupted attempt purple, a failed one red; GPU stages' labels say GPU."""
    spans = [(a, _time(a.get("start")), _time(a.get("end"))) for a in attempts]
    spans = [(a, s, e) for a, s, e in spans if s is not None and e is not None]
    if not spans:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t0 = min(s - (_num(a.get("queue_wait_s")) or 0) for a, s, _ in spans)

    def label(a):
        return f"{a['stage']} [{a['variant']}]" if a.get("variant") else str(a["stage"])
    row = {name: i for i, name in enumerate(dict.fromkeys(label(a) for a, _, _ in spans))}
    stages = list(row)
    # a row per stage up to a readable height; a DAG of hundreds of stages gets thinner rows
    height = min(0.5 * len(stages), 40)
    fig, ax = plt.subplots(figsize=(9, height + 1.5))
    bars: dict[str, list] = {}         # colour -> [(row, from, to)]: one line collection each (fast at 1,000s)
    for a, start, end in spans:
        y, wait = row[label(a)], _num(a.get("queue_wait_s")) or 0
        if wait:
            bars.setdefault("tab:orange", []).append((y, start - wait - t0, start - t0))
        bars.setdefault(_colour(str(a.get("state") or "")), []).append((y, start - t0, max(end, start + 0.5) - t0))
    thick = 0.6 * 72 * height / max(len(stages), 1)          # points: 60% of a row
    for colour, items in bars.items():
        ys, lefts, rights = zip(*items)
        ax.hlines(ys, lefts, rights, colors=colour, linewidth=thick)
    ax.set_ylim(len(stages) - 0.5, -0.5)
    gpu = {label(a) for a, _, _ in spans if _num(a.get("gpus"))}
    if len(stages) <= MAX_LABELLED:
        ax.set_yticks(range(len(stages)), [f"{s} (GPU)" if s in gpu else s for s in stages])
    else:                               # unreadable anyway, and slow to draw: rows in file order
        ax.set_ylabel(f"{len(stages)} stages, in the order of the experiment")
    ax.set_xlabel("seconds since the first attempt was queued (orange: queued; blue: ran; purple: requeued "
                  "or interrupted; red: failed)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
