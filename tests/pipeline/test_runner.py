"""The runner's record of the job a stage runs in (pipeline/runner.py): it records a job nobody
recorded, and never makes a job current again once submit has recorded it."""
from __future__ import annotations

from pipeline import runner
from pipeline.core import state


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
