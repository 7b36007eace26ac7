"""Advice for the next submit (pipeline/accounting/advice.py) from attempts.csv-shaped rows; the
same on a real cluster run is in tests/experiments/test_accounting_slurm.py."""
from __future__ import annotations

import pytest

from pipeline.accounting.advice import advise, advise_stage, round_mem, round_time, table

ASKED = {"time": "00:30:00", "mem": "4G", "cpus_per_task": 2, "gpus": 0}


def _attempt(state, elapsed=60.0, rss=200.0, cpu_eff=0.5, cpus=2):
    return {"state": state, "elapsed_s": elapsed, "maxrss_step_mb": rss, "cpu_eff": cpu_eff, "alloc_cpus": cpus}


@pytest.mark.parametrize("mb, mem", [(1, "256M"), (300, "512M"), (513, "1G"), (1025, "2G"), (5000, "6G"),
                                     (300_000, "320G")])
def test_round_mem_to_friendly_values(mb, mem):
    assert round_mem(mb) == mem


@pytest.mark.parametrize("s, time", [(1, "00:05:00"), (301, "00:10:00"), (3601, "01:30:00"), (90000, "1-12:00:00"),
                                     (400000, "5-00:00:00")])
def test_round_time_to_friendly_values(s, time):
    assert round_time(s) == time


def test_a_stage_that_asked_4g_and_peaked_near_200mb_gets_at_most_1g():
    advice = advise_stage("train", ASKED, {}, [_attempt("COMPLETED", elapsed=600, rss=200, cpu_eff=0.25)])
    assert advice.advised == {"time": "00:15:00", "mem": "512M", "cpus_per_task": 1}   # 900 s, 300 MiB, 0.625 cores
    assert advice.saves == {"cpu_hours": round(600 / 3600, 4), "mem_gb_hours": round(3.5 * 600 / 3600, 4)}
    assert "peak RSS 200 MiB, +50%" in advice.why


def test_timeout_raises_the_time_limit_and_oom_the_memory():
    timeout = advise_stage("slow", {**ASKED, "time": "1"}, {}, [_attempt("TIMEOUT", elapsed=60)])
    assert timeout.advised["time"] == "00:05:00" and timeout.seen == "0 successful attempt(s), last TIMEOUT"
    oom = advise_stage("big", ASKED, {}, [_attempt("COMPLETED"), _attempt("OUT_OF_MEMORY", rss=4000)])
    assert oom.advised["mem"] == "8G" and "ran out of memory" in "; ".join(oom.why)


def test_no_history_no_advice_and_variants_are_left_out():
    assert advise_stage("new", ASKED, {}, []) is None
    assert advise_stage("broke", ASKED, {}, [_attempt("FAILED")]) is None
    rows = [{"stage": "a"}, {"stage": "a", "variant": "lr0.1"}]
    advice = advise({"a": ASKED}, rows, lambda r: [_attempt("COMPLETED")])
    assert [a.stage for a in advice] == ["a"]
    assert table(advice)[0]["mem"] == "4G -> 512M"


def test_a_plain_process_run_falls_back_to_its_own_record():
    """No scheduler accounting: the stage's own peak RSS and sampled CPU utilisation."""
    row = {"peak_rss_mb": 700, "cpu_util": 0.5, "cpus": 4}
    advice = advise_stage("local", {**ASKED, "cpus_per_task": 4}, row, [{"state": "done", "elapsed_s": 100}])
    assert advice.advised == {"time": "00:05:00", "mem": "2G", "cpus_per_task": 3}     # 1050 MiB; 2 x 1.25 cores


def test_apply_changes_the_stages_in_memory_only(tmp_path):
    from pipeline.accounting.advice import apply
    from pipeline.core import config
    from tests.support.experiments import write_experiment
    path = write_experiment(tmp_path, """\
        name: rs
        resources: {time: "1", mem: 4G, cpus_per_task: 2}
        stages:
          a: {kind: command, argv: ["true"]}
          b: {kind: command, argv: ["true"]}
        """, "rs.yaml")
    text = path.read_text()
    exp = config.load(path)
    timeout = advise_stage("a", ASKED | {"time": "1"}, {}, [_attempt("TIMEOUT")])
    assert apply(exp, [timeout]) == ["a: time 1 -> 00:05:00"]
    assert exp.stages["a"].resources.time == "00:05:00" and exp.stages["b"].resources.time == "1"
    assert exp.raw["stages"]["a"]["resources"] == {"time": "00:05:00"} and path.read_text() == text
