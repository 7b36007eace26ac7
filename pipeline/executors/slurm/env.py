"""The rank of this process in a stage that runs as several SLURM tasks, and the env://
rendezvous variables its process group reads (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
LOCAL_RANK, as launchers set them), from the task's own SLURM variables. Pure: reads the
environment, runs no command."""
from __future__ import annotations

import os
import re


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
