"""Asked vs used, queue wait and advice on the real local SLURM cluster (2 CPUs on node `vm`):
command stages, so the test is about the accounting, not the work."""
from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime

import pytest

from tests.support.cli import cli, job_ids_from_table, sets
from tests.support.cluster import sacct, wait_for_jobs, wait_sacct_final
from tests.support.experiments import write_experiment
from tests.support.results import read_csv

pytestmark = pytest.mark.slurm

# `hold` asks for 4G and both CPUs and holds ~200 MB for 12 s (the cluster samples memory every
# 5 s); `second` asks for both CPUs too, so it queues until `hold` ends; `after` waits on `second`
# through a dependency, which is not queue wait.
ACCOUNTED = """\
    name: acct
    resources: {cpus_per_task: 2, mem: 4G, time: "00:05:00"}
    stages:
      hold: {kind: command, argv: ["python3", "-c", "import time; x = b'x' * (200 * 2**20); time.sleep(12)"]}
      second: {kind: command, argv: ["sleep", "2"]}
      after: {kind: command, argv: ["sleep", "1"], needs: [second], resources: {cpus_per_task: 1, mem: 500M}}
    """


def test_asked_vs_used_queue_wait_and_advice(slurm, tmp_path):
    config = write_experiment(tmp_path, ACCOUNTED, "acct.yaml")
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    proc = cli("submit", "all", "-c", str(config), "--executor", "slurm", "--wait", *overrides, timeout=900)
    ids = job_ids_from_table(proc.stdout)
    assert "from the first submit (or start) to the last end over 3 attempt(s)" in proc.stdout   # the summary
    wait_sacct_final(list(ids.values()))
    cli("report", "-c", str(config), *overrides)
    rows = {r["stage"]: r for r in read_csv(tmp_path / "results" / "efficiency.csv")}
    hold = rows["hold"]
    assert float(hold["sacct_req_mem_mb"]) == 4096 and float(hold["sacct_timelimit_s"]) == 300
    # ~200 MB of data plus the runner and its interpreter, against 4G asked
    assert 0.04 <= float(hold["sacct_mem_eff"]) <= 0.12
    assert float(hold["sacct_time_eff"]) == pytest.approx(float(hold["sacct_elapsed_s"]) / 300, abs=1e-3)
    attempts = {r["stage"]: r for r in read_csv(tmp_path / "results" / "attempts.csv")}
    first, later = sorted(("hold", "second"), key=lambda s: attempts[s]["start"])
    # the later of the two waited in the queue for the CPUs the first held
    assert float(attempts[later]["queue_wait_s"]) >= float(attempts[first]["elapsed_s"]) - 2
    # `after` became eligible when `second` ended: the dependency wait is not counted
    after_start, second_end = (datetime.fromisoformat(attempts[s][k]).timestamp()
                               for s, k in (("after", "start"), ("second", "end")))
    assert float(attempts["after"]["queue_wait_s"]) <= after_start - second_end + 1
    assert float(rows["after"]["sacct_queue_wait_s"]) == float(attempts["after"]["queue_wait_s"])
    advice = cli("advise", "-c", str(config), *overrides).stdout
    hold_line = next(line for line in advice.splitlines() if line.startswith("| hold |"))
    assert "| 4G -> 512M |" in hold_line and "| 2 -> 1 |" in hold_line          # ~300 MB peak + 50%; one core


# A 1-minute limit for a stage that needs 100 s of work, which it counts in its own folder and
# resumes from (as the training stages resume from their checkpoints). SLURM enforces limits on a
# ~30 s sweep (killed at 65-71 s here, so work of ~70 s sometimes finished first); killed, the
# attempt is interrupted and the right-sized rerun only does what is left. signal_delay_s 0: no
# warning signal before the limit (with one, submitit requeues the job instead): it ends TIMEOUT.
# It runs on the local cluster's node `side`, beside the other SLURM tests (tests/conftest.py): its
# ~2 minutes are mostly waiting, and it takes none of the CPUs their jobs share.
SLOW = """\
    name: slow
    signal_delay_s: 0
    stages:
      slow:
        kind: command
        resources: {time: "1", mem: 200M, cpus_per_task: 1, partition: side}
        argv: [python3, -c, "import os, time; f = os.path.join(os.environ['STAGE_OUT_DIR'], 'seconds');
               n = int(open(f).read()) if os.path.exists(f) else 0; print('resumed at', n, flush=True)
               \nwhile n < 100:\n time.sleep(1); n += 1; open(f, 'w').write(str(n))"]
    """


@pytest.mark.beside_slurm
def test_timeout_raises_the_limit_and_right_size_completes_it(slurm, tmp_path):
    side = subprocess.run(["sinfo", "-h", "-p", "side", "-o", "%t"], capture_output=True, text=True).stdout.split()
    assert side and side[0] in ("idle", "mix", "alloc"), f"partition side is not up ({side}): scripts/slurm_cluster.sh up"
    config = write_experiment(tmp_path, SLOW, "slow.yaml")
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    first = cli("submit", "all", "-c", str(config), "--executor", "slurm", "--wait", *overrides, check=False,
                timeout=900)
    job = job_ids_from_table(first.stdout)["slow"]
    assert first.returncode == 1 and wait_sacct_final([job]) == {job: "TIMEOUT"}
    wait_for_jobs([job], timeout=120)          # out of squeue too (a timed-out job lingers as COMPLETING)
    advice = cli("advise", "-c", str(config), *overrides).stdout
    assert "| slow | 0 successful attempt(s), last TIMEOUT | 1 -> 00:05:00 |" in advice
    second = cli("submit", "all", "-c", str(config), "--executor", "slurm", "--wait", "--right-size", *overrides,
                 timeout=900)
    assert "[pipeline] right-size: slow: time 1 -> 00:05:00" in second.stdout
    rerun = job_ids_from_table(second.stdout)["slow"]
    assert rerun != job and wait_sacct_final([rerun]) == {rerun: "COMPLETED"}, second.stdout
    resumed_at = int(re.findall(r"resumed at (\d+)", (tmp_path / "logs" / "slow" / "slow" /
                                                         f"{rerun}_0_log.out").read_text())[-1])
    assert 50 <= resumed_at < 100           # the rerun did only what the killed attempt had left
    assert "time: 1\n" in config.read_text() or 'time: "1"' in config.read_text()    # the file is as written


def _enforces_memory() -> bool:
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    return bool(re.search(r"TaskPlugin\s*=.*cgroup", conf) and re.search(r"ConstrainRAMSpace\s*=\s*yes", conf))


def test_out_of_memory_raises_the_memory(slurm, tmp_path):
    """scripts/slurm_cluster.sh enforces memory as production clusters do (task/cgroup): the kernel
    kills the stage's command past its 200M; sacct marks the step OUT_OF_MEMORY and the job FAILED."""
    if not _enforces_memory():      # scripts/slurm_cluster.sh enforces it wherever cgroup v1 memory is mounted
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(
            "the cluster does not enforce memory (TaskPlugin=task/cgroup with ConstrainRAMSpace=yes): "
            "scripts/slurm_cluster.sh up says why")
    config = write_experiment(tmp_path, """\
        name: oom
        stages:
          big: {kind: command, argv: ["python3", "-c", "x = b'x' * (600 * 2**20)"],
                resources: {mem: 200M, cpus_per_task: 1, time: "00:05:00"}}
        """, "oom.yaml")
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    proc = cli("submit", "all", "-c", str(config), "--executor", "slurm", "--wait", *overrides, check=False,
               timeout=600)
    job = job_ids_from_table(proc.stdout)["big"]
    assert proc.returncode == 1 and wait_sacct_final([job]) == {job: "FAILED"}
    steps = {r["JobID"]: r["State"] for r in sacct([job], ["JobID", "State"], steps=True)}
    assert steps[f"{job}.0"] == "OUT_OF_MEMORY"                  # the step that ran the stage
    status = {r["stage"]: r for r in json.loads(cli("status", "-c", str(config), "--json", *overrides).stdout)}
    assert status["big"]["state"] == "failed" and status["big"]["reason"].startswith("sacct OUT_OF_MEMORY: it used more")
    advice = cli("advise", "-c", str(config), *overrides).stdout
    assert "| 200M -> 512M |" in advice and "ran out of memory" in advice
