"""Fingerprints and rerun decisions, atomic writes, locks."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, cli, sets
from pipeline.core import config, state
from safeio import LockedError
import safeio
from pipeline.core.fingerprint import fingerprints

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def test_fingerprint_changes_with_config_and_propagates_downstream():
    base = fingerprints(config.load(QUICKSTART))
    changed = fingerprints(config.load(QUICKSTART, ["stages.train.epochs=3"]))
    assert base["download"] == changed["download"] and base["preprocess"] == changed["preprocess"]
    assert base["train"] != changed["train"]
    assert base["evaluate"] != changed["evaluate"] and base["report"] != changed["report"]
    seeded = fingerprints(config.load(QUICKSTART, ["seed=1"]))
    assert all(seeded[s] != base[s] for s in base)


def test_fingerprint_ignores_resources():
    base = fingerprints(config.load(QUICKSTART))
    moved = fingerprints(config.load(QUICKSTART, ["stages.train.resources.time=02:00:00"]))
    assert base == moved


def test_success_marker_decides_rerun(tmp_path):
    stage = tmp_path / "s"
    assert not state.is_done(stage, "abc")
    assert "never finished" in state.explain(stage, "abc")
    state.mark_success(stage, "abc", "done", "12")
    assert state.is_done(stage, "abc") and not state.is_done(stage, "xyz")
    assert "fingerprint changed (abc -> xyz)" in state.explain(stage, "xyz")
    state.clear_success(stage)
    assert not state.is_done(stage, "abc")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    safeio.atomic_write_json(target, {"acc": 1})
    with pytest.raises(RuntimeError):
        with safeio.atomic_path(target) as tmp:
            tmp.write_text('{"acc": 0, "half')
            raise RuntimeError("killed half-way")
    assert safeio.read_json(target) == {"acc": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_lock_refuses_second_holder(tmp_path):
    lock = tmp_path / ".submit.lock"
    with safeio.exclusive_lock(lock, "a submit of experiment 'x'"):
        with pytest.raises(LockedError, match=r"a submit of experiment 'x' is already in progress \(pid"):
            with safeio.exclusive_lock(lock, "a submit of experiment 'x'"):
                pass
    with safeio.exclusive_lock(lock, "again"):  # released: free again
        pass


def test_second_submit_refused_while_first_holds_lock(workspace):
    exp = config.load(QUICKSTART, workspace["overrides"])
    lock = exp.results_dir / ".submit.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); import safeio; from pathlib import Path\n"
        "with safeio.exclusive_lock(Path(%r), 'x'):\n    print('held', flush=True); time.sleep(30)") % (str(REPO), str(lock))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = cli("submit", "all", "--executor", "local", *sets(workspace["overrides"]), check=False)
        assert proc.returncode == 3
        assert "a submit of experiment 'quickstart' is already in progress" in proc.stderr
        assert not (exp.results_dir / "download").exists()
    finally:
        holder.kill()
        holder.wait()
