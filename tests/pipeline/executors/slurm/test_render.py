"""sbatch rendering: golden file, committed files in sync, nothing reaches the shell unquoted."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.executors.slurm.render import allocation, render
from tests.support.cli import REPO

GOLDEN = Path(__file__).parent / "golden"
EXPERIMENTS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name != "defaults.yaml")


def test_golden_render():
    exp = config.load(GOLDEN / "render_case.yaml")
    text = render(exp, "tests/pipeline/executors/slurm/golden/render_case.yaml")
    assert text == (GOLDEN / "render_case.sbatch").read_text()


def test_allocation_covers_every_stage():
    alloc = allocation(config.load(GOLDEN / "render_case.yaml"))
    assert alloc["time"] == "1-00:20:00"          # stages run one after another: times add up
    assert alloc["cpus-per-task"] == 8 and alloc["mem"] == "64G" and alloc["gres"] == "gpu:2"
    assert alloc["partition"] == "gpu" and alloc["mail-type"] == "END"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_committed_sbatch_in_sync(path):
    exp = config.load(path)
    committed = REPO / "sbatch" / f"{exp.name}.sbatch"
    assert committed.exists(), f"missing {committed}: run python -m pipeline render -c configs/{path.name}"
    assert committed.read_text() == render(exp, f"configs/{path.name}"), \
        f"{committed} is out of date: run python -m pipeline render -c configs/{path.name}"


def test_setup_lines_verbatim_and_script_parses(tmp_path):
    text = render(config.load(GOLDEN / "render_case.yaml"), "tests/pipeline/executors/slurm/golden/render_case.yaml")
    assert "\necho \"it's $(hostname) at $HOME\"\n" in text       # the user's own shell line, as written
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_override_values_are_quoted(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"description=x'; touch {marker}; echo '$(touch {marker})"
    text = render(config.load(REPO / "configs" / "quickstart.yaml", [evil]), "configs/quick start.yaml", [evil])
    exec_line = next(line for line in text.splitlines() if line.startswith("exec "))
    assert shlex.split(exec_line) == ["exec", "python", "-m", "pipeline", "run", "all", "--as-steps", "-c",
                                      "configs/quick start.yaml", "--set", evil]
    # Run the line with `python` swapped for `true`: the shell must not execute anything inside.
    subprocess.run(["bash", "-c", exec_line.replace("exec python", "exec true", 1)], check=True)
    assert not marker.exists()


def test_script_creates_its_log_folder_and_logs_there(tmp_path):
    """SLURM opens --output before the script runs (a missing folder loses the log): the rendered
    file has none, creates logs/ itself and sends everything after that to logs/<exp>-<jobid>.out."""
    text = render(config.load(REPO / "configs" / "quickstart.yaml"), "configs/quickstart.yaml")
    assert "#SBATCH --output" not in text and "#SBATCH --open-mode=append" in text
    script = tmp_path / "job.sbatch"
    script.write_text(text.replace("exec python -m pipeline", "exec echo stages"))
    run_dir = tmp_path / "checkout"
    run_dir.mkdir()
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(run_dir)}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    log = run_dir / "logs" / "quickstart-4242.out"
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"log: {log}\n"                    # what SLURM's slurm-4242.out gets
    assert log.read_text() == "stages run all --as-steps -c configs/quickstart.yaml\n"
    # A requeued job appends to the same log.
    subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert log.read_text().count("stages run all") == 2
    # Outside SLURM (bash sbatch/x.sbatch on a laptop) the output stays on the terminal.
    local = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=run_dir,
                           env={"PATH": "/usr/bin:/bin", "PIPELINE_ROOT": str(run_dir)})
    assert local.stdout == "stages run all --as-steps -c configs/quickstart.yaml\n"
