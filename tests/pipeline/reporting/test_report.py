"""The report built on recorded sacct output: a row per stage even with a truncated accounting.json,
steps of one allocation joined, running jobs explained."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.executors.slurm.sacct import parse_sacct
from tests.support.recorded import ASKED_REQUEUED, ENDED, REQUEUED, RUNNING
from tests.support.results import read_csv


def _stage(results, exp, stage, accounting=None, job=None, success=True):
    d = results / exp / stage
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"stage: {stage}\nstage_index: {['one', 'two', 'three'].index(stage)}\n"
                                   f"experiment: {{name: {exp}, stages: {{{stage}: {{kind: noop}}}}}}\n")
    if accounting is not None:
        (d / "accounting.json").write_text(accounting if isinstance(accounting, str) else json.dumps(accounting))
    if job is not None:
        (d / "job.json").write_text(json.dumps(job))
    if success:
        (d / "_SUCCESS").write_text("{}")
    return d


def _fake_sacct(text):
    def query(job_ids):
        wanted = set(job_ids)
        return {j: v for j, v in parse_sacct(text).items() if j in wanted}, None
    return query


def test_report_keeps_a_row_for_a_truncated_accounting_json(tmp_path, monkeypatch, capsys):
    from pipeline.executors.slurm import executor
    from pipeline.reporting import report
    monkeypatch.setattr(executor, "query_sacct", _fake_sacct(ENDED.replace("sx.", "sxa.") + REQUEUED))
    results = tmp_path / "results"
    _stage(results, "sx", "one", {"experiment": "sx", "stage": "one", "kind": "noop", "status": "done",
                                  "job_id": "10", "job_ids": ["10"], "attempts": 2, "wall_s": 9.5})
    good = json.dumps({"experiment": "sx", "stage": "two", "kind": "noop", "status": "done", "job_id": "10"})
    _stage(results, "sx", "two", good[: len(good) // 2], job={"job_id": "10", "executor": "slurm"})
    _stage(results, "sx", "three", None, job={"job_id": "10"})       # finished, but accounting.json is gone
    csv_path, md_path = report.write_report(results, ["sx"])
    rows = {r["stage"]: r for r in read_csv(csv_path)}
    assert list(rows) == ["one", "two", "three"]
    assert rows["one"]["status"] == "done" and rows["one"]["attempts"] == "2" and rows["one"]["sacct_attempts"] == "2"
    assert rows["one"]["sacct_elapsed_s"] == "10.0"
    for stage in ("two", "three"):
        assert rows[stage]["status"] == "accounting-unreadable" and rows[stage]["kind"] == "noop"
        assert rows[stage]["job_id"] == "10" and rows[stage]["sacct_elapsed_s"] == "10.0"   # sacct still joins
    err = capsys.readouterr().err
    assert f"warning: {results / 'sx' / 'two' / 'accounting.json'}: unreadable (JSONDecodeError" in err
    assert f"warning: {results / 'sx' / 'three' / 'accounting.json'}: missing, although the stage finished" in err
    md = md_path.read_text()
    assert f"`two`: {results / 'sx' / 'two' / 'accounting.json'} is unreadable (truncated or corrupt)" in md
    assert f"`three`: {results / 'sx' / 'three' / 'accounting.json'} is missing" in md
    assert "`one` (2 attempts, sacct 2)" in md


def test_report_joins_steps_and_explains_running_jobs(tmp_path, monkeypatch):
    from pipeline.executors.slurm import executor
    from pipeline.reporting import report
    monkeypatch.setattr(executor, "query_sacct", _fake_sacct(RUNNING))
    results = tmp_path / "results"
    for stage, step in (("first", "0"), ("second", "1")):
        d = results / "sx" / stage
        d.mkdir(parents=True)
        (d / "accounting.json").write_text(json.dumps({"experiment": "sx", "stage": stage, "status": "done",
                                                       "job_id": "18", "job_ids": ["18"], "step_id": step}))
    rows = {r["stage"]: r for r in report.collect(results, "sx")[0]}
    assert rows["first"]["sacct_elapsed_s"] == 8.0 and rows["first"]["sacct_cpu_eff"] == pytest.approx(0.9744)
    assert rows["second"]["sacct_state"] == "RUNNING" and rows["second"]["sacct_elapsed_s"] == 7.0
    assert rows["second"]["sacct_cpu_eff"] is None and rows["second"]["step_id"] == "1"
    md = report.write_report(results, ["sx"])[1].read_text()
    assert "CPU time and efficiency are filled once the job ends (sacct counts only finished steps): " \
           "`second` still running or pending." in md


def test_rows_of_an_experiment_whose_results_were_deleted_are_dropped(tmp_path, monkeypatch):
    from pipeline.executors.slurm import executor
    from pipeline.reporting import report
    monkeypatch.setattr(executor, "query_sacct", _fake_sacct(""))
    results = tmp_path / "results"
    for exp in ("kept", "gone", "now"):
        _stage(results, exp, "one", {"experiment": exp, "stage": "one", "kind": "noop", "status": "done"})
    report.write_report(results)
    assert {r["experiment"] for r in read_csv(results / "efficiency.csv")} == {"kept", "gone", "now"}
    shutil.rmtree(results / "gone")
    report.write_report(results, ["now"])
    assert {r["experiment"] for r in read_csv(results / "efficiency.csv")} == {"kept", "now"}
    assert "## gone" not in (results / "report.md").read_text()


def test_attempts_timeline_totals_and_advice_from_recorded_sacct(tmp_path, monkeypatch):
    """A requeued stage (3G asked, 2 h limit): one attempts.csv row per attempt, the totals
    paragraph, the timeline figure and the advice table in report.md."""
    from pipeline.executors.slurm import executor
    from pipeline.reporting import report
    monkeypatch.setattr(executor, "query_sacct", _fake_sacct(ASKED_REQUEUED))
    results = tmp_path / "results"
    d = _stage(results, "emnist", "one", {"experiment": "emnist", "stage": "one", "status": "done", "job_id": "1229",
                                          "job_ids": ["1229"], "device": "cpu", "cpus": 2, "wall_s": 19.0},
               {"job_id": "1229", "executor": "slurm"})
    with open(d / "config.yaml", "a") as f:
        f.write("resources: {time: '02:00:00', mem: 3G, cpus_per_task: 2, gpus: 0}\n")
    md = report.write_report(results, ["emnist"])[1].read_text()
    attempts = read_csv(results / "attempts.csv")
    assert [(a["state"], a["queue_wait_s"], a["elapsed_s"]) for a in attempts] == [
        ("REQUEUED", "0.0", "7.0"), ("COMPLETED", "1.0", "12.0")]
    # 13:08:44 (first submit) to 13:09:16 (last end); 1 s queued in all
    assert "emnist: 32 s from the first submit (or start) to the last end over 2 attempt(s)" in md
    assert "queue wait 1 s" in md and (results / "emnist" / "timeline.png").stat().st_size > 1000
    assert "| one | 1 successful attempt(s) | 02:00:00 -> 00:05:00 | 3G -> 2G | 2 |" in md   # 815 MiB peak + 50%


def test_a_stage_killed_without_a_record_is_there_for_the_advice_only(tmp_path):
    from pipeline.reporting import report
    results = tmp_path / "results"
    d = _stage(results, "oom", "one", job={"job_id": "77", "executor": "local"}, success=False)
    (d / "attempts.json").write_text(json.dumps({"fingerprint": "f", "attempts": [{"status": "running"}]}))
    assert report.collect(results, "oom")[0] == []
    rows = report.collect(results, "oom", started=True)[0]
    assert [(r["stage"], r["status"], r["job_id"]) for r in rows] == [("one", "no-record", "77")]


def test_variant_folders_are_found_through_a_symlinked_results_path(tmp_path):
    """A results folder reached through a symlink (as pytest-current, or a scratch link) still lists
    the variants whose index recorded the real path."""
    from pipeline.reporting import report
    real = tmp_path / "real" / "results"
    own = real / "exp" / "variants" / "v1" / "train"
    own.mkdir(parents=True)
    (own.parent / "variant.json").write_text(json.dumps({"name": "v1", "dirs": {"train": str(own)}}))
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert report._variant_dirs(tmp_path / "link" / "results", "exp") == [own]
    assert report._variant_dirs(real, "exp") == [own]
