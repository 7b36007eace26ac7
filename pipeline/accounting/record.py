"""The accounting record of a stage: the columns of results/efficiency.csv, what they mean, and
the cost formulas. Written once here; the report, the variant comparison and the stages' own
summaries (through the stage context) all use these.

A stage's record is its accounting.json (written by the runner: what the stage's process saw)
joined with the scheduler's accounting of every attempt (the `sacct_*` columns: the executor's
usage summary, see `scheduler_columns`; the names are kept from the first backend, SLURM's sacct).
"""
from __future__ import annotations

# Metrics a stage returns (its metrics.json) that become efficiency.csv columns of the same name.
# With the work columns below (epochs, samples...), the only model vocabulary the engine knows:
# column names it owns, whatever stage fills them (tests/test_architecture.py keeps it so).
METRIC_COLUMNS = ("val_acc", "test_acc", "macro_precision", "macro_recall", "macro_f1")
COLUMNS = (
    "experiment", "stage", "variant", "kind", "status", "skip_reason", "job_id", "step_id", "attempts", "node", "partition",
    "device", "device_name", "num_devices", "cpus", "precision", "epochs", "samples_per_epoch", "total_samples",
    "trainable_params", "total_params", "wall_s", "gpu_hours", "throughput_per_s", "peak_rss_mb", "peak_gpu_mem_mb",
    *METRIC_COLUMNS, "seed", "config_hash", "git_rev",
    "started_at", "finished_at", "sacct_state", "sacct_attempts", "sacct_elapsed_s", "sacct_totalcpu_s",
    "sacct_cpu_eff", "sacct_maxrss_task_mb", "sacct_maxrss_step_mb",
)
SECONDS_PER_HOUR = 3600


def device_hours(record: dict) -> dict:
    """Wall time over every attempt x the devices it held: GPU-hours on GPUs (`num_devices`),
    CPU-hours otherwise (`cpus`). Each is None where it does not apply or is unknown."""
    wall, on_gpu = record.get("wall_s"), record.get("device") == "cuda"
    count = record.get("num_devices") if on_gpu else record.get("cpus")
    try:
        hours = round(float(wall) * int(count) / SECONDS_PER_HOUR, 4) if wall and count else None
    except (TypeError, ValueError):
        hours = None
    return {"gpu_hours": hours if on_gpu else None, "cpu_hours": None if on_gpu else hours}


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
