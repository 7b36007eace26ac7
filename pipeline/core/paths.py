"""Every file name the engine writes, named once (submitit's JobPaths is the model).

`StagePaths(folder)` owns the files of one stage folder (results/<exp>/<stage> or a variant's);
`ExperimentPaths` owns those of an experiment and of the results folder; `log_dir` and
`allocation_log` own where logs go. The runner, state, status, the report and the contract read
names from here and nowhere else.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]   # pipeline/core/paths.py -> the repository

SUCCESS = "_SUCCESS"              # written last: the stage is done, with its fingerprint and checksums
CORRUPT = "_CORRUPT"              # a done stage whose output was found damaged
JOB_RECORD = "job.json"           # the stage's current job and every earlier one
ATTEMPTS = "attempts.json"        # tries at the current result (removed when it succeeds)
ACCOUNTING = "accounting.json"    # the stage's accounting record (pipeline/accounting/record.py)
ACCOUNTING_EXTRA = "accounting_extra.json"   # further efficiency.csv rows a stage adds (one per variant it measured)
METRICS = "metrics.json"          # what the stage returned
CONFIG = "config.yaml"            # the stage as resolved
REPORT_FRAGMENT = "report.md"     # the stage's own section of results/report.md
CHECKPOINT = "checkpoint.pt"      # the resume file of an unfinished run, not a result
TASKS = "tasks"                   # job-array stages: tasks/<i>/ holds task i's attempts
PROGRESS = "progress.json"        # how far the running stage is (pipeline/core/progress.py)

# Engine bookkeeping, rewritten after the stage ends or never read by other stages: not artifacts.
NOT_ARTIFACTS = frozenset({SUCCESS, CORRUPT, JOB_RECORD, ATTEMPTS, ACCOUNTING, CHECKPOINT, PROGRESS})
# What an earlier run leaves that a clean start keeps: the job records and tries.
KEPT_ON_CLEAN = frozenset({JOB_RECORD, ATTEMPTS})


@dataclasses.dataclass(frozen=True)
class StagePaths:
    folder: Path

    success = property(lambda self: self.folder / SUCCESS)
    corrupt = property(lambda self: self.folder / CORRUPT)
    job_record = property(lambda self: self.folder / JOB_RECORD)
    attempts = property(lambda self: self.folder / ATTEMPTS)
    accounting = property(lambda self: self.folder / ACCOUNTING)
    accounting_extra = property(lambda self: self.folder / ACCOUNTING_EXTRA)
    metrics = property(lambda self: self.folder / METRICS)
    config = property(lambda self: self.folder / CONFIG)
    report_fragment = property(lambda self: self.folder / REPORT_FRAGMENT)
    checkpoint = property(lambda self: self.folder / CHECKPOINT)
    progress = property(lambda self: self.folder / PROGRESS)
    run_lock = property(lambda self: self.folder / ".run.lock")       # one run of the stage at a time
    finish_lock = property(lambda self: self.folder / ".finish.lock")  # array tasks write the result in turn

    def task(self, index: int) -> "StagePaths":
        """Task `index` of a job-array stage: its own attempts and run lock."""
        return StagePaths(self.folder / TASKS / str(index))

    def tasks(self) -> list["StagePaths"]:
        return [StagePaths(p) for p in sorted((self.folder / TASKS).glob("*"))]

    def is_stage_folder(self) -> bool:
        """The engine wrote into it (a stage folder, not a variant's or another folder)."""
        return any((self.folder / n).exists() for n in (CONFIG, SUCCESS, JOB_RECORD, ACCOUNTING))


# ---- the results folder and an experiment's own files ----

EFFICIENCY_CSV = "efficiency.csv"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
VARIANTS = "variants"
VARIANT_INDEX = "variant.json"
COMPARISON_CSV = "comparison.csv"
COMPARISON_PNG = "comparison.png"
ATTEMPTS_CSV = "attempts.csv"     # results/: one row per attempt of every stage (the timeline's data)
TIMELINE_PNG = "timeline.png"     # results/<exp>/: where each experiment's time went


def experiment_dir(results: Path, experiment: str) -> Path:
    return Path(results) / experiment


def variants_dir(results: Path, experiment: str) -> Path:
    """results/<exp>/variants: one folder per variant (its index and the stages it ran itself)."""
    return experiment_dir(results, experiment) / VARIANTS


def variant_dir(results: Path, experiment: str, variant: str) -> Path:
    return variants_dir(results, experiment) / variant


def submit_lock(results: Path, experiment: str) -> Path:
    """Held by a submit of the experiment (a second one is refused)."""
    return experiment_dir(results, experiment) / ".submit.lock"


def resolved_config(results: Path, experiment: str, variant: str = "") -> Path:
    """The resolved config a local job reads: one per experiment, one per variant."""
    folder = variant_dir(results, experiment, variant) if variant else experiment_dir(results, experiment)
    return folder / "_resolved.yaml"


# ---- logs ----

LOGS = "logs"   # the default logs folder (paths.logs), relative to where jobs are submitted

def log_dir(logs: Path, experiment: str, stage: str) -> Path:
    """logs/<exp>/<stage>/: the logs of every job of one stage."""
    return Path(logs) / experiment / stage


def allocation_log(logs: str, experiment: str, job_id: str) -> str:
    """The log of a one-allocation job running every stage (job_id may be a shell variable)."""
    return f"{logs}/{experiment}-{job_id}.out"
