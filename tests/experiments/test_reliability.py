"""Nothing lost, nothing silently wrong (issue 9): corrupted outputs, forced reruns, honest cost
after resumes, unreadable checkpoints and upstream files, file-system faults. Local executor on
the real quickstart DAG (digits, small CNN); the SLURM side is in tests/experiments/test_reliability_slurm.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import quickstart_runs
from tests.support.cli import REPO, cli, sets, status_json

CONFIG = "configs/quickstart.yaml"


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One finished quickstart run (this module's copy of the session's one, tests/support/quickstart_runs.py);
    each test works on its own copy of the results."""
    return quickstart_runs.private_copy(tmp_path_factory, "reliability")


@pytest.fixture
def run_copy(done, tmp_path):
    """A private copy of the finished results (data, logs and cache shared, read-only use)."""
    results = tmp_path / "results"
    shutil.copytree(done["root"] / "results", results, symlinks=True)
    overrides = [o for o in done["overrides"] if not o.startswith("paths.results")]
    overrides.append(f"paths.results={results}")
    return {"results": results / "quickstart", "overrides": overrides}


def flip_bytes(path: Path, offset: int = 2000) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_output_is_refused_shown_and_rerun(run_copy):
    best = run_copy["results"] / "train" / "best.pt"
    stat = best.stat()
    flip_bytes(best)
    states = status_json(CONFIG, run_copy["overrides"])
    assert states["train"]["state"] == "corrupt" and str(best) in states["train"]["reason"]
    assert states["preprocess"]["state"] in ("done", "cached")
    # A job of `evaluate` alone (as SLURM runs it) refuses the damaged upstream file, even when
    # size and mtime look untouched (the check before reading hashes every file).
    os.utime(best, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    from pipeline import runner
    from pipeline.core import config
    exp = config.load(REPO / CONFIG, run_copy["overrides"])
    with pytest.raises(runner.UpstreamNotDone, match=f"{best} is corrupted .*stage 'train' is now marked corrupt"):
        runner.run_stage(exp, "evaluate", fresh=True)
    assert status_json(CONFIG, run_copy["overrides"])["train"]["state"] == "corrupt"
    plan = cli("submit", "all", "-c", CONFIG, "--executor", "local", "--dry-run", "--explain",
               *sets(run_copy["overrides"])).stdout
    assert "preprocess       cached" in plan and "train            submit  will run: marked corrupt" in plan
    assert "evaluate         submit" in plan
    cli("submit", "all", "-c", CONFIG, "--executor", "local", *sets(run_copy["overrides"]))
    states = status_json(CONFIG, run_copy["overrides"])
    assert all(s["state"] in ("done", "cached") for s in states.values()), states
    metrics = json.loads((run_copy["results"] / "evaluate" / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.95


def test_force_retrains_from_scratch(run_copy):
    train = run_copy["results"] / "train"
    before = json.loads((train / "history.json").read_text())
    proc = cli("run", "train", "--force", "-c", CONFIG, *sets(run_copy["overrides"]))
    assert "starting clean (--force" in proc.stdout and "Epoch 1/15" in proc.stdout
    assert "resumed from" not in proc.stdout
    after = json.loads((train / "history.json").read_text())
    assert [h["epoch"] for h in after] == [h["epoch"] for h in before]   # every epoch trained again
    acct = json.loads((train / "accounting.json").read_text())
    assert acct["attempts"] == 1 and acct["epochs"] == len(after)


def test_resume_only_after_an_interruption_and_cost_sums_attempts(tmp_path_factory):
    """SIGTERM at epoch 3 of RESUMED_EPOCHS: the rerun resumes, and accounting covers both attempts.
    (The run, on a copy of the finished quickstart, is shared with tests/experiments/test_quickstart.py.)"""
    resumed = quickstart_runs.interrupted_and_resumed(tmp_path_factory)
    train, rerun = resumed["train"], resumed["rerun"]
    assert resumed["first"]["returncode"] == 1 and not resumed["first"]["success"]
    assert "interrupted (StageStopped)" in resumed["first"]["rest"]
    first = resumed["first"]["accounting"]
    assert first["status"] == "interrupted" and first["attempts"] == 1 and first["wall_s"] > 0
    assert rerun.returncode == 0, rerun.stdout
    epochs = quickstart_runs.RESUMED_EPOCHS
    assert "resuming: attempt 2" in rerun.stdout and f"Epoch 1/{epochs}" not in rerun.stdout
    acct = json.loads((train / "accounting.json").read_text())
    assert acct["attempts"] == 2 and [a["status"] for a in acct["attempt_log"]] == ["interrupted", "done"]
    assert acct["wall_s"] == pytest.approx(sum(a["wall_s"] for a in acct["attempt_log"]), abs=1e-3)
    assert acct["wall_s"] > acct["attempt_wall_s"] >= 0
    assert acct["epochs"] == epochs and acct["total_samples"] == epochs * acct["samples_per_epoch"]
    assert not (train / "attempts.json").exists()


def test_truncated_checkpoint_is_set_aside_and_training_starts_clean(run_copy):
    train = run_copy["results"] / "train"
    ckpt = train / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    fp = json.loads((train / "_SUCCESS").read_text())["fingerprint"]
    (train / "_SUCCESS").unlink()  # as if the job had been killed mid-run: resume is attempted
    (train / "attempts.json").write_text(json.dumps(
        {"fingerprint": fp, "attempts": [{"attempt": 1, "job_id": None, "status": "interrupted",
                                          "started": 0, "wall_s": 1.0}]}))
    proc = cli("run", "train", "-c", CONFIG, *sets(run_copy["overrides"]))
    assert "resuming: attempt 2" in proc.stdout
    assert f"checkpoint {ckpt} is unreadable" in proc.stdout and "training starts clean" in proc.stdout
    assert "Epoch 1/15" in proc.stdout
    assert len(list(train.glob("checkpoint.pt.unreadable-*"))) == 1
    assert json.loads((train / "accounting.json").read_text())["attempts"] == 2


def test_unreadable_upstream_file_names_it_and_marks_its_stage_for_rerun(run_copy):
    """A split.npz that passes its checksum but cannot be read (written broken): one line naming
    the file and the stage, that stage becomes corrupt, and `submit all` repairs everything."""
    prep = run_copy["results"] / "preprocess"
    split = prep / "split.npz"
    split.write_bytes(split.read_bytes()[:-300])
    marker = json.loads((prep / "_SUCCESS").read_text())
    from pipeline.core import state
    marker["artifacts"] = state.artifact_manifest(prep)   # the checksum agrees with the bad file
    (prep / "_SUCCESS").write_text(json.dumps(marker))
    proc = cli("run", "train", "--force", "-c", CONFIG, *sets(run_copy["overrides"]), check=False)
    assert proc.returncode == 1
    line = [x for x in proc.stderr.splitlines() if "train failed" in x]
    assert len(line) == 1 and f"upstream file {split} cannot be read (BadZipFile" in line[0] and "'preprocess'" in line[0]
    states = status_json(CONFIG, run_copy["overrides"])
    assert states["preprocess"]["state"] == "corrupt"
    cli("submit", "all", "-c", CONFIG, "--executor", "local", *sets(run_copy["overrides"]))
    states = status_json(CONFIG, run_copy["overrides"])
    assert all(s["state"] in ("done", "cached") for s in states.values()), states


def test_manifest_covers_artifacts_not_bookkeeping(tmp_path):
    from pipeline.core import state
    d = tmp_path / "s"
    (d / "models").mkdir(parents=True)
    for name in ("best.pt", "models/a.csv", "checkpoint.pt", "accounting.json", "job.json", ".x.tmp"):
        (d / name).write_text(name)
    state.mark_success(d, "fp", "done", None)
    assert set(json.loads((d / "_SUCCESS").read_text())["artifacts"]) == {"best.pt", "models/a.csv"}
    assert state.is_done(d, "fp")
    (d / "models" / "a.csv").write_text("changed")
    assert not state.is_done(d, "fp") and "models/a.csv is corrupted" in state.explain(d, "fp")
    (d / "models" / "a.csv").unlink()
    assert "a.csv is missing" in state.artifact_problems(d)[0]


def test_job_history_keeps_every_job_id(tmp_path):
    from pipeline.core import state
    state.write_job_record(tmp_path, {"job_id": "11", "executor": "slurm", "fingerprint": "a"})
    state.write_job_record(tmp_path, {"job_id": "12", "executor": "slurm", "fingerprint": "a"})
    state.write_job_record(tmp_path, {**state.job_record(tmp_path), "cached": True})
    assert state.all_job_ids(tmp_path) == ["11", "12"]
    assert state.job_record(tmp_path)["job_id"] == "12"


# ---- file-system faults: one line saying what is wrong and what to do ----

def _one_error_line(proc) -> str:
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def test_a_file_where_results_or_a_stage_folder_should_be(done, tmp_path):
    overrides = [o for o in done["overrides"] if not o.startswith("paths.results")]
    results = tmp_path / "results"
    results.mkdir()
    (results / "quickstart").write_text("not a folder")
    args = ["-c", CONFIG, *sets(overrides + [f"paths.results={results}"])]
    line = _one_error_line(cli("submit", "all", "--executor", "local", *args, check=False))
    assert f"cannot use {results / 'quickstart'}" in line and "a file is in the way" in line
    line = _one_error_line(cli("status", *args, check=False))
    assert "a file is in the way where a folder is expected" in line
    (results / "quickstart").unlink()
    (results / "quickstart").mkdir()
    (results / "quickstart" / "download").write_text("not a folder")
    line = _one_error_line(cli("run", "download", *args, check=False))
    assert f"cannot use {results / 'quickstart' / 'download'}" in line and "a file is in the way" in line


def _mount_tmpfs(path: Path, options: str) -> None:
    """A real small or read-only file system; CI (root) must be able to make one."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to mount a tmpfs: {proc.stderr.strip()}")
        pytest.skip(f"cannot mount tmpfs here: {proc.stderr.strip()}")


needs_mount = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@needs_mount
def test_read_only_results_folder(done, tmp_path):
    results = tmp_path / "ro"
    _mount_tmpfs(results, "ro,size=1m")
    try:
        overrides = [o for o in done["overrides"] if not o.startswith("paths.results")]
        args = ["-c", CONFIG, *sets(overrides + [f"paths.results={results}"])]
        dry = cli("submit", "all", "--executor", "local", "--dry-run", *args, check=False)
        assert dry.returncode == 0 and "dry-run submit" in dry.stdout, dry.stderr
        line = _one_error_line(cli("submit", "all", "--executor", "local", *args, check=False))
        assert "Read-only file system" in line and "point paths.results" in line
    finally:
        subprocess.run(["umount", str(results)], check=False)


@needs_mount
def test_full_disk(done, tmp_path):
    results = tmp_path / "full"
    _mount_tmpfs(results, "size=256k")
    try:
        (results / "quickstart" / "download").mkdir(parents=True)
        subprocess.run(["dd", "if=/dev/zero", f"of={results / 'filler'}", "bs=4k"], capture_output=True)
        overrides = [o for o in done["overrides"] if not o.startswith("paths.results")]
        args = ["-c", CONFIG, *sets(overrides + [f"paths.results={results}"])]
        line = _one_error_line(cli("run", "download", *args, check=False))
        assert "No space left on device" in line and "the disk is full" in line
    finally:
        subprocess.run(["umount", str(results)], check=False)
