"""Render one experiment as a single .sbatch file: one allocation that runs every stage in order.

A pure function of the experiment and the config path as the user wrote it, so the committed
sbatch/*.sbatch files can be checked for being in sync by a test.
"""
from __future__ import annotations

import shlex

from .config import Experiment, mem_mb, time_minutes

def _hhmmss(minutes: int) -> str:
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def allocation(exp: Experiment) -> dict:
    """One allocation big enough for the largest stage, long enough for all of them in a row."""
    stages = list(exp.stages.values())
    biggest_mem = max(stages, key=lambda s: mem_mb(s.resources.mem)).resources.mem
    return {
        "job-name": exp.name,
        "time": _hhmmss(sum(time_minutes(s.resources.time) for s in stages)),
        "cpus-per-task": max(s.resources.cpus_per_task for s in stages),
        "mem": biggest_mem,
        "gres": f"gpu:{max(s.resources.gpus for s in stages)}" if any(s.resources.gpus for s in stages) else None,
        "partition": exp.resources.partition, "constraint": exp.resources.constraint,
        "account": exp.resources.account, "qos": exp.resources.qos,
        # logs/ exists in every checkout; SLURM does not create the folder of --output.
        "output": f"logs/{exp.name}-%j.out",
        "open-mode": "append",
        # Ask for USR1 before the time limit: `pipeline run` requeues the job, which resumes
        # from the stages' checkpoints (finished stages are skipped by their _SUCCESS markers).
        "signal": f"B:USR1@{exp.signal_delay_s}",
        "requeue": True,
        **exp.resources.extra,
    }


def render(exp: Experiment, config_arg: str, overrides: list[str] = ()) -> str:
    lines = [
        "#!/bin/bash",
        f"# Rendered by `python -m pipeline render -c {config_arg}`: edit the YAML, not this file.",
        f"# Runs every stage of experiment {exp.name!r} in one allocation; submit from the repo root:",
        f"#   sbatch sbatch/{exp.name}.sbatch",
    ]
    for key, value in allocation(exp).items():
        if value is True:
            lines.append(f"#SBATCH --{key}")
        elif value is not None:
            lines.append(f"#SBATCH --{key}={shlex.quote(str(value))}")
    lines += [
        "",
        "set -eo pipefail",
        'cd "${PIPELINE_ROOT:-$SLURM_SUBMIT_DIR}"',
        "",
        "# setup (configs/defaults.yaml and the experiment's `setup`)",
        *exp.setup,
        *dict.fromkeys(line for s in exp.stages.values() for line in s.setup),
        "",
        "exec python -m pipeline run all -c " + " ".join(
            [shlex.quote(config_arg)] + [f"--set {shlex.quote(o)}" for o in overrides]),
        "",
    ]
    return "\n".join(lines)
