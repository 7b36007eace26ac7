"""Shared fixtures: an isolated workspace per test and the real local SLURM cluster."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@pytest.fixture
def workspace(tmp_path):
    """Separate results/logs/data folders; `overrides` points an experiment at them."""
    ws = {k: tmp_path / k for k in ("results", "logs", "data", "cache")}
    for p in ws.values():
        p.mkdir()
    ws["overrides"] = [f"paths.{k}={ws[k]}" for k in ("results", "logs", "data", "cache")]
    ws["root"] = tmp_path
    return ws


def cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ...` from the repo root, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def terminate_at(cmd: list[str], marker: str, timeout: float = 60) -> tuple[int, str]:
    """Run `cmd` from the repo root, send SIGTERM once a line contains `marker`; return its exit
    code and the output that followed the signal."""
    import signal
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if marker in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    proc.wait(timeout=timeout)
    return proc.returncode, rest


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="session")
def slurm():
    """The real cluster. Under CI=true it must be there: a missing cluster fails, never skips."""
    from pipeline.executors.slurm.executor import SlurmExecutor
    ok, why = SlurmExecutor.reachable()
    if not ok and os.geteuid() == 0:
        subprocess.run(["bash", str(REPO / "scripts" / "slurm_cluster.sh"), "up"], check=False)
        ok, why = SlurmExecutor.reachable()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the local SLURM cluster but it is not reachable: {why}")
        pytest.skip(f"no SLURM cluster: {why} (run scripts/slurm_cluster.sh up as root)")
    return True


def wait_for_jobs(job_ids: list[str], timeout: float = 300, allow_stuck: bool = False) -> None:
    """Until none of the jobs is in squeue (or, with allow_stuck, all wait behind a failed one)."""
    from pipeline.cli.status import stuck_or_done
    from pipeline.executors.slurm.executor import SlurmExecutor
    deadline = time.time() + timeout
    while time.time() < deadline:
        live = SlurmExecutor().live(job_ids)
        if not live or (allow_stuck and stuck_or_done(live)):
            return
        time.sleep(1)
    raise AssertionError(f"jobs still queued after {timeout}s: {live}")


def job_ids_from_table(stdout: str) -> dict[str, str]:
    """stage -> job id from `submit`'s table."""
    rows = [line.split() for line in stdout.splitlines() if line and not line.startswith(("stage", "["))]
    return {r[0]: r[2] for r in rows if len(r) >= 3 and r[2].isdigit()}


def status_json(config: str, overrides: list[str]) -> dict[str, dict]:
    rows = json.loads(cli("status", "-c", config, "--json", *sets(overrides)).stdout)
    return {r["stage"]: r for r in rows}


def pytest_collection_modifyitems(items):
    """A test that takes the `slurm` fixture (itself or through another fixture) needs the
    cluster: mark it `slurm`, so `-m slurm` / `-m "not slurm"` split the suite exactly."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


def wait_until(condition, timeout: float, interval: float = 0.3) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def squeue_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """What sacct says now: job id (a job array's tasks as `<array>_<task>`) -> state of its last
    attempt, without sacct's suffix (`CANCELLED by 0` -> `CANCELLED`). Empty if sacct fails."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State"],
                         capture_output=True, text=True).stdout
    return {cells[0]: cells[1].split(" ")[0] for cells in (line.split("|") for line in out.splitlines())
            if len(cells) == 2 and cells[0]}


def wait_sacct_final(job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    """Until sacct has a final state for every job of `job_ids` (for a job array's id: for each of its
    tasks); returns `sacct_states` of them. slurmdbd records what the controller did seconds later:
    right after a job left squeue, or right after a scancel, sacct can still say PENDING or RUNNING
    (seen: CANCELLED jobs still PENDING in sacct). Read sacct states in a test only through this."""
    from pipeline.executors.slurm.sacct import ENDED_STATES
    ids = [str(j) for j in job_ids]
    states: dict[str, str] = {}

    def mine(job: str) -> bool:
        return any(job == i or job.startswith(f"{i}_") for i in ids)

    def pending() -> dict[str, str]:
        missing = {i: "not in sacct" for i in ids if not any(j == i or j.startswith(f"{i}_") for j in states)}
        return {**missing, **{j: s for j, s in states.items() if s not in ENDED_STATES}}

    def final() -> bool:
        states.clear()
        states.update({j: s for j, s in sacct_states(ids).items() if mine(j)})
        return not pending()
    try:
        wait_until(final, timeout, interval=1)
    except AssertionError:
        raise AssertionError(f"sacct has no final state within {timeout}s for {pending()} "
                             f"(jobs {', '.join(ids)}; slurmdbd behind the controller?)") from None
    return dict(states)


def wait_for_requeued_start(log: Path, job: str, timeout: float = 180,
                            line: str = "Starting with JobEnvironment", count: int = 2) -> None:
    """Until a requeued job's second attempt has started (by default: submitit logs its start
    again) or written `line` `count` times: only then is waiting for the job to leave squeue
    meaningful (squeue can miss a job for a moment while it is requeued). SLURM may hold a
    requeued job back (BeginTime): release it while it waits, but not in the second of the
    requeue. slurmd compares the new launch credential's time, in whole seconds, with the time it
    revoked the old attempt's; a release in the same second gets "Job 1 already killed, do not
    launch batch job" and the attempt fails (seen on the local cluster)."""
    deadline = time.time() + timeout
    time.sleep(2)
    while log.read_text().count(line) < count:
        if time.time() > deadline:
            raise AssertionError(f"job {job} did not start again within {timeout}s of its requeue")
        if "PENDING" in squeue_state(job):
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=False)
        time.sleep(1)
