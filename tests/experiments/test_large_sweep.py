"""A sweep of 200 variants on the real local SLURM cluster costs the scheduler what a plain run
does (issue 23): one squeue and at most one sacct per command, counted by wrappers of SLURM's
commands first on PATH. The jobs are submitted held (`sbatch --hold`), so the counts are
measured on 400 queued array tasks without running them; they are cancelled at the end."""
from __future__ import annotations

import json

import pytest

from tests.support.cli import cli
from tests.support.cluster import counting_scheduler, scheduler_calls, wait_sacct_final
from tests.support.experiments import write_experiment

pytestmark = pytest.mark.slurm
VARIANTS = 200


def test_200_variants_cost_one_squeue_and_one_sacct_per_command(slurm, tmp_path):
    config = write_experiment(tmp_path, {
        "name": "wide", "stage_modules": ["tests.support.noop_stages"],
        "paths": {"results": str(tmp_path / "results"), "logs": str(tmp_path / "logs")},
        "resources": {"cpus_per_task": 1, "mem": "100M", "time": "00:05:00", "extra": {"hold": True}},
        "stages": {"work": {"kind": "noop"}, "check": {"kind": "noop", "needs": ["work"]}}})
    env, log = counting_scheduler(tmp_path)
    values = "[" + ", ".join(str(v) for v in range(VARIANTS)) + "]"

    def run(*args: str) -> str:
        return cli(*args, "-c", str(config), env=env, timeout=300).stdout

    submitted = run("submit", "all", "--executor", "slurm", "--sweep", f"stages.work.value={values}")
    arrays = sorted({line.split()[3].split("_")[0] for line in submitted.splitlines()
                     if line.startswith(("work ", "check ")) and "_" in line})
    try:
        # two job arrays (one per stage) and one sinfo to check the request; no squeue: no job was
        # recorded yet, so none can be live
        assert scheduler_calls(log) == {"sbatch": 2, "sinfo": 1} and len(arrays) == 2
        rows = json.loads(run("status", "--json"))
        assert scheduler_calls(log) == {"squeue": 1, "sacct": 1}
        variants = [r for r in rows if r["variant"]]
        assert len(variants) == 2 * VARIANTS and {r["state"] for r in variants} == {"pending"}
        assert run("reconcile").startswith("nothing to reconcile")
        assert scheduler_calls(log) == {"squeue": 1, "sacct": 1}
        again = run("submit", "all", "--executor", "slurm", "--sweep", f"stages.work.value={values}")
        assert "queued" in again and scheduler_calls(log) == {"squeue": 1}    # nothing submitted twice
        run("report")    # no stage has run: nothing to account, so not even sacct
        assert scheduler_calls(log) == {}
    finally:
        cli("reconcile", "-c", str(config), check=False)     # nothing: the jobs are held, not stuck
        import subprocess
        subprocess.run(["scancel", *arrays], check=False)
    assert set(wait_sacct_final(arrays).values()) == {"CANCELLED"}
