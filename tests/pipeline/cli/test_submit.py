"""submit takes back what it queued when the scheduler refuses a stage mid-DAG, and says so in
one line."""
from __future__ import annotations

import re

from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.executors.base import Executor, Submission, SubmitError
from tests.support.cluster import wait_sacct_final
from tests.support.cli import cli, sets
from tests.support.experiments import write_experiment


class RefusingExecutor(Executor):
    """Queues the first stage, then fails as submitit does when sbatch refuses a job."""
    name = "fake"

    def __init__(self):
        super().__init__()
        self.submitted, self.cancelled = [], []

    def submit(self, exp, stage, after):
        if self.submitted:
            raise RuntimeError("sbatch: error: Batch job submission failed: Invalid node name specified")
        self.submitted.append(stage)
        return Submission(stage, "101", Path("log"), "submitted")

    def cancel(self, job_ids):
        self.cancelled += job_ids


def chain_config(tmp_path, workspace, second_resources: str = "{}") -> Path:
    return write_experiment(tmp_path, f"""\
        name: chain
        resources: {{cpus_per_task: 1, mem: 200M, time: "00:05:00"}}
        stages:
          first: {{kind: command, argv: [sleep, "120"]}}
          second: {{kind: command, needs: [first], argv: ["true"], resources: {second_resources}}}
        """)


def test_sbatch_refusing_a_stage_cancels_what_this_submit_queued(tmp_path, workspace):
    from pipeline.cli.submit import submit
    exp = config.load(chain_config(tmp_path, workspace), workspace["overrides"], root=tmp_path)
    executor = RefusingExecutor()
    with pytest.raises(SubmitError) as info:
        submit(exp, executor, ["all"])
    assert executor.cancelled == ["101"]
    assert str(info.value) == ("stage 'second' could not be submitted: sbatch: error: Batch job submission "
                               "failed: Invalid node name specified; cancelled the job(s) this submit had "
                               "queued: 101")


def test_cli_prints_a_refused_submit_as_one_line(tmp_path, workspace, monkeypatch, capsys):
    import pipeline.executors
    from pipeline.cli.main import main
    monkeypatch.setattr(pipeline.executors, "make_executor", lambda *a, **k: RefusingExecutor())
    code = main(["submit", "all", "-c", str(chain_config(tmp_path, workspace)), *sets(workspace["overrides"])])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == ["error: stage 'second' could not be submitted: sbatch: error: Batch job "
                                "submission failed: Invalid node name specified; cancelled the job(s) this "
                                "submit had queued: 101"]


@pytest.mark.slurm
def test_slurm_refusing_a_stage_cancels_the_queued_one(slurm, tmp_path, workspace):
    """sbatch accepts nodelist's syntax; the controller refuses an unknown node at submit time."""
    path = chain_config(tmp_path, workspace, "{extra: {nodelist: nosuchnode}}")
    proc = cli("submit", "all", "-c", str(path), "--executor", "slurm", *sets(workspace["overrides"]), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage 'second' could not be submitted: ") and "Invalid node name" in last
    first_id = last.rsplit("queued: ", 1)[1]
    assert first_id.isdigit()
    assert wait_sacct_final([first_id]) == {first_id: "CANCELLED"}


def test_dry_run_with_a_profile_shows_its_partitions_gpu_request_and_setup(workspace):
    """`submit --dry-run --profile NAME`: the job scripts it would submit, each in the profile's
    terms; the download (`where: submit_host`) is shown running here, not as a job."""
    out = cli("submit", "all", "-c", "configs/emnist.yaml", "--executor", "slurm", "--dry-run",
              "--profile", "gpu-cluster", *sets([f"paths.results={workspace}/results"])).stdout
    scripts = dict(re.findall(r"----- (\w+)[^\n]*-----\n(.*?)(?=\n----- |\Z)", out, re.S))
    assert "runs here, on the submit host" in out and "#SBATCH" not in scripts["download"]
    for stage in ("linear_probe", "unfreeze", "full", "evaluate"):
        assert "#SBATCH --partition=gpu" in scripts[stage] and "#SBATCH --gres=gpu:a100:1" in scripts[stage]
    assert "#SBATCH --partition=cpu" in scripts["preprocess"] and "gres" not in scripts["preprocess"]
    assert all("#SBATCH --account=my-project" in s and "module load python/3.11 cuda/12.4" in s
               for name, s in scripts.items() if name != "download")
