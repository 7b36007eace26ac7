"""Rerun decisions from the success marker; one submit at a time per experiment."""
from __future__ import annotations

import subprocess
import sys

from pipeline.core import config, state
from tests.support.cli import REPO, cli, sets

QUICKSTART = REPO / "configs" / "quickstart.yaml"






def test_success_marker_decides_rerun(tmp_path):
    stage = tmp_path / "s"
    assert not state.is_done(stage, "abc")
    assert "never finished" in state.explain(stage, "abc")
    state.mark_success(stage, "abc", "done", "12")
    assert state.is_done(stage, "abc") and not state.is_done(stage, "xyz")
    assert "fingerprint changed (abc -> xyz)" in state.explain(stage, "xyz")
    state.clear_success(stage)
    assert not state.is_done(stage, "abc")






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
