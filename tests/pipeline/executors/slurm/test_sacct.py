"""sacct/squeue parsers on recorded output (steps, arrays, units, day-long elapsed times, requeued
attempts, multi-task steps, running jobs, stages run as steps); the report built on them is tested
in tests/pipeline/reporting/test_report.py."""

import json
from pathlib import Path

import pytest

from pipeline.accounting.record import attempt_columns, cpu_efficiency
from pipeline.accounting.record import scheduler_columns as sacct_columns
from pipeline.executors.slurm.sacct import (
    parse_duration,
    parse_req_mem_mb,
    parse_sacct,
    parse_sacct_rows,
    parse_size_mb,
    parse_squeue,
    parse_state,
    stage_usage,
)
from tests.support.recorded import (
    ALLOCATION_REQUEUED,
    ASKED_ALLOCATION,
    ASKED_ARRAY,
    ASKED_DEPENDENCY,
    ASKED_OOM,
    ASKED_REQUEUED,
    ASKED_RUNNING,
    ENDED,
    MULTI_TASK,
    REQUEUED,
    RUNNING,
)

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
    assert {k: v for k, v in cols.items() if v is not None} == {"sacct_state": "COMPLETED", "sacct_attempts": 1, "sacct_elapsed_s": 8.0,
                    "sacct_totalcpu_s": pytest.approx(9.988), "sacct_cpu_eff": pytest.approx(9.988 / 16, abs=1e-4),
                    "sacct_maxrss_task_mb": 713.3, "sacct_maxrss_step_mb": 713.3}
    assert cpu_efficiency(None, 8, 2) is None and cpu_efficiency(4, 0, 2) is None
    assert sacct_columns(None) == {}


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
















GOLDEN = Path(__file__).parent / "golden" / "asked_columns.json"
# Time stamps are left out: sacct writes the cluster's local time; the durations between them are what is checked.
_STAMPS = ("sacct_submit", "sacct_end", "submit", "start", "end")


def _asked_columns() -> dict:
    """The new columns of every recorded case: the stage's summary and each attempt's (or step's) own."""
    cases = {"requeued": (ASKED_REQUEUED, ["1229"], None), "array": (ASKED_ARRAY, ["1349"], None),
             "allocation_step": (ASKED_ALLOCATION, ["1300"], "alloc.slow"),
             "running": (ASKED_RUNNING, ["2538"], None), "dependency": (ASKED_DEPENDENCY, ["2539"], None),
             "out_of_memory": (ASKED_OOM, ["3893"], None)}
    out = {}
    for name, (text, ids, step) in cases.items():
        usage = stage_usage(parse_sacct(text), ids, step)
        cols = {k: v for k, v in sacct_columns(usage).items() if k not in _STAMPS}
        parts = [{k: v for k, v in attempt_columns(p).items() if k not in _STAMPS} for p in usage["parts"]]
        out[name] = {"stage": cols, "attempts": parts}
    return out


def test_asked_and_used_columns_match_the_golden_file():
    """Regenerate after a deliberate change: python -c 'from tests.pipeline.executors.slurm.test_sacct import
    write_golden; write_golden()'."""
    assert _asked_columns() == json.loads(GOLDEN.read_text())


def write_golden() -> None:
    GOLDEN.write_text(json.dumps(_asked_columns(), indent=1, sort_keys=True) + "\n")


def test_memory_time_efficiency_and_queue_wait_per_attempt():
    usage = stage_usage(parse_sacct(ASKED_REQUEUED), ["1229"])
    cols = sacct_columns(usage)
    assert cols["sacct_req_mem_mb"] == 3072.0
    assert cols["sacct_mem_eff"] == pytest.approx(834840 / 1024 / 3072, abs=1e-4)   # the larger step's MaxRSS
    assert cols["sacct_timelimit_s"] == 7200.0
    assert cols["sacct_time_eff"] == pytest.approx(12 / 7200, abs=1e-4)            # the attempt that finished
    waits = [p["queue_wait_s"] for p in usage["parts"]]
    assert waits == [0.0, 1.0] and cols["sacct_queue_wait_s"] == 1.0               # Start - Eligible, summed
    assert [attempt_columns(p)["state"] for p in usage["parts"]] == ["REQUEUED", "COMPLETED"]


def test_queue_wait_excludes_the_dependency_wait():
    jobs = parse_sacct(ASKED_DEPENDENCY)
    assert jobs["2538"]["queue_wait_s"] == 13.0              # queued behind other jobs' CPUs
    assert jobs["2539"]["queue_wait_s"] == 0.0               # 25 s on afterok:2538, then started at once


def test_array_queue_wait_is_summed_over_its_tasks():
    usage = stage_usage(parse_sacct(ASKED_ARRAY), ["1349"])
    assert [p["queue_wait_s"] for p in usage["parts"]] == [0.0, 0.0, 5.0]
    assert usage["queue_wait_s"] == 5.0 and usage["req_mem_mb"] == 2048.0


def test_running_and_pending_jobs_have_no_queue_wait_or_end_yet():
    jobs = parse_sacct(ASKED_RUNNING)
    assert jobs["2538"]["queue_wait_s"] == 13.0 and jobs["2538"]["end"] is None
    assert jobs["2539"]["queue_wait_s"] is None and jobs["2539"]["parts"][0]["start"] is None


def test_a_step_killed_for_memory_makes_its_job_out_of_memory():
    """A cgroup OOM kill shows on the step that ran the stage; the job line only says FAILED."""
    job = parse_sacct(ASKED_OOM)["3893"]
    assert job["state"] == "OUT_OF_MEMORY" and job["req_mem_mb"] == 200.0
    assert parse_sacct(ASKED_OOM.replace("|OUT_OF_MEMORY|", "|FAILED|"))["3893"]["state"] == "FAILED"
    # an earlier step that lost a process to the OOM killer and went on is not why a later one failed
    later = ASKED_OOM + "3893.1|python|FAILED|00:00:01|00:00.100||1|vm||1|||||||0|energy=0\n"
    assert parse_sacct(later)["3893"]["state"] == "FAILED"
    array = ASKED_OOM.replace("3893", "3893_2")
    assert parse_sacct(array)["3893_2"]["state"] == "OUT_OF_MEMORY" == parse_sacct(array)["3893"]["state"]


def test_step_of_an_allocation_holds_its_allocations_memory():
    usage = stage_usage(parse_sacct(ASKED_ALLOCATION), ["1300"], "alloc.slow")
    assert usage["attempts"] == 2 and usage["req_mem_mb"] == 500.0
    assert usage["timelimit_s"] is None and usage["queue_wait_s"] is None   # a step neither queues nor has a limit


@pytest.mark.parametrize("text, cpus, mb", [("4G", 2, 4096), ("4Gn", 2, 4096), ("2Gc", 2, 4096), ("500M", 1, 500),
                                            ("", 1, None), ("0", 1, None)])
def test_parse_req_mem(text, cpus, mb):
    assert parse_req_mem_mb(text, cpus) == mb


def test_energy_and_gpu_utilisation_only_where_recorded():
    jobs = parse_sacct(ASKED_REQUEUED)
    assert jobs["1229"]["energy_j"] is None and jobs["1229"]["gpu_util"] is None    # energy=0: none recorded
    gpu = ASKED_DEPENDENCY.replace("|0|cpu=00:00:00,energy=0,", "|5400|cpu=00:00:00,energy=5400,gres/gpuutil=87,")
    gpu = gpu.replace("2538|rec.run|COMPLETED|00:00:12|00:00.002||1|vm|debug||100M|00:02:00|2026-12-07T15:58:26|"
                      "2026-12-07T15:58:26|2026-12-07T15:58:39|2026-12-07T15:58:51||",
                      "2538|rec.run|COMPLETED|00:00:12|00:00.002||1|vm|debug||100M|00:02:00|2026-12-07T15:58:26|"
                      "2026-12-07T15:58:26|2026-12-07T15:58:39|2026-12-07T15:58:51|5400|")
    assert parse_sacct(gpu)["2538"]["gpu_util"] == 87.0 and parse_sacct(gpu)["2538"]["energy_j"] == 5400.0
