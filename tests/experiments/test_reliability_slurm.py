"""Faults on the real local SLURM cluster: jobs never left waiting forever, the one rule for
cancelled stages (done only if the stage's work completed before the cancel arrived; else
interrupted, and resumed), and a report that waits for every run of the experiment in flight."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cli import cli, job_ids_from_table, sets, status_json
from tests.support.cluster import wait_for_jobs, wait_for_line, wait_sacct_final
from tests.support.experiments import FAILING_CHAIN, write_experiment
from tests.support.results import read_csv

pytestmark = pytest.mark.slurm
QUICKSTART = "configs/quickstart.yaml"


def test_resubmit_cancels_superseded_jobs_and_wait_leaves_nothing_stuck(slurm, tmp_path):
    config = write_experiment(tmp_path, FAILING_CHAIN, "breaks.yaml")
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    first = job_ids_from_table(cli("submit", "all", "-c", str(config), "--executor", "slurm", *overrides).stdout)
    wait_for_jobs(list(first.values()), timeout=120, allow_stuck=True)
    # boom failed; `after` and `last` wait forever. A second submit resubmits them: the old ones
    # are cancelled, not forgotten, and --wait does not return while any job can never start.
    proc = cli("submit", "all", "-c", str(config), "--executor", "slurm", "--wait", *overrides, check=False)
    assert proc.returncode == 1
    assert f"after: cancelled its earlier queued job(s) {first['after']}" in proc.stdout
    assert f"last: cancelled its earlier queued job(s) {first['last']}" in proc.stdout
    second = {r["stage"]: r["job_id"] for r in status_json(str(config), overrides[1::2]).values()}
    assert second["after"] != first["after"] and "upstream stage 'boom' failed" in proc.stdout
    history = json.loads((tmp_path / "results" / "breaks" / "after" / "job.json").read_text())["history"]
    assert [h["job_id"] for h in history] == [first["after"], second["after"]]
    every_id = [*first.values(), *second.values()]
    live = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert not set(live) & set(every_id)
    cancelled = [first["after"], first["last"], second["after"], second["last"]]
    assert wait_sacct_final(cancelled) == {job: "CANCELLED" for job in cancelled}
    assert "nothing to reconcile" in cli("reconcile", "-c", str(config), *overrides).stdout


def test_cancelled_stage_is_not_done_and_its_resume_costs_both_attempts(slurm, tmp_path):
    overrides = [f"paths.{k}={tmp_path / k}" for k in ("results", "logs", "data", "cache")]
    overrides += ["stages.train.epochs=12", "stages.train.patience=0"]
    cli("run", "preprocess", "-c", QUICKSTART, *sets(overrides))
    ids = job_ids_from_table(cli("submit", "train", "-c", QUICKSTART, "--executor", "slurm", *sets(overrides)).stdout)
    job = ids["train"]
    logs = tmp_path / "logs" / "quickstart" / "train"
    log = wait_for_line(lambda: logs.glob(f"{job}_*log.out"), "Epoch 2/12")
    subprocess.run(["scancel", job], check=True)
    wait_for_jobs([job], timeout=120)
    train = tmp_path / "results" / "quickstart" / "train"
    assert not (train / "_SUCCESS").exists()
    assert "SIGTERM received" in log.read_text() and "Epoch 12/12" not in log.read_text()
    acct = json.loads((train / "accounting.json").read_text())
    assert acct["status"] == "interrupted" and "StageStopped" in acct["error"]
    assert wait_sacct_final([job]) == {job: "CANCELLED"}             # what status reads
    state = status_json(QUICKSTART, overrides)["train"]
    assert state["state"] == "interrupted" and state["job_id"] == job and "the next submit resumes it" in state["reason"]
    # The next submit resumes the interrupted run; accounting covers both jobs.
    proc = cli("submit", "train", "-c", QUICKSTART, "--executor", "slurm", "--wait", *sets(overrides))
    again = job_ids_from_table(proc.stdout)["train"]
    assert status_json(QUICKSTART, overrides)["train"]["state"] == "done"
    text = next(logs.glob(f"{again}_*log.out")).read_text()
    assert "resuming: attempt 2" in text and "Epoch 1/12" not in text
    acct = json.loads((train / "accounting.json").read_text())
    assert acct["attempts"] == 2 and acct["job_ids"] == [job, again] and acct["epochs"] == 12
    assert acct["wall_s"] > acct["attempt_wall_s"]


def test_the_report_waits_for_every_run_of_the_experiment_still_in_flight(slurm, tmp_path):
    """A plain run, and at once a variant of it: the variant's submit replaces the queued report,
    and the new report waits for the plain run's jobs too, not only its own (it used to report
    while the plain run still ran, and left it `incomplete`)."""
    config = write_experiment(tmp_path, """\
        name: inflight
        resources: {time: "00:05:00", cpus_per_task: 1, mem: 200M}
        stages:
          work: {kind: command, argv: [sh, -c, "while [ ! -e $GO ]; do sleep 0.2; done"]}
          report: {kind: report, needs: [work]}
        """, "inflight.yaml")
    go = tmp_path / "go"          # the plain run's work waits for it: still running when the variant is submitted
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}",
                      f"stages.work.env={{GO: {go}}}"])
    plain = job_ids_from_table(cli("submit", "all", "-c", str(config), "--executor", "slurm", *overrides).stdout)
    variant = cli("submit", "all", "-c", str(config), "--executor", "slurm", "--variant", "short", *overrides,
                  "--set", 'stages.work.argv=["true"]').stdout
    go.touch()
    rows = {cells[0]: cells[3] for cells in (line.split() for line in variant.splitlines()) if len(cells) == 5}
    script = (tmp_path / "logs" / "inflight" / "report" / f"{rows['report']}_submission.sh").read_text()
    waits = re.search(r"#SBATCH --dependency=(\S+)", script).group(1)
    assert waits.startswith("afterany:") and set(re.findall(r"\d+", waits)) == {plain["work"], rows["work"]}, waits
    every = [*plain.values(), rows["work"], rows["report"]]
    wait_for_jobs(every, timeout=120)
    states = wait_sacct_final(every)
    assert states[plain["report"]] == "CANCELLED" and states[rows["report"]] == "COMPLETED"
    done = {(r["variant"], r["stage"]): r["status"] for r in read_csv(tmp_path / "results" / "efficiency.csv")}
    assert done[("", "work")] == "done" and done[("short", "work")] == "done", done


def test_a_scheduler_that_does_not_answer_is_one_line_never_an_empty_queue(slurm, tmp_path):
    """The real SLURM commands pointed (SLURM_CONF) at a controller port and a slurmdbd port where
    nothing listens, as when the daemons are down: status and reconcile end within seconds with
    one line saying so (they used to take minutes, and reconcile said "nothing to reconcile"); a
    missing slurmdbd is said on stderr, and status still answers."""
    config = write_experiment(tmp_path, """\
        name: asked
        resources: {time: "00:05:00", cpus_per_task: 1, mem: 200M}
        stages:
          one: {kind: command, argv: ["true"]}
        """, "asked.yaml")
    args = ["-c", str(config), *sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])]
    ids = job_ids_from_table(cli("submit", "all", "--executor", "slurm", *args).stdout)
    wait_for_jobs(list(ids.values()), timeout=60)
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()

    def with_settings(name: str, **settings) -> str:       # the cluster's own file, these keys replaced
        kept = [line for line in conf.splitlines() if line.split("=", 1)[0].strip() not in settings]
        path = tmp_path / name
        path.write_text("\n".join(kept + [f"{k}={v}" for k, v in settings.items()]) + "\n")
        return str(path)
    no_dbd = with_settings("no_dbd.conf", AccountingStoragePort=9)
    proc = cli("status", *args, env={"SLURM_CONF": no_dbd}, check=False)
    assert proc.returncode == 0 and "one " in proc.stdout, proc.stderr
    assert proc.stderr.startswith("[pipeline] warning: no accounting from the scheduler: sacct failed") \
        and len(proc.stderr.splitlines()) == 1, proc.stderr
    # clients retry a refused connection for about MessageTimeout (10 s by default, 9 s measured here)
    no_ctld = with_settings("no_ctld.conf", SlurmctldPort=9, MessageTimeout=2)
    for command in ("status", "reconcile"):
        started = time.monotonic()
        proc = cli(command, *args, env={"SLURM_CONF": no_ctld}, check=False)
        assert proc.returncode == 5 and time.monotonic() - started < 15, (command, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: the SLURM controller does not answer (`squeue` said: ") \
            and "Unable to contact slurm controller" in proc.stderr and len(proc.stderr.splitlines()) == 1 \
            and "nothing to reconcile" not in proc.stdout, proc.stderr
    proc = cli("submit", "all", "--executor", "slurm", *args, env={"SLURM_CONF": no_ctld}, check=False)
    assert proc.returncode == 5 and "the SLURM controller does not answer" in proc.stderr, proc.stderr
    dry = cli("submit", "all", "--executor", "slurm", "--dry-run", "--force", *args, env={"SLURM_CONF": no_ctld})
    assert "not checked against the queue or the cluster" in dry.stdout and "#SBATCH" in dry.stdout
