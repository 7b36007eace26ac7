"""sacct/squeue parsers on recorded output (steps, arrays, units, day-long elapsed times)."""
import pytest

from pipeline.accounting import (cpu_efficiency, parse_duration, parse_sacct, parse_size_mb, parse_squeue,
                                 parse_state, sacct_columns)

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
    assert set(jobs) == {"6", "12", "20_1", "20_[2-5]"}
    train = jobs["6"]
    assert train["state"] == "COMPLETED" and train["elapsed_s"] == 8 and train["alloc_cpus"] == 2
    assert train["totalcpu_s"] == pytest.approx(9.988)
    assert train["maxrss_mb"] == pytest.approx(713.3)            # the largest step
    assert jobs["12"]["state"] == "TIMEOUT" and jobs["12"]["elapsed_s"] == 93784
    assert jobs["12"]["maxrss_mb"] == pytest.approx(30.25 * 1024)
    assert jobs["20_1"]["state"] == "FAILED" and jobs["20_1"]["maxrss_mb"] == 100
    assert jobs["20_[2-5]"]["state"] == "PENDING" and jobs["20_[2-5]"]["maxrss_mb"] is None


def test_sacct_columns_and_cpu_efficiency():
    cols = sacct_columns(parse_sacct(RECORDED)["6"])
    assert cols == {"sacct_state": "COMPLETED", "sacct_elapsed_s": 8.0, "sacct_totalcpu_s": pytest.approx(9.988),
                    "sacct_cpu_eff": pytest.approx(9.988 / 16, abs=1e-4), "sacct_maxrss_mb": 713.3}
    assert cpu_efficiency(None, 8, 2) is None and cpu_efficiency(4, 0, 2) is None
    assert sacct_columns(None) == {}


def test_parse_squeue():
    out = "7|quickstart.evaluate|PENDING|DependencyNeverSatisfied\n8|quickstart.report|RUNNING|None\n"
    jobs = parse_squeue(out)
    assert jobs["7"] == {"name": "quickstart.evaluate", "state": "PENDING", "reason": "DependencyNeverSatisfied"}
    assert jobs["8"]["state"] == "RUNNING"


def test_partition_limits_from_sinfo():
    from pipeline.executors.slurm import partition_limits
    text = "debug*|2|23000|(null)\ngpu|64|512000|gpu:a100:4(S:0-1)\ngpu|32|256000|gpu:8\n"
    limits, default = partition_limits(text)
    assert default == "debug"
    assert limits == {"debug": {"cpus": 2, "mem_mb": 23000, "gpus": 0},
                      "gpu": {"cpus": 64, "mem_mb": 512000, "gpus": 8}}
