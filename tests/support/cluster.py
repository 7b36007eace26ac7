"""The real local SLURM cluster as the tests read it: squeue and sacct, and waits with deadlines.

slurmdbd records what the controller did seconds later: right after a job left squeue, or right
after a scancel, sacct can still say PENDING or RUNNING. Read a state from sacct only after
`wait_sacct_final` has seen every job end."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_until(condition, timeout: float, interval: float = 0.3) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def wait_for_line(paths, text: str, timeout: float = 120) -> Path:
    """Until one of the files `paths()` returns contains `text`; that file."""
    found: list[Path] = []

    def seen() -> bool:
        found[:] = [p for p in paths() if text in p.read_text(errors="replace")]
        return bool(found)
    try:
        wait_until(seen, timeout, interval=0.5)
    except AssertionError:
        raise AssertionError(f"{text!r} never appeared within {timeout}s") from None
    return found[0]


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


def queued(experiment: str) -> list[str]:
    """squeue's jobs of `experiment` (named `<experiment>.<stage>`) as `id name state` lines: what a
    test compares before and after a command, blind to the jobs a test beside it runs (tests/conftest.py)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True).stdout
    return sorted(line for line in out.splitlines() if line.split()[1].startswith(f"{experiment}."))


def squeue_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout


def sacct(job_ids: list[str], fields: list[str], *, steps: bool = False, every_attempt: bool = False) -> list[dict]:
    """sacct's rows for `job_ids` as dicts of `fields` (jobs only unless `steps`; the last attempt
    of a requeued job unless `every_attempt`). Empty if sacct fails."""
    cmd = ["sacct", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)]
    cmd += [] if steps else ["-X"]
    cmd += ["-D"] if every_attempt else []
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rows = [line.split("|") for line in out.splitlines()]
    return [dict(zip(fields, cells)) for cells in rows if len(cells) == len(fields) and cells[0]]


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """What sacct says now: job id (a job array's tasks as `<array>_<task>`) -> state of its last
    attempt, without sacct's suffix (`CANCELLED by 0` -> `CANCELLED`)."""
    return {r["JobID"]: r["State"].split(" ")[0] for r in sacct(job_ids, ["JobID", "State"])}


def wait_sacct_final(job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    """Until sacct has a final state for every job of `job_ids` (for a job array's id: for each of its
    tasks); returns `sacct_states` of them. Read sacct states in a test only through this."""
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


SCHEDULER_COMMANDS = ("sbatch", "squeue", "sacct", "sinfo", "scancel", "scontrol")


def counting_scheduler(folder: Path) -> tuple[dict[str, str], Path]:
    """Wrappers of SLURM's commands that append their name to a log before running the real one:
    (the environment that puts them first on PATH, the log). Read it with `scheduler_calls`."""
    import os
    import shutil
    bin_dir, log = Path(folder) / "counting-bin", Path(folder) / "scheduler-calls.log"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in SCHEDULER_COMMANDS:
        real = shutil.which(name)
        if real:
            wrapper = bin_dir / name
            wrapper.write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec "{real}" "$@"\n')
            wrapper.chmod(0o755)
    log.write_text("")
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


def scheduler_calls(log: Path) -> dict[str, int]:
    """Command name -> how often it ran since the last read (the log is emptied)."""
    names = log.read_text().split()
    log.write_text("")
    return {n: names.count(n) for n in SCHEDULER_COMMANDS if n in names}
