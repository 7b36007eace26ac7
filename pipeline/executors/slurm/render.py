"""Render one experiment as a single .sbatch file: one allocation that runs every stage in order.

A pure function of the experiment and the config path as the user wrote it, so the committed
sbatch/*.sbatch files can be checked for being in sync by a test.
"""
from __future__ import annotations

import shlex

from pipeline.core.paths import LOGS, allocation_log
from pipeline.executors.slurm.formats import gpu_request, mem_mb, time_minutes

DEFAULT_FOLDER = "sbatch"   # sbatch/<experiment>.sbatch, committed beside the configs


def _hhmmss(minutes: int) -> str:
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def default_path(exp) -> str:
    return f"{DEFAULT_FOLDER}/{exp.name}.sbatch"


def allocation(exp) -> dict:
    """One allocation big enough for the largest stage, long enough for all of them in a row (not
    counting the stages that run on the submit host: never in this job)."""
    stages = [s for s in exp.stages.values() if not s.on_submit_host] or list(exp.stages.values())
    biggest_mem = max(stages, key=lambda s: mem_mb(s.resources.mem)).resources.mem
    return {
        "job-name": exp.name,
        "time": _hhmmss(sum(time_minutes(s.resources.time) for s in stages)),
        "cpus-per-task": max(s.resources.cpus_per_task for s in stages),
        # The stage that runs as the most processes sets nodes and tasks per node.
        "nodes": max(s.resources.nodes for s in stages) if any(s.resources.nodes > 1 for s in stages) else None,
        "ntasks-per-node": max(s.resources.tasks_per_node for s in stages)
        if any(s.resources.tasks_per_node > 1 for s in stages) else None,
        "mem": biggest_mem,
        **gpu_request(max(stages, key=lambda s: s.resources.gpus).resources),
        # the partition of the stage asking for the most GPUs (a profile's GPU partition, if any)
        "partition": max(stages, key=lambda s: s.resources.gpus).resources.partition if exp.raw.get("profile")
        else exp.resources.partition, "constraint": exp.resources.constraint,
        "account": exp.resources.account, "qos": exp.resources.qos,
        # No --output: SLURM opens it before the script runs and, if its folder is missing, the job
        # fails with no log anywhere. Its default (slurm-<jobid>.out in the submit directory) only
        # names the log the script writes itself (see render). Append: a requeued job adds to it.
        "open-mode": "append",
        # Ask for USR1 before the time limit: `pipeline run` requeues the job, which resumes
        # from the stages' checkpoints (finished stages are skipped by their _SUCCESS markers).
        "signal": f"B:USR1@{exp.signal_delay_s}",
        "requeue": True,
        **exp.resources.extra,
    }


def render(exp, config_arg: str, overrides: list[str] = ()) -> str:
    profile = [f"--profile {shlex.quote(exp.raw['profile'])}"] if exp.raw.get("profile") else []
    lines = [
        "#!/bin/bash",
        f"# Rendered by `python -m pipeline render -c {' '.join([config_arg, *profile])}`: edit the YAML, not this file.",
        f"# Runs every stage of experiment {exp.name!r} in one allocation, each stage as its own job step",
        f"# (srun; sacct accounts each apart). Submit from the repo root: sbatch sbatch/{exp.name}.sbatch",
        f"# Log: {allocation_log(LOGS, exp.name, '<jobid>')} (slurm-<jobid>.out names it).",
    ]
    arrays = [f"{s.name} ({s.resources.array} tasks)" for s in exp.stages.values() if s.resources.array > 1]
    if arrays:
        lines.append(f"# Job arrays under `submit`: {', '.join(arrays)}; in this one allocation each runs as a "
                     "single task.")
    here = [s.name for s in exp.stages.values() if s.on_submit_host]
    if here:
        lines += [f"# Not in this job (where: submit_host): {', '.join(here)}. First, on the login node:",
                  f"#   python -m pipeline submit {' '.join(here)} -c {' '.join([config_arg, *profile])}"
                  "   (else the job stops at once)"]
    for key, value in allocation(exp).items():
        if value is True:
            lines.append(f"#SBATCH --{key}")
        elif value is not None:
            lines.append(f"#SBATCH --{key}={shlex.quote(str(value))}")
    lines += [
        "",
        "set -eo pipefail",
        'cd "${PIPELINE_ROOT:-$SLURM_SUBMIT_DIR}"',
        'if [ -n "${SLURM_JOB_ID:-}" ]; then  # the log folder first: a missing logs/ must not lose the log',
        f"  mkdir -p {LOGS}",
        f'  export PIPELINE_LOG="$PWD/{allocation_log(LOGS, exp.name, "$SLURM_JOB_ID")}"',
        '  echo "log: $PIPELINE_LOG"',
        '  exec >>"$PIPELINE_LOG" 2>&1',
        "fi",
        "",
        "# setup (configs/defaults.yaml and the experiment's `setup`)",
        *exp.setup,
        *dict.fromkeys(line for s in exp.stages.values() for line in s.setup),
        "",
        "exec python -m pipeline run all --as-steps -c " + " ".join(
            [shlex.quote(config_arg)] + profile + [f"--set {shlex.quote(o)}" for o in overrides]),
        "",
    ]
    return "\n".join(lines)
