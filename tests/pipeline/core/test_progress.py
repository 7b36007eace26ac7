"""The progress file: throttled writes, the ETA from this attempt's own rate, the status line,
and job-array task counts."""
from __future__ import annotations

import json

import safeio
from pipeline.core import paths
from pipeline.core.progress import ProgressWriter, describe, duration, read


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_writes_at_most_every_few_seconds_and_always_the_last_step(tmp_path):
    clock, path = Clock(), tmp_path / paths.PROGRESS
    write = ProgressWriter(path, every_s=3.0, clock=clock)
    write(0, 10, "epoch")                                         # the first call writes: the ETA's origin
    assert json.loads(path.read_text())["done"] == 0
    clock.now += 1.0
    write(1, 10, "epoch", train_loss=0.9)                         # within 3 s of the last write: kept in memory
    assert json.loads(path.read_text())["done"] == 0
    clock.now += 2.0
    write(2, 10, "epoch", val_acc=0.5)                            # 3 s since: written, with every number so far
    data = json.loads(path.read_text())
    assert (data["done"], data["train_loss"], data["val_acc"], data["fraction"]) == (2, 0.9, 0.5, 0.2)
    assert data["elapsed_s"] == 3.0 and data["eta_s"] == 12.0   # 2 epochs in 3 s: 8 more take 12 s
    clock.now += 0.5
    write(10, 10, "epoch")                                        # the end is always written
    assert json.loads(path.read_text())["eta_s"] == 0.0


def test_a_resumed_run_counts_its_rate_from_where_it_resumed(tmp_path):
    clock, path = Clock(), tmp_path / paths.PROGRESS
    write = ProgressWriter(path, every_s=0, clock=clock)
    write(6, 10, "epoch")                     # resumed after epoch 6
    clock.now += 10
    write(7, 10, "epoch")
    assert json.loads(path.read_text())["eta_s"] == 30.0    # 1 epoch per 10 s, not 7 per 10 s


def test_read_counts_the_eta_down_and_describe_says_it_in_one_line(tmp_path):
    safeio.atomic_write_json(tmp_path / paths.PROGRESS, {
        "unit": "epoch", "done": 3, "of": 10, "train_loss": 0.4123, "val_acc": 0.7712, "images_per_s": 176.4,
        "eta_s": 300.0, "updated": 1000.0})
    data = read(tmp_path, now=1060.0)
    assert data["eta_s"] == 240.0
    assert describe(data) == "epoch 3/10 · loss 0.412 · val 77.1% · 176 img/s · ETA 4m"
    assert describe({"unit": "trial", "done": 2, "of": 8, "best_value": 0.81234}) == "trial 2/8 · best 0.8123"
    assert describe({"unit": "epoch", "done": 2.46, "of": 5}) == "epoch 2.5/5"
    assert read(tmp_path / "nothing") is None and describe(None) == ""


def test_array_tasks_are_counted_from_each_tasks_last_attempt(tmp_path):
    files = paths.StagePaths(tmp_path)
    for i, status in enumerate(["done", "running", "failed", "running"]):
        safeio.atomic_write_json(files.task(i).attempts, {"attempts": [{"status": "interrupted"}, {"status": status}]})
    data = read(tmp_path)
    assert data["tasks"] == {"done": 1, "running": 2, "failed": 1}
    assert describe(data) == "tasks 1 done, 2 running, 1 failed"
    single = tmp_path / "single"
    safeio.atomic_write_json(paths.StagePaths(single).task(0).attempts, {"attempts": [{"status": "running"}]})
    assert read(single) is None          # one task: the stage's own state says it all


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (42, 240, 3900)] == ["42s", "4m", "1h05m"]
