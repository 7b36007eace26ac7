"""Efficiency records: sacct parsing (small pure functions) and the efficiency.csv columns."""
from __future__ import annotations

import re
import shutil
import subprocess
from typing import Iterable

COLUMNS = (
    "experiment", "stage", "kind", "status", "skip_reason", "job_id", "node", "partition", "device",
    "device_name", "num_devices", "cpus", "precision", "epochs", "samples_per_epoch", "total_samples",
    "trainable_params", "total_params", "wall_s", "throughput_per_s", "peak_rss_mb", "peak_gpu_mem_mb",
    "val_acc", "test_acc", "macro_precision", "macro_recall", "macro_f1", "seed", "config_hash", "git_rev",
    "started_at", "finished_at", "sacct_state", "sacct_elapsed_s", "sacct_totalcpu_s", "sacct_cpu_eff",
    "sacct_maxrss_mb",
)

# SLURM end states that mean the job did not succeed (sacct(1) JOB STATE CODES).
FAILED_STATES = ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                 "BOOT_FAIL", "DEADLINE")
SACCT_FIELDS = ("JobID", "JobName", "State", "Elapsed", "TotalCPU", "MaxRSS", "AllocCPUS", "NodeList",
                "Partition")
_SIZE_UNITS = {"": 1 / 2**20, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def parse_duration(text: str) -> float | None:
    """sacct time -> seconds: `1-02:03:04`, `02:03:04`, `03:04`, `00:01.234`, `1:02.5`."""
    text = (text or "").strip()
    if not text or text in ("INVALID", "UNLIMITED", "Partition_Limit"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [float(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    h, m, s = parts
    return days * 86400 + h * 3600 + m * 60 + s


def parse_size_mb(text: str) -> float | None:
    """sacct memory -> MiB: `1.5G`, `512K`, `100M`, `0`; a bare number is bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGTP]?)\s*", text or "")
    if not match:
        return None
    return float(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_state(text: str) -> str:
    """`CANCELLED by 0` -> `CANCELLED`; `COMPLETED` stays."""
    return (text or "").split(" ")[0].strip()


def split_job_id(job_id: str) -> tuple[str, str | None]:
    """`123.batch` -> (`123`, `batch`); `123_4.0` -> (`123_4`, `0`); `123_[5-7]` -> (`123_[5-7]`, None)."""
    head, _, step = job_id.partition(".")
    return head, (step or None)


def parse_sacct(text: str) -> dict[str, dict]:
    """`sacct --parsable2 -o <SACCT_FIELDS>` (with or without header) -> one summary per job.

    The job's own line gives state, elapsed, total CPU and allocated CPUs; MaxRSS is only on the
    step lines (batch, extern, 0, ...) so the job's value is the largest of its steps.
    """
    jobs: dict[str, dict] = {}
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) < len(SACCT_FIELDS) or cells[0] == "JobID":
            continue
        row = dict(zip(SACCT_FIELDS, cells))
        job, step = split_job_id(row["JobID"])
        entry = jobs.setdefault(job, {"maxrss_mb": None})
        rss = parse_size_mb(row["MaxRSS"])
        if rss is not None:
            entry["maxrss_mb"] = max(entry["maxrss_mb"] or 0.0, rss)
        if step is None:
            entry.update(state=parse_state(row["State"]), elapsed_s=parse_duration(row["Elapsed"]),
                         totalcpu_s=parse_duration(row["TotalCPU"]), alloc_cpus=int(row["AllocCPUS"] or 0),
                         node=row["NodeList"], partition=row["Partition"])
    return jobs


def cpu_efficiency(totalcpu_s: float | None, elapsed_s: float | None, cpus: int | None) -> float | None:
    """Share of the allocated CPU time that was used (seff's "CPU Efficiency")."""
    if not totalcpu_s or not elapsed_s or not cpus:
        return None
    return round(totalcpu_s / (elapsed_s * cpus), 4)


def sacct_columns(summary: dict | None) -> dict:
    if not summary:
        return {}
    rss = summary.get("maxrss_mb")
    return {
        "sacct_state": summary.get("state"),
        "sacct_elapsed_s": summary.get("elapsed_s"),
        "sacct_totalcpu_s": summary.get("totalcpu_s"),
        "sacct_cpu_eff": cpu_efficiency(summary.get("totalcpu_s"), summary.get("elapsed_s"),
                                        summary.get("alloc_cpus")),
        "sacct_maxrss_mb": None if rss is None else round(rss, 1),
    }


def query_sacct(job_ids: Iterable[str]) -> tuple[dict[str, dict], str | None]:
    """Run sacct for these jobs. Returns (summaries, None) or ({}, why accounting is unavailable)."""
    ids = sorted({j for j in job_ids if j and str(j)[0].isdigit()})
    if not ids:
        return {}, "no SLURM job ids recorded (stages ran locally)"
    if shutil.which("sacct") is None:
        return {}, "`sacct` is not installed here"
    try:
        out = subprocess.run(["sacct", "--parsable2", "--noheader", "-j", ",".join(ids),
                              "-o", ",".join(SACCT_FIELDS)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {}, f"sacct failed: {err}"
    if out.returncode != 0:
        return {}, f"sacct failed (is slurmdbd accounting configured?): {out.stderr.strip()[:300]}"
    return parse_sacct(out.stdout), None


def parse_squeue(text: str) -> dict[str, dict]:
    """`squeue -h -o %i|%j|%T|%r` -> job id -> {name, state, reason}."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            jobs[parts[0]] = {"name": parts[1], "state": parts[2], "reason": parts[3]}
    return jobs


def query_squeue(job_ids: Iterable[str]) -> dict[str, dict]:
    """Live jobs among these ids. Lists all jobs and filters: `squeue -j` fails on a purged id."""
    ids = {str(j) for j in job_ids if j}
    if not ids or shutil.which("squeue") is None:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T|%r"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {j: v for j, v in parse_squeue(out.stdout).items() if j in ids}
