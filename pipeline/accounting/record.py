"""The accounting record of a stage: the columns of results/efficiency.csv, what they mean, and
the cost formulas. Written once here; the report, the variant comparison and the stages' own
summaries (through the stage context) all use these.

A stage's record is its accounting.json (written by the runner: what the stage's process saw)
joined with the scheduler's accounting of every attempt (the `sacct_*` columns: the executor's
usage summary, see `scheduler_columns`; the names are kept from the first backend's accounting command).
"""
from __future__ import annotations

# Metrics a stage returns (its metrics.json) that become efficiency.csv columns of the same name.
# With the work columns below (epochs, samples...), the only model vocabulary the engine knows:
# column names it owns, whatever stage fills them (tests/test_architecture.py keeps it so).
METRIC_COLUMNS = ("val_acc", "test_acc", "macro_precision", "macro_recall", "macro_f1")
# What the stage's own sampler measured (pipeline/accounting/samplers.py; empty where it could not).
SAMPLED_COLUMNS = ("cpu_util", "gpu_util_mean", "gpu_util_low_share", "gpu_mem_peak_mb", "gpu_mem_total_mb",
                   "gpu_power_mean_w", "gpu_energy_j", "cpu_energy_j")
COLUMNS = (
    "experiment", "stage", "variant", "kind", "status", "skip_reason", "job_id", "step_id", "attempts", "node", "partition",
    "ran_on", "device", "device_name", "num_devices", "cpus", "precision", "epochs", "samples_per_epoch", "total_samples",
    "trainable_params", "total_params", "wall_s", "gpu_hours", "throughput_per_s", "peak_rss_mb", "peak_gpu_mem_mb",
    *METRIC_COLUMNS, "seed", "config_hash", "git_rev",
    "started_at", "finished_at", "sacct_state", "sacct_attempts", "sacct_elapsed_s", "sacct_totalcpu_s",
    "sacct_cpu_eff", "sacct_maxrss_task_mb", "sacct_maxrss_step_mb",
    "sacct_req_mem_mb", "sacct_mem_eff", "sacct_timelimit_s", "sacct_time_eff", "sacct_queue_wait_s",
    "sacct_energy_j", "sacct_gpu_util", "sacct_submit", "sacct_end",
    *SAMPLED_COLUMNS, "idle",
)
# One row per attempt (or step) of every stage: results/attempts.csv, the timeline's data.
ATTEMPT_COLUMNS = ("experiment", "stage", "variant", "job", "step", "attempt", "state", "gpus", "submit", "start", "end",
                   "queue_wait_s", "elapsed_s", "timelimit_s", "time_eff", "req_mem_mb", "maxrss_step_mb",
                   "mem_eff", "alloc_cpus", "cpu_eff", "energy_j")
SECONDS_PER_HOUR = 3600


def _device_seconds(record: dict) -> tuple[float | None, bool]:
    """(wall time over every attempt x the devices it held, on a GPU?): GPUs (`num_devices`) on a
    GPU, CPUs (`cpus`) otherwise. None where either is missing."""
    on_gpu = record.get("device") == "cuda"
    wall, count = record.get("wall_s"), record.get("num_devices") if on_gpu else record.get("cpus")
    try:
        return (float(wall) * int(count) if wall and count else None), on_gpu
    except (TypeError, ValueError):
        return None, on_gpu


def device_hours(record: dict) -> dict:
    """The cost formula: {gpu_hours, cpu_hours} of one stage record; each None where it does not
    apply or cannot be had."""
    return total_device_hours([record], empty=None)


def total_device_hours(records: list[dict], empty: float | None = 0.0) -> dict:
    """{gpu_hours, cpu_hours} of several stage records, summed, then rounded once (4 places).
    GPU-hours are None where no record used a GPU; CPU-hours `empty` where none ran on CPU."""
    gpu, cpu = [], []
    for record in records:
        seconds, on_gpu = _device_seconds(record)
        if seconds is not None:
            (gpu if on_gpu else cpu).append(seconds)
    return {"gpu_hours": round(sum(gpu) / SECONDS_PER_HOUR, 4) if gpu else None,
            "cpu_hours": round(sum(cpu) / SECONDS_PER_HOUR, 4) if cpu else empty}


def unit_hours(units: float, seconds: float) -> float:
    """Units held (cores, GPUs, GiB of memory) for `seconds` -> unit-hours, 4 places."""
    return round(units * seconds / SECONDS_PER_HOUR, 4)


def gpu_hours(record: dict) -> float | None:
    """The record's GPU-hours (None for a CPU stage): efficiency.csv's `gpu_hours`."""
    return device_hours(record)["gpu_hours"]


def cpu_efficiency(totalcpu_s: float | None, elapsed_s: float | None, cpus: int | None) -> float | None:
    """Share of the allocated CPU time that was used (seff's "CPU Efficiency")."""
    if not totalcpu_s or not elapsed_s or not cpus:
        return None
    return round(totalcpu_s / (elapsed_s * cpus), 4)


def ratio(used: float | None, asked: float | None) -> float | None:
    """used / asked, 4 places (memory efficiency: peak RSS / memory asked; time efficiency:
    elapsed / time limit); None where either is missing."""
    if used is None or not asked:
        return None
    return round(used / asked, 4)


def stamp(unix_s: float | None) -> str | None:
    """Unix seconds -> ISO time in UTC, as efficiency.csv writes every time stamp."""
    import datetime
    if unix_s is None:
        return None
    return datetime.datetime.fromtimestamp(unix_s, datetime.timezone.utc).isoformat(timespec="seconds")


def attempt_columns(part: dict) -> dict:
    """One attempt's (or step's) usage from the executor -> its attempts.csv columns (see ATTEMPT_COLUMNS)."""
    return {**{k: part.get(k) for k in ("job", "step", "state", "queue_wait_s", "elapsed_s", "timelimit_s",
                                         "req_mem_mb", "maxrss_step_mb", "alloc_cpus", "energy_j")},
            "submit": stamp(part.get("submit")), "start": stamp(part.get("start")), "end": stamp(part.get("end")),
            "time_eff": ratio(part.get("elapsed_s"), part.get("timelimit_s")),
            "mem_eff": ratio(part.get("maxrss_step_mb"), part.get("req_mem_mb")),
            "cpu_eff": cpu_efficiency(part.get("totalcpu_s"), part.get("elapsed_s"), part.get("alloc_cpus"))}


def scheduler_columns(summary: dict | None) -> dict:
    """An executor's usage summary of a stage (every attempt; see Executor.accounting) -> the
    sacct_* columns of efficiency.csv."""
    if not summary:
        return {}

    def mb(v):
        return None if v is None else round(v, 1)
    last = (summary.get("parts") or [summary])[-1]
    return {
        "sacct_state": summary.get("state"),
        "sacct_attempts": summary.get("attempts"),
        "sacct_elapsed_s": summary.get("elapsed_s"),
        "sacct_totalcpu_s": summary.get("totalcpu_s"),
        # core-seconds allocated over every attempt: elapsed x allocated CPUs, summed
        "sacct_cpu_eff": cpu_efficiency(summary.get("totalcpu_s"), summary.get("core_s"), 1),
        "sacct_maxrss_task_mb": mb(summary.get("maxrss_task_mb")),
        "sacct_maxrss_step_mb": mb(summary.get("maxrss_step_mb")),
        "sacct_req_mem_mb": mb(summary.get("req_mem_mb")),
        # the step's peak (MaxRSS x tasks) against what the job asked for (seff's "Memory Efficiency")
        "sacct_mem_eff": ratio(summary.get("maxrss_step_mb"), summary.get("req_mem_mb")),
        "sacct_timelimit_s": summary.get("timelimit_s"),
        # the attempt that decided the result: its elapsed time against its limit
        "sacct_time_eff": ratio(last.get("elapsed_s"), summary.get("timelimit_s")),
        "sacct_queue_wait_s": summary.get("queue_wait_s"),
        "sacct_energy_j": summary.get("energy_j"),
        "sacct_gpu_util": summary.get("gpu_util"),
        "sacct_submit": stamp(summary.get("submit")),
        "sacct_end": stamp(summary.get("end")),
    }
