"""End to end on the real local SLURM cluster (scripts/slurm_cluster.sh): submit, afterok chains,
sacct accounting, failures and reconcile, the rendered whole-DAG sbatch file."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import REPO, cli, job_ids_from_table, sets, status_json
from tests.support.cluster import queued, sacct, wait_for_jobs, wait_sacct_final
from tests.support.experiments import FAILING_CHAIN, write_experiment
from tests.support.results import efficiency

pytestmark = pytest.mark.slurm
CONFIG = "configs/quickstart.yaml"
STAGES = ["download", "preprocess", "train", "evaluate", "report"]


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-quickstart")
    overrides = [f"paths.{k}={root / k}" for k in ("results", "logs", "data", "cache")]
    proc = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides))
    ids = job_ids_from_table(proc.stdout)
    # Right after submit the last job still waits on evaluate: the chain is in the controller.
    show = subprocess.run(["scontrol", "show", "job", ids["report"]], capture_output=True, text=True).stdout
    again = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides)).stdout
    wait_for_jobs(list(ids.values()), timeout=400)
    states = wait_sacct_final(list(ids.values()))     # what `report` reads too
    return {"root": root, "overrides": overrides, "ids": ids, "stdout": proc.stdout, "scontrol": show, "again": again,
            "states": states}


def test_submit_returns_at_once_with_afterok_chain(slurm_run):
    ids = slurm_run["ids"]
    assert list(ids) == STAGES
    # the report runs on whatever finished: after evaluate however it ends
    assert re.search(rf"Dependency=afterany:{ids['evaluate']}\(", slurm_run["scontrol"]) or \
        "Dependency=(null)" in slurm_run["scontrol"]
    for stage, upstream in [("preprocess", "download"), ("train", "preprocess"), ("evaluate", "train")]:
        script = Path(slurm_run["root"], "logs", "quickstart", stage, f"{ids[stage]}_submission.sh").read_text()
        assert f"#SBATCH --dependency=afterok:{ids[upstream]}" in script
    report = Path(slurm_run["root"], "logs", "quickstart", "report", f"{ids['report']}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterany:{ids['evaluate']}" in report
    assert "#SBATCH --dependency" not in Path(slurm_run["root"], "logs", "quickstart", "download",
                                              f"{ids['download']}_submission.sh").read_text()
    assert [slurm_run["states"][ids[s]] for s in STAGES] == ["COMPLETED"] * 5
    rows = {r["JobID"]: r for r in sacct(list(ids.values()), ["JobID", "Start", "End"])}
    for stage, upstream in [("preprocess", "download"), ("train", "preprocess"), ("evaluate", "train")]:
        assert rows[ids[stage]]["Start"] >= rows[ids[upstream]]["End"]


def test_resubmit_while_queued_reuses_the_live_jobs(slurm_run):
    """A second submit while the first one's jobs are still queued submits nothing new."""
    lines = [line.split() for line in slurm_run["again"].splitlines()[1:]]
    assert all(line[1] in ("queued", "cached") for line in lines), slurm_run["again"]
    assert {line[2] for line in lines if line[1] == "queued"} <= set(slurm_run["ids"].values())
    assert any(line[1] == "queued" for line in lines)


def test_status_json_all_done(slurm_run):
    states = status_json(CONFIG, slurm_run["overrides"])
    assert [states[s]["state"] for s in STAGES] == ["done"] * 5
    assert all(states[s]["job_id"] == slurm_run["ids"][s] for s in STAGES)
    assert all(Path(states[s]["log"]).exists() for s in STAGES)


def test_efficiency_csv_has_sacct_columns(slurm_run):
    cli("report", "-c", CONFIG, *sets(slurm_run["overrides"]))
    rows = efficiency(slurm_run["root"] / "results")
    assert list(rows) == STAGES
    for stage, row in rows.items():
        assert row["sacct_state"] == "COMPLETED" and float(row["sacct_elapsed_s"]) >= 0
        assert row["job_id"] == slurm_run["ids"][stage] and row["partition"] == "debug"
        assert row["sacct_totalcpu_s"] != ""
    assert float(rows["evaluate"]["test_acc"]) >= 0.95
    assert float(rows["train"]["sacct_elapsed_s"]) >= float(rows["train"]["wall_s"]) - 1


def test_second_submit_submits_nothing(slurm_run):
    before = queued("quickstart")
    proc = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(slurm_run["overrides"]))
    assert job_ids_from_table(proc.stdout) == {}
    assert proc.stdout.count("cached") == 5
    assert queued("quickstart") == before


def test_impossible_resources_refused_before_anything_is_submitted(slurm, workspace):
    before = queued("quickstart")
    proc = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", "--set", "stages.train.resources.cpus_per_task=64",
               "--set", "stages.evaluate.resources.gpus=2", *sets(workspace["overrides"]), check=False)
    assert proc.returncode == 2 and "nothing was submitted" in proc.stderr
    assert "stages.train.resources.cpus_per_task=64: nodes of partition 'debug' have at most" in proc.stderr
    assert "stages.evaluate.resources.gpus=2: nodes of partition 'debug' have at most 0 GPUs" in proc.stderr
    assert queued("quickstart") == before
    assert not any(workspace["logs"].iterdir())


def test_failed_stage_leaves_dependents_never_run_and_reconcile_cancels(slurm, tmp_path):
    config = write_experiment(tmp_path, FAILING_CHAIN, "breaks.yaml")
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    ids = job_ids_from_table(cli("submit", "all", "-c", str(config), "--executor", "slurm", *overrides).stdout)
    wait_for_jobs(list(ids.values()), timeout=120, allow_stuck=True)
    proc = cli("status", "-c", str(config), *overrides, check=False)
    assert proc.returncode == 1
    states = status_json(str(config), [o for o in overrides if o != "--set"])
    assert states["fine"]["state"] == "done" and states["boom"]["state"] == "failed"
    assert states["after"]["state"] == "never-run" and states["last"]["state"] == "never-run"
    assert "failing on purpose" in Path(states["boom"]["log"]).read_text()
    assert re.search(r"boom\s+failed\s+" + ids["boom"], proc.stdout)
    out = cli("reconcile", "-c", str(config), *overrides).stdout
    assert f"cancelled after (job {ids['after']}): upstream stage 'boom' failed (job {ids['boom']}, log: " \
           f"{states['boom']['log']})" in out
    assert f"cancelled last (job {ids['last']})" in out
    assert wait_sacct_final([ids["after"], ids["last"]]) == {ids["after"]: "CANCELLED", ids["last"]: "CANCELLED"}
    states = status_json(str(config), [o for o in overrides if o != "--set"])   # not "failed (sacct CANCELLED)"
    assert states["after"]["state"] == "never-run" and states["last"]["state"] == "never-run"
    assert "nothing to reconcile" in cli("reconcile", "-c", str(config), *overrides).stdout


def test_every_committed_sbatch_passes_test_only(slurm):
    """sbatch parses and would schedule every committed file. The dev node has 2 CPUs and no GPU,
    so only sizes beyond it are capped on the command line (which overrides #SBATCH lines)."""
    partition = os.environ.get("SLURM_TEST_PARTITION", "debug")
    files = sorted((REPO / "sbatch").glob("*.sbatch"))
    assert {p.stem for p in files} >= {"quickstart", "emnist", "scratch"}
    for path in files:
        proc = subprocess.run(["sbatch", "--test-only", "-p", partition, *_caps(path.read_text()), str(path)],
                              cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0 and "to start at" in proc.stderr, (path, proc.stderr)


def _caps(script: str) -> list[str]:
    options = dict(re.findall(r"^#SBATCH --([a-z-]+)=?(\S*)", script, re.M))
    caps = []
    if "gres" in options:
        caps.append("--gres=none")
    if int(options.get("cpus-per-task", 1)) > os.cpu_count():
        caps.append(f"--cpus-per-task={os.cpu_count()}")
    if options.get("mem", "0M")[-1] == "G" and int(options["mem"][:-1]) > 8:
        caps.append("--mem=4G")
    return caps




def test_sacct_asks_for_an_array_once_and_chunks_long_lists():
    from pipeline.executors.slurm.executor import chunked, sacct_ids
    tasks = [f"500_{i}" for i in range(1000)]
    assert sacct_ids([*tasks, "7", "12", "", None, "local-1-train", "12"]) == ["12", "500", "7"]
    ids = [str(100000 + i) for i in range(30000)]          # 7 characters and a comma each
    chunks = chunked(ids, 100_000)
    assert [j for c in chunks for j in c] == ids             # every id once, in order
    assert all(len(",".join(c)) <= 100_000 for c in chunks) and len(chunks) == 3
    assert chunked([], 10) == [[]] and chunked(["1"], 10) == [["1"]]
