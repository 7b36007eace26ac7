"""How far a running stage is: written by the stage through its context (`ctx.progress`), read by
`status` and `status --watch` on the submit host.

A stage calls `ctx.progress(done, of, unit, **numbers)` (unit: what it counts, "step" or "trial")
as often as it likes (every
training step is fine): the call keeps the latest values in memory and rewrites the stage's
progress file (paths.PROGRESS, atomically) at most every `every_s` seconds, so its cost is a
clock read (benchmarks/progress_bench.py measures it). The ETA is this attempt's own rate:
elapsed time over the work done since the first call (a resumed run starts counting where it
resumed), never a guess from other runs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import safeio
from pipeline.core.paths import StagePaths

EVERY_S = 3.0    # at most one write per 3 s: status readers refresh every few seconds anyway


class ProgressWriter:
    """The callable a stage gets as ctx.progress. `done` may be fractional (2.5 epochs); the
    numbers a stage passes (train_loss, val_acc, images_per_s, best_value ...) are shown as given."""
    # `unit` is the stage's word for what it counts: the engine knows none of them

    def __init__(self, path: Path, every_s: float = EVERY_S, clock=time.time):
        self.path, self.every_s, self.clock = Path(path), every_s, clock
        self.first: tuple[float, float] | None = None    # (time, done) of the first call: the rate's origin
        self.written_at = float("-inf")
        self.state: dict[str, Any] = {}

    def __call__(self, done: float, of: float, unit: str, **numbers: Any) -> None:
        now = self.clock()
        if self.first is None:
            self.first = (now, float(done))
        self.state.update(numbers)
        self.state.update(unit=unit, done=done, of=of)
        if now - self.written_at >= self.every_s or done >= of:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Write the latest values now (the stage's end, or a test)."""
        if self.first is None:
            return
        now = self.clock() if now is None else now
        self.written_at = now
        start, done0 = self.first
        done, of = float(self.state["done"]), float(self.state["of"])
        elapsed, gained = now - start, done - done0
        eta = elapsed * (of - done) / gained if gained > 0 and elapsed > 0 else None
        safeio.atomic_write_json(self.path, {**self.state, "fraction": round(done / of, 4) if of else None,
                                             "elapsed_s": round(elapsed, 1), "updated": now,
                                             "eta_s": round(eta, 1) if eta is not None else None})


def no_progress(done: float, of: float, unit: str, **numbers: Any) -> None:
    """What a process that writes nothing gets (ranks > 0, tests): the same call, doing nothing."""


def read(folder: Path, now: float | None = None) -> dict | None:
    """The stage's latest progress, its ETA counted down to `now`; with job-array tasks, how many
    are done, running and failed (from each task's attempts); None when it wrote none."""
    files = StagePaths(Path(folder))
    data = safeio.read_json(files.progress)
    tasks = _task_counts(files)
    if data is None and not tasks:
        return None
    data = dict(data or {})
    if data.get("eta_s") is not None and data.get("updated"):
        since = (time.time() if now is None else now) - data["updated"]
        data["eta_s"] = round(max(0.0, data["eta_s"] - since), 1)
    if tasks:
        data["tasks"] = tasks
    return data


def _task_counts(files: StagePaths) -> dict[str, int]:
    """{done, running, failed} over the tasks of a job-array stage (each task's last attempt)."""
    counts = {"done": 0, "running": 0, "failed": 0}
    task_dirs = files.tasks()
    for task in task_dirs:
        last = ((safeio.read_json(task.attempts, {}) or {}).get("attempts") or [{}])[-1].get("status")
        key = {"done": "done", "running": "running"}.get(last, "failed" if last else None)
        if key:
            counts[key] += 1
    return counts if len(task_dirs) > 1 else {}      # one task: the stage's own state says it all


def describe(progress: dict | None) -> str:
    """One line for a table: `<unit> 3/10 · loss 0.41 · val 77.1% · 176 img/s · ETA 4m`."""
    if not progress:
        return ""
    parts = []
    if progress.get("of"):
        parts.append(f"{progress.get('unit', 'step')} {_number(progress['done'])}/{_number(progress['of'])}")
    for key, label, fmt in _SHOWN:
        if progress.get(key) is not None:
            parts.append(label.format(fmt(progress[key])))
    if progress.get("tasks"):
        t = progress["tasks"]
        parts.append(f"tasks {t['done']} done, {t['running']} running, {t['failed']} failed")
    if progress.get("eta_s") is not None:
        parts.append(f"ETA {duration(progress['eta_s'])}")
    return " · ".join(parts)


_SHOWN = [("train_loss", "loss {}", lambda v: f"{v:.3g}"),
          ("val_acc", "val {}", lambda v: f"{100 * v:.1f}%"),
          ("test_acc", "test {}", lambda v: f"{100 * v:.1f}%"),
          ("best_value", "best {}", lambda v: f"{v:.4g}"),
          ("images_per_s", "{} img/s", lambda v: f"{v:.0f}")]


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def duration(seconds: float) -> str:
    """42s, 4m, 1h05m: what a person reads at a glance."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{round(seconds / 60)}m"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m"
