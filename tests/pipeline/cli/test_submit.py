"""submit takes back what it queued when the scheduler refuses a stage mid-DAG, and says so in
one line."""
from __future__ import annotations

import re

from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.executors.base import Executor, Submission, SubmitError
from tests.support.cluster import wait_sacct_final
from tests.support.cli import REPO, cli, sets
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


@pytest.mark.slurm
def test_a_sweep_refused_halfway_cancels_its_arrays_and_names_the_setting(slurm, tmp_path, workspace):
    """sbatch refuses the second stage's array (a node feature no node has): the first stage's
    array, already queued, is cancelled, and the one line names the setting to change."""
    path = chain_config(tmp_path, workspace, "{constraint: nosuchfeature}")
    proc = cli("submit", "all", "-c", str(path), "--executor", "slurm", "--sweep", "stages.first.argv=[[sleep, '60'], "
               "[sleep, '61']]", *sets(workspace["overrides"]), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]     # after sbatch's own line, which submitit passes through
    assert last.startswith("error: stage 'second' (a job array of 2 variants) could not be submitted: sbatch refused "
                           "it: Batch job submission failed: Invalid feature specification; change "
                           "stages.second.resources.constraint (now 'nosuchfeature') to features of"), last
    queued = last.rsplit("queued: ", 1)[1].split(", ")
    assert len(queued) == 2 and queued[0].endswith("_0") and queued[1].endswith("_1")
    assert set(wait_sacct_final([queued[0].split("_")[0]]).values()) == {"CANCELLED"}   # never started


def test_sbatch_refusals_name_the_setting_to_change():
    from pipeline.executors.slurm.executor import explain_refusal
    resources = config.load(REPO / "configs" / "quickstart.yaml", ["resources.account=nope"]).stages["train"].resources
    said = {  # sbatch's stderr as SLURM 22.05 words it (recorded on the local cluster and from its source)
        "partition": "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: "
                     "Invalid partition name specified",
        "account": "sbatch: error: Batch job submission failed: Invalid account or account/partition combination "
                   "specified",
        "qos": "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, "
               "user's size and/or time limits)",
        "gpus": "sbatch: error: Invalid generic resource (gres) specification",
        "time": "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds "
                "some limit)",
    }
    for setting, text in said.items():
        line = explain_refusal(text, resources, "stages.train.resources")
        assert f"change stages.train.resources.{setting} (now {getattr(resources, setting)!r})" in line, line
        assert "\n" not in line and line.startswith("sbatch refused it: ")
    assert "account (now 'nope')" in explain_refusal(said["account"], resources, "stages.train.resources")
    assert explain_refusal("sbatch: error: something new", resources, "k") == "sbatch refused it: something new"


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


def test_wait_polls_less_often_while_nothing_changes(monkeypatch):
    """One squeue per poll every 3 s; once the queue has stayed the same for a minute the pause
    grows x1.5 (to 60 s), and drops back when a job starts or ends."""
    from pipeline.cli import submit as submit_mod
    from pipeline.executors import LiveJob
    pending, running = LiveJob("pending", "Priority"), LiveJob("running", "RUNNING")
    queue = [{"1": pending}] * 30 + [{"1": running}] * 40 + [{}]
    polls, pauses, clock = [], [], [0.0]
    monkeypatch.setattr(submit_mod, "_live", lambda executor, exps: polls.append(1) or queue[len(polls) - 1])
    monkeypatch.setattr(submit_mod.time, "sleep", lambda s: pauses.append(s) or clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(submit_mod.time, "monotonic", lambda: clock[0])
    submit_mod._wait_until_settled([], poll_s=3.0)
    assert len(polls) == len(queue) and len(pauses) == len(queue) - 1
    assert pauses[:20] == [3.0] * 20                                     # the first minute pending
    assert pauses[20:24] == [4.5, 6.75, 10.125, 15.1875]                 # then less and less often
    assert pauses[30] == 3.0                                             # it started: back to every 3 s
    assert max(pauses) == 60.0
