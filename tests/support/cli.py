"""The command line as a user runs it: `python -m pipeline ...` from the repo root, and its output
read back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None,
        cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ...` (from the repo root unless `cwd` says otherwise)."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def checkout(tmp_path: Path) -> Path:
    """A checkout to submit from (SLURM's default output and logs/ land here, not in the repo): a
    copy of the code, so an edit in the repo while the job runs changes no stage's fingerprint."""
    import shutil
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("configs", "pipeline", "jobs"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def sets(overrides: list[str]) -> list[str]:
    """`--set` before each override."""
    return [a for o in overrides for a in ("--set", o)]


def terminate_at(cmd: list[str], marker: str, timeout: float = 60) -> tuple[int, str]:
    """Run `cmd` from the repo root, send SIGTERM once a line contains `marker`; return its exit
    code and the output that followed the signal."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if marker in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    proc.wait(timeout=timeout)
    return proc.returncode, rest


def job_ids_from_table(stdout: str) -> dict[str, str]:
    """stage -> job id from `submit`'s table."""
    rows = [line.split() for line in stdout.splitlines() if line and not line.startswith(("stage", "["))]
    return {r[0]: r[2] for r in rows if len(r) >= 3 and r[2].isdigit()}


def status_json(config: str, overrides: list[str]) -> dict[str, dict]:
    """stage -> its row of `status --json`."""
    rows = json.loads(cli("status", "-c", config, "--json", *sets(overrides)).stdout)
    return {r["stage"]: r for r in rows}

