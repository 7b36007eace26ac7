"""SLURM's environment variables, read in one place: the job a process runs in (job, step, array
task, node, partition, CPUs), whether it is a one-allocation driver or one of its steps, and the
env:// rendezvous variables of a stage that runs as several SLURM tasks. Pure: reads the
environment, runs no command."""
from __future__ import annotations

import os
import re
from typing import Mapping

from pipeline.executors.base import JobEnvironment

STEP_ENV = "PIPELINE_AS_STEP"          # set for the stage process of a step: the runner records the step id
BATCH_STEP_IDS = ("", "batch", "4294967294")   # SLURM_STEP_ID of the batch script itself (if set at all)


def job_environment(env: Mapping[str, str] = os.environ) -> JobEnvironment | None:
    """The SLURM job this process runs in, or None outside SLURM. An array task is
    `<array>_<task>` to sacct and squeue (its own SLURM_JOB_ID is not)."""
    if not env.get("SLURM_JOB_ID"):
        return None
    task, tasks, array_job = array_task(env)
    cpus = env.get("SLURM_CPUS_PER_TASK") or ""
    return JobEnvironment(
        job_id=array_job or env["SLURM_JOB_ID"], step_id=env.get("SLURM_STEP_ID") if env.get(STEP_ENV) else None,
        node=env.get("SLURMD_NODENAME"), partition=env.get("SLURM_JOB_PARTITION"),
        cpus=int(cpus) if cpus.isdigit() else None, task=task, tasks=tasks, executor="slurm",
        array_id=env.get("SLURM_ARRAY_JOB_ID") if array_job else None,
        task_ids=tuple(f"{env['SLURM_ARRAY_JOB_ID']}_{i}" for i in range(tasks)) if array_job else ())


def array_task(env: Mapping[str, str] = os.environ) -> tuple[int, int, str | None]:
    """(task, tasks, job id `<array>_<task>`) inside a SLURM job array; (0, 1, None) elsewhere."""
    if not env.get("SLURM_ARRAY_JOB_ID") or not env.get("SLURM_ARRAY_TASK_ID"):
        return 0, 1, None
    task = int(env["SLURM_ARRAY_TASK_ID"])
    return task, int(env.get("SLURM_ARRAY_TASK_COUNT") or task + 1), f"{env['SLURM_ARRAY_JOB_ID']}_{task}"


def inside_allocation(env: Mapping[str, str] = os.environ) -> bool:
    """In a SLURM job's batch script (not in a step of it): where steps can be launched."""
    return bool(env.get("SLURM_JOB_ID")) and env.get("SLURM_STEP_ID", "") in BATCH_STEP_IDS \
        and not env.get(STEP_ENV)


def in_step(env: Mapping[str, str] = os.environ) -> bool:
    """This process runs a stage as a step that a driver launched."""
    return bool(env.get(STEP_ENV)) and bool(env.get("SLURM_JOB_ID"))


def allocation_cpus(env: Mapping[str, str] = os.environ) -> int | None:
    """CPUs per task of the allocation (a step may not ask for more)."""
    cpus = env.get("SLURM_CPUS_PER_TASK") or ""
    return int(cpus) if cpus.isdigit() else None


def rendezvous_env(world_size: int, env=os.environ) -> dict[str, str]:
    """Rank SLURM_PROCID of SLURM_NTASKS; the first node of the step as the rendezvous host; a
    port drawn from the job id (the same in every task of the job). Raises, with what to do,
    when this process is not one of `world_size` SLURM tasks."""
    ntasks, rank = env.get("SLURM_NTASKS"), env.get("SLURM_PROCID")
    if ntasks is None or rank is None or int(ntasks) != world_size:
        raise RuntimeError(f"this stage runs as {world_size} processes (resources nodes x tasks or gpus), which "
                           f"srun starts on SLURM; here SLURM_NTASKS={ntasks}: submit it with --executor slurm "
                           f"(one allocation: sbatch sbatch/<experiment>.sbatch), or set the stage's "
                           f"resources to one task")
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
    job = int((env.get("SLURM_JOB_ID") or "0").split("_")[0] or 0)
    return {"MASTER_ADDR": first_host(nodes), "MASTER_PORT": str(20000 + job % 20000), "RANK": rank,
            "WORLD_SIZE": ntasks, "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": str(world_size // max(1, int(env.get("SLURM_NNODES") or 1)))}


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `vm` -> vm; `node[01-04,07],gpu1` -> node01."""
    match = re.match(r"([^,\[]+)(?:\[(\d+))?", nodelist.strip())
    if not match:
        return nodelist
    return match.group(1) + (match.group(2) or "")
