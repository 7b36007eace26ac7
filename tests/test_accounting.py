"""sacct/squeue parsers on recorded output (steps, arrays, units, day-long elapsed times, requeued
attempts, multi-task steps, running jobs, stages run as steps) and the report built on them."""
import csv
import json

import pytest

from pipeline.accounting.record import cpu_efficiency, scheduler_columns as sacct_columns
from pipeline.executors.slurm.sacct import (parse_duration, parse_sacct, parse_sacct_rows, parse_size_mb, parse_squeue,
                                            parse_state, stage_usage)

# Recorded from `sacct --parsable2 -o JobID,JobName,State,Elapsed,TotalCPU,MaxRSS,AllocCPUS,NodeList,Partition`
# (the first block on this project's dev cluster, the rest shaped like a production cluster's output).
RECORDED = """JobID|JobName|State|Elapsed|TotalCPU|MaxRSS|AllocCPUS|NodeList|Partition
6|quickstart.train|COMPLETED|00:00:08|00:09.988||2|vm|debug
6.batch|batch|COMPLETED|00:00:08|00:00.320|20236K|2|vm|
6.0|python|COMPLETED|00:00:07|00:09.668|713.3M|2|vm|
12|emnist.full|TIMEOUT|1-02:03:04|3-01:00:00||8|gpu01|gpu
12.batch|batch|CANCELLED|1-02:03:05|00:01.500|1.5G|8|gpu01|
12.extern|extern|COMPLETED|1-02:03:04|00:00:00|512K|8|gpu01|
12.0|python|CANCELLED by 0|1-02:03:00|3-00:59:58.500|30.25G|8|gpu01|
20_1|sweep|FAILED|00:01:00|00:30.000||1|cpu02|cpu
20_1.batch|batch|FAILED|00:01:00|00:30.000|100M|1|cpu02|
20_[2-5]|sweep|PENDING|00:00:00|00:00:00||1|None assigned|cpu
"""


@pytest.mark.parametrize("text, seconds", [
    ("00:00:08", 8), ("1-02:03:04", 93784), ("03:04", 184), ("00:09.988", 9.988), ("3-01:00:00", 262800),
    ("1:02.5", 62.5), ("", None), ("INVALID", None),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("text, mb", [("1.5G", 1536), ("512K", 0.5), ("713.3M", 713.3), ("2T", 2 * 1024**2),
                                      ("0", 0), ("", None), ("n/a", None)])
def test_parse_size_mb(text, mb):
    assert parse_size_mb(text) == (pytest.approx(mb) if mb is not None else None)


def test_parse_state():
    assert parse_state("CANCELLED by 0") == "CANCELLED"
    assert parse_state("COMPLETED") == "COMPLETED"


def test_parse_sacct_job_level_with_steps_and_arrays():
    jobs = parse_sacct(RECORDED)
    assert set(jobs) == {"6", "12", "20_1", "20_[2-5]", "20"}
    train = jobs["6"]
    assert train["state"] == "COMPLETED" and train["elapsed_s"] == 8 and train["alloc_cpus"] == 2
    assert train["totalcpu_s"] == pytest.approx(9.988)           # the job line: its steps' sum, counted once
    assert train["maxrss_task_mb"] == pytest.approx(713.3)       # the largest step
    assert train["attempts"] == 1
    assert jobs["12"]["state"] == "TIMEOUT" and jobs["12"]["elapsed_s"] == 93784
    assert jobs["12"]["maxrss_task_mb"] == pytest.approx(30.25 * 1024)
    assert jobs["20_1"]["state"] == "FAILED" and jobs["20_1"]["maxrss_task_mb"] == 100
    assert jobs["20_[2-5]"]["state"] == "PENDING" and jobs["20_[2-5]"]["maxrss_task_mb"] is None
    # the array as a whole, under the id a stage records: a failed task is its state; still live
    array = jobs["20"]
    assert array["array_tasks"] == ["20_1", "20_[2-5]"] and array["state"] == "FAILED"
    assert not array["ended"] and array["totalcpu_s"] is None
    assert array["elapsed_s"] == jobs["20_1"]["elapsed_s"] + jobs["20_[2-5]"]["elapsed_s"]
    # a stage of an array records the array and its tasks: each task counted once
    assert stage_usage(jobs, ["20_1", "20_[2-5]", "20"])["attempts"] == 2


def test_squeue_array_tasks_stand_under_the_array_id():
    live = parse_squeue("30_0|e.hpo|RUNNING|None\n30_[1-3%2]|e.hpo|PENDING|JobArrayTaskLimit\n31|e.x|PENDING|Dependency")
    assert live["30"]["state"] == "RUNNING" and live["30_[1-3%2]"]["reason"] == "JobArrayTaskLimit"
    assert live["31"]["reason"] == "Dependency" and set(live) == {"30", "30_0", "30_[1-3%2]", "31"}


def test_sacct_columns_and_cpu_efficiency():
    cols = sacct_columns(parse_sacct(RECORDED)["6"])
    assert cols == {"sacct_state": "COMPLETED", "sacct_attempts": 1, "sacct_elapsed_s": 8.0,
                    "sacct_totalcpu_s": pytest.approx(9.988), "sacct_cpu_eff": pytest.approx(9.988 / 16, abs=1e-4),
                    "sacct_maxrss_task_mb": 713.3, "sacct_maxrss_step_mb": 713.3}
    assert cpu_efficiency(None, 8, 2) is None and cpu_efficiency(4, 0, 2) is None
    assert sacct_columns(None) == {}


# Recorded on the local cluster (slurm 22.05) with
# `sacct --duplicates --parsable2 -o JobID,JobName,State,Elapsed,TotalCPU,MaxRSS,AllocCPUS,NodeList,Partition,NTasks`.
# Job 10 was requeued (`scontrol requeue`) after its first step: each attempt is a job line and its steps.
REQUEUED = """10|sx.req|REQUEUED|00:00:06|00:06.096||1|vm|debug|
10.batch|batch|CANCELLED|00:00:06|00:00.016|12136K|1|vm||1
10.0|python3|COMPLETED|00:00:06|00:06.079|95320K|1|vm||1
10|sx.req|COMPLETED|00:00:04|00:04.063||1|vm|debug|
10.batch|batch|COMPLETED|00:00:04|00:00.011||1|vm||1
10.0|python3|COMPLETED|00:00:04|00:04.052||1|vm||1
"""
# Job 9: step 0 ran two tasks (~50 MB and ~150 MB), step 1 one task too short to be sampled.
MULTI_TASK = """9|sx.multi|COMPLETED|00:00:10|00:13.159||2|vm|debug|
9.batch|batch|COMPLETED|00:00:10|00:00.021|12476K|2|vm||1
9.0|python3|COMPLETED|00:00:07|00:10.059|166872K|2|vm||2
9.1|python3|COMPLETED|00:00:03|00:03.079||2|vm||1
"""
# Job 18 while its second step ran, then after it ended.
RUNNING = """18|sx.run|RUNNING|00:00:15|00:07.795||1|vm|debug|
18.batch|batch|RUNNING|00:00:15|00:00:00||1|vm||1
18.0|sx.first|COMPLETED|00:00:08|00:07.795|74900K|1|vm||1
18.1|sx.second|RUNNING|00:00:07|00:00:00||1|vm||1
"""
ENDED = """18|sx.run|COMPLETED|00:00:28|00:27.782||1|vm|debug|
18.batch|batch|COMPLETED|00:00:28|00:00.021|12144K|1|vm||1
18.0|sx.first|COMPLETED|00:00:08|00:07.795|74900K|1|vm||1
18.1|sx.second|COMPLETED|00:00:20|00:19.965|13400K|1|vm||1
"""
# One allocation (job `sxa`), a step per stage named `<experiment>.<stage>`; requeued while step
# `sxa.two` ran; in the second attempt the step numbers restart and `sxa.two` is step 0.
ALLOCATION_REQUEUED = """23|sxa|REQUEUED|00:00:14|00:09.085||1|vm|debug|
23.batch|batch|CANCELLED|00:00:14|00:00.019|14076K|1|vm||1
23.0|sxa.one|COMPLETED|00:00:06|00:05.063|77848K|1|vm||1
23.1|sxa.two|CANCELLED|00:00:07|00:04.002|108756K|1|vm||1
23|sxa|COMPLETED|00:00:08|00:05.551||1|vm|debug|
23.batch|batch|COMPLETED|00:00:08|00:00.012|11.50M|1|vm||1
23.0|sxa.two|COMPLETED|00:00:08|00:05.538|139300K|1|vm||1
"""


def test_requeued_job_sums_every_attempt():
    job = parse_sacct(REQUEUED)["10"]
    assert job["attempts"] == 2 and job["state"] == "COMPLETED"
    assert job["elapsed_s"] == 10.0 and job["totalcpu_s"] == pytest.approx(6.096 + 4.063)
    cols = sacct_columns(job)
    assert cols["sacct_attempts"] == 2 and cols["sacct_elapsed_s"] == 10.0
    assert cols["sacct_totalcpu_s"] == pytest.approx(10.159)
    assert cols["sacct_cpu_eff"] == pytest.approx(10.159 / 10.0, abs=1e-4)
    assert cols["sacct_maxrss_task_mb"] == pytest.approx(93.1)         # 95320K, the first attempt's step
    # Without --duplicates sacct shows the last attempt only: 4 s of the 10 s this job cost.
    last = parse_sacct(REQUEUED.split("\n", 3)[3])["10"]
    assert last["attempts"] == 1 and last["elapsed_s"] == 4.0


def test_reused_job_id_is_not_summed():
    """After a controller reset SLURM hands out old ids again: an earlier attempt that was not
    requeued belongs to another job."""
    older = ("10|old.job|COMPLETED|01:00:00|00:50:00||1|vm|debug|\n"
             "10.batch|batch|COMPLETED|01:00:00|50:00.000|1G|1|vm||1\n")
    job = parse_sacct(older + REQUEUED)["10"]
    assert job["attempts"] == 2 and job["elapsed_s"] == 10.0 and job["maxrss_task_mb"] == pytest.approx(95320 / 1024)
    same_name = older.replace("old.job", "sx.req")
    assert parse_sacct(same_name + REQUEUED)["10"]["elapsed_s"] == 10.0


def test_multi_task_step_maxrss_per_task_and_per_step():
    rows = {r["step"]: r for r in parse_sacct_rows(MULTI_TASK)}
    assert rows["0"]["maxrss_task_mb"] == pytest.approx(166872 / 1024)
    assert rows["0"]["maxrss_step_mb"] == pytest.approx(2 * 166872 / 1024)
    assert rows["1"]["maxrss_task_mb"] is None                     # ended before the first sample
    cols = sacct_columns(parse_sacct(MULTI_TASK)["9"])
    assert cols["sacct_maxrss_task_mb"] == 163.0 and cols["sacct_maxrss_step_mb"] == 325.9
    assert cols["sacct_totalcpu_s"] == pytest.approx(13.159)       # job line only: steps not counted twice
    assert cols["sacct_cpu_eff"] == pytest.approx(13.159 / 20, abs=1e-4)


def test_running_job_gets_no_cpu_time_or_efficiency():
    running = parse_sacct(RUNNING)["18"]
    cols = sacct_columns(running)
    assert cols["sacct_state"] == "RUNNING" and cols["sacct_elapsed_s"] == 15.0
    assert cols["sacct_totalcpu_s"] is None and cols["sacct_cpu_eff"] is None
    assert sacct_columns(stage_usage(parse_sacct(RUNNING), ["18"], "sx.second"))["sacct_cpu_eff"] is None
    first = sacct_columns(stage_usage(parse_sacct(RUNNING), ["18"], "sx.first"))
    assert first["sacct_state"] == "COMPLETED" and first["sacct_cpu_eff"] == pytest.approx(7.795 / 8, abs=1e-4)
    pending = sacct_columns(parse_sacct(RECORDED)["20_[2-5]"])
    assert pending["sacct_cpu_eff"] is None and pending["sacct_totalcpu_s"] is None


def test_stage_as_step_joins_its_own_step():
    jobs = parse_sacct(ENDED)
    second = sacct_columns(stage_usage(jobs, ["18"], "sx.second", "1"))
    assert second["sacct_elapsed_s"] == 20.0 and second["sacct_totalcpu_s"] == pytest.approx(19.965)
    assert second["sacct_maxrss_task_mb"] == pytest.approx(13400 / 1024, abs=0.05)
    first = sacct_columns(stage_usage(jobs, ["18"], "sx.first", "0"))
    assert first["sacct_elapsed_s"] == 8.0 and first["sacct_maxrss_task_mb"] == pytest.approx(73.1)
    # a step recorded by number only (no step of that name): that step, never the whole job
    assert stage_usage(jobs, ["18"], "sx.renamed", "1")["elapsed_s"] == 20.0
    assert stage_usage(jobs, ["18"], "sx.renamed", "7") is None
    # a job named after the stage (one job per stage, submitit) is all the stage's
    whole = stage_usage(parse_sacct(REQUEUED), ["10"], "sx.req", "0")
    assert whole["elapsed_s"] == 10.0 and whole["attempts"] == 2


def test_requeued_allocation_step_summed_by_name_over_attempts():
    jobs = parse_sacct(ALLOCATION_REQUEUED)
    two = stage_usage(jobs, ["23"], "sxa.two", "0")    # step 0 of the last attempt; step 1 of the first
    assert two["attempts"] == 2 and two["state"] == "COMPLETED"
    assert two["elapsed_s"] == 15.0 and two["totalcpu_s"] == pytest.approx(4.002 + 5.538)
    assert two["maxrss_task_mb"] == pytest.approx(139300 / 1024)
    one = stage_usage(jobs, ["23"], "sxa.one", "0")
    assert one["attempts"] == 1 and one["elapsed_s"] == 6.0 and one["totalcpu_s"] == pytest.approx(5.063)

    # slurmdbd can record the first attempt's steps after the requeue, listing them under the
    # second job line: the same step ids twice in one attempt, and both `sxa.two` steps still count
    first, batch, one, two_killed, second, batch2, two_done = ALLOCATION_REQUEUED.splitlines()
    three = "23.1|sxa.three|COMPLETED|00:00:02|00:01.000|1000K|1|vm||1"
    late = "\n".join([first, second, batch, one, batch2, two_done, two_killed, three])
    two = stage_usage(parse_sacct(late), ["23"], "sxa.two", "0")
    assert two["attempts"] == 2 and two["elapsed_s"] == 15.0


def test_stage_sums_every_job_it_ran_in():
    jobs = parse_sacct(REQUEUED + MULTI_TASK)
    both = sacct_columns(stage_usage(jobs, ["9", "10", "404"], None))   # 404: purged from sacct
    assert both["sacct_attempts"] == 3 and both["sacct_elapsed_s"] == 20.0
    assert both["sacct_totalcpu_s"] == pytest.approx(13.159 + 10.159)
    assert both["sacct_cpu_eff"] == pytest.approx((13.159 + 10.159) / (10 * 2 + 10 * 1), abs=1e-4)
    assert stage_usage(jobs, [], None) is None


def test_parse_squeue():
    out = "7|quickstart.evaluate|PENDING|DependencyNeverSatisfied\n8|quickstart.report|RUNNING|None\n"
    jobs = parse_squeue(out)
    assert jobs["7"] == {"name": "quickstart.evaluate", "state": "PENDING", "reason": "DependencyNeverSatisfied"}
    assert jobs["8"]["state"] == "RUNNING"


def test_squeue_names_the_dependencies_still_open():
    out = ("609|q.evaluate|PENDING|Dependency|afterok:608(unfulfilled),aftercorr:45_*(unfulfilled)\n"
           "611|q.after|PENDING|DependencyNeverSatisfied|afterok:610(failed)\n612|q.last|PENDING|Dependency|(null)\n")
    jobs = parse_squeue(out)
    assert jobs["609"]["waits_on"] == ["608", "45"] and jobs["611"]["waits_on"] == [] == jobs["612"]["waits_on"]


def test_stuck_only_when_every_waiting_job_waits_on_a_live_one_or_never_starts():
    from pipeline.cli.status import stuck_or_done
    from pipeline.executors import LiveJob
    never = LiveJob("pending", "DependencyNeverSatisfied", on_dependency=True, never_starts=True)
    behind_never = LiveJob("pending", "Dependency", on_dependency=True, waits_on=("1",))
    # its upstream ended a moment ago; the scheduler has not yet started it or marked it never
    undecided = LiveJob("pending", "Dependency", on_dependency=True, waits_on=("99",))
    assert stuck_or_done({}) and stuck_or_done({"1": never, "2": behind_never})
    assert not stuck_or_done({"1": never, "2": behind_never, "3": undecided})
    assert not stuck_or_done({"1": never, "4": LiveJob("running", "RUNNING")})
    assert not stuck_or_done({"2": behind_never})


def test_a_dependency_on_an_array_is_one_on_its_live_tasks(monkeypatch):
    from pipeline.cli.status import stuck_or_done
    from pipeline.executors.slurm import executor
    text = ("622_1|q.evaluate|PENDING|DependencyNeverSatisfied|aftercorr:621_*(failed)\n"
            "623|q.report|PENDING|Dependency|afterany:622_*(unfulfilled)\n")
    monkeypatch.setattr(executor, "query_squeue", lambda ids: {j: v for j, v in parse_squeue(text).items() if j in ids})
    live = executor.SlurmExecutor().live(["622_0", "622_1", "622_2", "623"])
    assert live["623"].waits_on == ("622_1",) and live["622_1"].never_starts
    assert stuck_or_done(live)     # the report waits only on the task that never starts


def test_partition_limits_from_sinfo():
    from pipeline.executors.slurm.executor import partition_limits
    text = "debug*|2|23000|(null)\ngpu|64|512000|gpu:a100:4(S:0-1)\ngpu|32|256000|gpu:8\n"
    limits, default = partition_limits(text)
    assert default == "debug"
    assert limits == {"debug": {"cpus": 2, "mem_mb": 23000, "gpus": 0, "nodes": 1},
                      "gpu": {"cpus": 64, "mem_mb": 512000, "gpus": 8, "nodes": 2}}


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
    with open(csv_path) as f:
        rows = {r["stage"]: r for r in csv.DictReader(f)}
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
