"""`status --watch` on a real SLURM run, under a pseudo-terminal: a stage's progress advances and
its ETA shrinks in the redrawn table, and the view exits with status's code once the DAG ends.
The DAG is a `ticks` stage (tests/support/noop_stages.py: 6 steps of 2 s, progress after each)
and a stage after it."""
from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.support.cli import REPO, cli, job_ids_from_table, sets, status_json
from tests.support.cluster import wait_until
from tests.support.experiments import write_experiment

pytestmark = pytest.mark.slurm

TICKING = {"name": "ticking", "stage_modules": ["tests.support.noop_stages"],
           "resources": {"time": "00:05:00", "cpus_per_task": 1, "mem": "500M"},
           "stages": {"count": {"kind": "ticks", "ticks": 6, "sleep_s": 2.0},
                      "after": {"kind": "noop", "needs": ["count"]}}}


def run_in_pty(cmd: list[str], timeout: float, columns: int = 400) -> tuple[int, str]:
    """Run cmd with a terminal as stdin, stdout and stderr (so rich draws its live view); its exit
    code and everything it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, close_fds=True,
                            env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"})
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:          # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_watch_follows_a_slurm_dag_to_its_end(slurm, tmp_path):
    config = str(write_experiment(tmp_path, TICKING, "ticking.yaml"))
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    jobs = job_ids_from_table(cli("submit", "all", "-c", config, "--executor", "slurm", *overrides).stdout)
    rows: dict = {}

    def reporting() -> bool:          # status --json carries the running stage's progress
        rows.update(status_json(config, overrides[1::2]))
        return rows["count"]["state"] == "running" and bool(rows["count"]["progress"])
    wait_until(reporting, timeout=240)          # a shared cluster may start it late; alone, in ~3 s
    count = rows["count"]["progress"]
    assert (count["unit"], count["of"]) == ("tick", 6) and 0 <= count["done"] < 6 and rows["after"]["progress"] is None
    code, out = run_in_pty([sys.executable, "-m", "pipeline", "status", "-c", config, "--watch", "1", *overrides],
                           timeout=240)
    assert code == 0, out
    ticks = [int(t) for t in re.findall(r"tick (\d)/6", out)]
    etas = [int(e) for e in re.findall(r"tick \d/6 · ETA (\d+)s", out)]
    assert len(set(ticks)) >= 2 and ticks == sorted(ticks), out       # it advanced, never back
    assert len(set(etas)) >= 2 and etas[-1] < etas[0], out            # and the ETA shrank
    assert "\x1b[" in out                                             # drawn in place, not printed line by line
    assert "every stage has ended" in out
    final = cli("status", "-c", config, *overrides).stdout
    assert re.search(rf"count\s+done\s+{jobs['count']}", final) and re.search(rf"after\s+done\s+{jobs['after']}", final)
