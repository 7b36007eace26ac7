"""Executors: one interface, `submit(exp, stage, after) -> Submission`, one module per backend."""
from __future__ import annotations

from pipeline.executors.base import Executor, Submission


def slurm_available() -> tuple[bool, str]:
    """(usable, why): whether SLURM's controller answers here (asked by the SLURM backend)."""
    from pipeline.executors.slurm.executor import controller_reachable   # imported on use: local runs need no submitit
    return controller_reachable()


def make_executor(choice: str, dry_run: bool = False) -> Executor:
    """auto|slurm|local. auto picks SLURM when reachable, else local with a printed notice."""
    if choice not in ("auto", "slurm", "local"):
        raise ValueError(f"unknown executor {choice!r}; valid choices: auto, slurm, local")
    if choice == "auto":
        ok, why = slurm_available()
        if not ok:
            print(f"[pipeline] SLURM not reachable ({why}): running locally in this process's machine.")
        choice = "slurm" if ok else "local"
    if choice == "slurm":
        from pipeline.executors.slurm.executor import SlurmExecutor
        return SlurmExecutor(dry_run=dry_run)
    from pipeline.executors.local import LocalExecutor
    return LocalExecutor(dry_run=dry_run)


__all__ = ["Executor", "Submission", "make_executor", "slurm_available"]
