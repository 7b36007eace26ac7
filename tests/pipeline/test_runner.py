"""The runner's record of the job a stage runs in (pipeline/runner.py): it records a job nobody
recorded, and never makes a job current again once submit has recorded it."""
from __future__ import annotations

import time
from pathlib import Path

from pipeline import runner
from pipeline.accounting import samplers
from pipeline.core import state
from tests.support.cli import cli, sets, status_json
from tests.support.experiments import write_experiment
from tests.support.results import stage_json


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


def _sleeper(tmp_path, stop: bool, seconds: int) -> tuple[Path, list[str]]:
    """A stage given 2 CPUs that only sleeps, watched with a 1 s idle window."""
    config = write_experiment(tmp_path, f"""\
        name: idler
        resources: {{cpus_per_task: 2}}
        stages:
          nap: {{kind: command, argv: ["sleep", "{seconds}"]}}
        """, "idler.yaml")
    return config, [f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}",
                    "sampler.every_s=0.2", "sampler.idle_window_s=1", f"sampler.stop_idle={str(stop).lower()}"]


def test_a_two_cpu_stage_that_sleeps_is_flagged_idle(tmp_path, monkeypatch):
    monkeypatch.setattr(samplers, "given_cores", lambda: 2)      # what a 2-CPU job is given, on any machine
    config, overrides = _sleeper(tmp_path, stop=False, seconds=2)
    proc = _run_in_process(config, overrides)
    record = stage_json(tmp_path / "results" / "idler", "nap", "accounting.json")
    assert proc == 0 and record["status"] == "done" and record["cpu_util"] < 0.05
    assert record["idle"].startswith("0.0") and "of its 2 cores busy" in record["idle"]


def test_a_flagged_stage_is_stopped_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(samplers, "given_cores", lambda: 2)
    config, overrides = _sleeper(tmp_path, stop=True, seconds=8)
    started = time.monotonic()
    assert _run_in_process(config, overrides) == 1
    record = stage_json(tmp_path / "results" / "idler", "nap", "accounting.json")
    assert time.monotonic() - started < 6                        # stopped, not left to sleep its 8 s
    assert record["status"] == "failed" and record["error"].startswith("IdleStop: stopped idle (sampler.stop_idle): ")
    assert "cores busy" in record["idle"]


def _run_in_process(config: Path, overrides: list[str]) -> int:
    """`pipeline run all` in this process (its main thread), so the test can set the cores given."""
    from pipeline.core import config as cfg
    return runner.run_targets(cfg.load(config, overrides), ["all"])
