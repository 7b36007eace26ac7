"""Executors: one interface, `submit(exp, stage, after) -> Submission`, one module per backend."""
from __future__ import annotations

import shutil
import subprocess

from .base import Executor, Submission


def slurm_available() -> tuple[bool, str]:
    """SLURM is usable when `sbatch` exists and the controller answers `scontrol ping`."""
    if shutil.which("sbatch") is None:
        return False, "no `sbatch` on PATH"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"`scontrol ping` failed: {err}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return False, f"the SLURM controller does not answer: {(ping.stdout + ping.stderr).strip()}"
    return True, "controller is UP"


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
        from .slurm import SlurmExecutor
        return SlurmExecutor(dry_run=dry_run)
    from .local import LocalExecutor
    return LocalExecutor(dry_run=dry_run)


__all__ = ["Executor", "Submission", "make_executor", "slurm_available"]
