"""The runner's record of the job a stage runs in (pipeline/runner.py): it records a job nobody
recorded, and never makes a job current again once submit has recorded it."""
from __future__ import annotations

from pipeline import runner
from pipeline.core import state
from tests.support.cli import cli, sets, status_json
from tests.support.experiments import write_experiment


def test_a_job_submit_recorded_never_becomes_current_again(tmp_path):
    state.write_job_record(tmp_path, {"job_id": "11", "executor": "slurm", "fingerprint": "a"})
    state.write_job_record(tmp_path, {"job_id": "12", "executor": "slurm", "fingerprint": "a"})  # a newer submit
    runner._record_job(tmp_path, "11", "a")          # job 11 starts just now, after its replacement was recorded
    assert state.job_record(tmp_path)["job_id"] == "12" and state.all_job_ids(tmp_path) == ["11", "12"]
    runner._record_job(tmp_path, "12", "a")
    assert state.job_record(tmp_path)["job_id"] == "12"


def test_a_job_nobody_recorded_is_recorded(tmp_path):
    """A stage of a rendered one-allocation sbatch file: submit never saw its job."""
    runner._record_job(tmp_path, "40", "fp")
    record = state.job_record(tmp_path)
    assert record["job_id"] == "40" and record["fingerprint"] == "fp" and record["state"] == "running"
    runner._record_job(tmp_path, "41", "fp")        # the same file submitted again: a new job
    assert state.job_record(tmp_path)["job_id"] == "41" and state.all_job_ids(tmp_path) == ["40", "41"]


def test_a_stage_run_by_hand_replaces_the_job_status_shows(tmp_path):
    """Rerun locally after a SLURM job: status shows the local run, not the old job's id and time."""
    config = write_experiment(tmp_path, """\
        name: byhand
        stages:
          one: {kind: command, argv: ["true"]}
        """, "byhand.yaml")
    overrides = [f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"]
    stage_dir = tmp_path / "results" / "byhand" / "one"
    state.write_job_record(stage_dir, {"job_id": "55", "executor": "slurm", "fingerprint": "old"})
    cli("run", "one", "-c", str(config), *sets(overrides))
    row = status_json(str(config), overrides)["one"]
    assert row["state"] == "done" and row["job_id"].startswith("local-") and row["job_id"].endswith("-one")
    assert state.all_job_ids(stage_dir)[0] == "55"


def test_a_stage_reports_its_progress_into_its_own_folder(tmp_path):
    """ctx.progress writes the stage folder's progress file (a `ticks` stage: 3 steps); the
    progress file is bookkeeping, not an artifact the done marker checksums."""
    from pipeline.core import config as config_mod
    from pipeline.core import paths
    path = write_experiment(tmp_path, {"name": "p", "stage_modules": ["tests.support.noop_stages"],
                                       "stages": {"count": {"kind": "ticks", "ticks": 3, "sleep_s": 0.0}}})
    exp = config_mod.load(path, [f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    runner.run_stage(exp, "count")
    written = __import__("json").loads((exp.stage_dir("count") / paths.PROGRESS).read_text())
    assert (written["unit"], written["done"], written["of"], written["eta_s"]) == ("tick", 3, 3, 0.0)
    assert paths.PROGRESS not in state.success(exp.stage_dir("count"))["artifacts"]
