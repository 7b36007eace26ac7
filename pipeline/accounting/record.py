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
COLUMNS = (
    "experiment", "stage", "variant", "kind", "status", "skip_reason", "job_id", "step_id", "attempts", "node", "partition",
    "ran_on", "device", "device_name", "num_devices", "cpus", "precision", "epochs", "samples_per_epoch", "total_samples",
    "trainable_params", "total_params", "wall_s", "gpu_hours", "throughput_per_s", "peak_rss_mb", "peak_gpu_mem_mb",
    *METRIC_COLUMNS, "seed", "config_hash", "git_rev",
    "started_at", "finished_at", "sacct_state", "sacct_attempts", "sacct_elapsed_s", "sacct_totalcpu_s",
    "sacct_cpu_eff", "sacct_maxrss_task_mb", "sacct_maxrss_step_mb",
)
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


def gpu_hours(record: dict) -> float | None:
    """The record's GPU-hours (None for a CPU stage): efficiency.csv's `gpu_hours`."""
    return device_hours(record)["gpu_hours"]


def cpu_efficiency(totalcpu_s: float | None, elapsed_s: float | None, cpus: int | None) -> float | None:
    """Share of the allocated CPU time that was used (seff's "CPU Efficiency")."""
    if not totalcpu_s or not elapsed_s or not cpus:
        return None
    return round(totalcpu_s / (elapsed_s * cpus), 4)


def scheduler_columns(summary: dict | None) -> dict:
    """An executor's usage summary of a stage (every attempt; see Executor.accounting) -> the
    sacct_* columns of efficiency.csv."""
    if not summary:
        return {}

    def mb(v):
        return None if v is None else round(v, 1)
    return {
        "sacct_state": summary.get("state"),
        "sacct_attempts": summary.get("attempts"),
        "sacct_elapsed_s": summary.get("elapsed_s"),
        "sacct_totalcpu_s": summary.get("totalcpu_s"),
        # core-seconds allocated over every attempt: elapsed x allocated CPUs, summed
        "sacct_cpu_eff": cpu_efficiency(summary.get("totalcpu_s"), summary.get("core_s"), 1),
        "sacct_maxrss_task_mb": mb(summary.get("maxrss_task_mb")),
        "sacct_maxrss_step_mb": mb(summary.get("maxrss_step_mb")),
    }
