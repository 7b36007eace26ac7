"""Resource values are checked as SLURM reads them, before anything is submitted; duplicate YAML
keys and `--set` mistakes are named; a stage sbatch refuses mid-DAG takes back what was queued."""
from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, cli, sets
from pipeline.core import config
from pipeline.executors.slurm import formats
from pipeline.executors.base import Executor, Submission, SubmitError
from pipeline.core.schema import ConfigError

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def write(tmp_path, body: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def load_error(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(path, list(overrides))
    return str(info.value)


# --- time limits -------------------------------------------------------------------------

@pytest.mark.parametrize("text, minutes", [
    ("30", 30), ("90", 90), ("1:30", 2), ("10:30", 11), ("0:30", 1), ("01:30:00", 90), ("48:00:00", 2880),
    ("00:00:01", 1), ("1-0", 1440), ("1-2", 1560), ("1-02:03", 1563), ("2-00:00:00", 2880), ("0-0:0:30", 1),
    ("3-23:59:59", 3 * 1440 + 24 * 60),
])
def test_every_slurm_time_form_gives_its_minutes(text, minutes):
    assert formats.time_minutes(text) == minutes


@pytest.mark.parametrize("text, why", [
    ("99:99", "seconds must be 0-59 in the form M:S"),
    ("00:99:99", "minutes must be 0-59 in the form H:M:S"),
    ("01:30:60", "seconds must be 0-59 in the form H:M:S"),
    ("1-24", "hours must be 0-23 in the form D-H"),
    ("1-00:60", "minutes must be 0-59 in the form D-H:M"),
    ("0", "a time limit of 0 means UNLIMITED to SLURM"),
    ("00:00:00", "a time limit of 0 means UNLIMITED"),
    ("0-0", "a time limit of 0 means UNLIMITED"),
    ("UNLIMITED", "set a real limit"),
    ("infinite", "set a real limit"),
    ("soon", "expected one of the SLURM forms M, M:S, H:M:S, D-H, D-H:M, D-H:M:S"),
    ("1:2:3:4", "expected one of the SLURM forms"),
    ("1-2-3", "expected one of the SLURM forms"),
    ("-5", "expected one of the SLURM forms"),
    ("1.5", "expected one of the SLURM forms"),
    ("30\n", "control characters"),
    (" 30", "expected one of the SLURM forms"),
    ("", "expected one of the SLURM forms"),
])
def test_bad_time_is_refused_with_the_reason(text, why):
    raw = {"name": "e", "stages": {"a": {"kind": "download", "dataset": "digits", "resources": {"time": text}}}}
    with pytest.raises(ConfigError) as info:
        config.from_raw(raw)
    assert f"key 'stages.a.resources.time': got {text!r}; {why}" in str(info.value)


def test_yaml_integers_are_minutes_and_unquoted_clock_times_are_not_base_60(tmp_path):
    # YAML 1.1 reads unquoted 10:30 as 630 (base 60); SLURM means 10 min 30 s.
    path = write(tmp_path, """\
        name: e
        resources: {time: 45}
        stages:
          a: {kind: download, dataset: digits, resources: {time: 10:30}}
          b: {kind: download, dataset: digits, resources: {time: 1:30:00}}
          c: {kind: download, dataset: digits}
        """)
    exp = config.load(path, root=tmp_path)
    assert [exp.stages[s].resources.time for s in "abc"] == ["10:30", "1:30:00", "45"]
    assert [formats.time_minutes(exp.stages[s].resources.time) for s in "abc"] == [11, 90, 45]
    assert config.load(path, ["resources.time=2:30"], root=tmp_path).resources.time == "2:30"


# --- string resources and extra sbatch options ----------------------------------------------

@pytest.mark.parametrize("resources, key, why", [
    ({"constraint": "a\nb"}, "constraint", "got 'a\\nb'; control characters"),
    ({"account": "lab\n#SBATCH --qos=high"}, "account", "control characters"),
    ({"partition": "debug\t"}, "partition", "control characters"),
    ({"qos": "normal\x00"}, "qos", "control characters"),
    ({"mem": "4G\n"}, "mem", "control characters"),
    ({"partition": "de bug"}, "partition", "SLURM names have no spaces"),
    ({"account": ""}, "account", "empty; write null"),
    ({"extra": {"comment": "x\ny"}}, "extra.comment", "control characters"),
    ({"extra": {"mail_type": "END"}}, "extra.mail_type", "unknown sbatch option 'mail_type'; did you mean mail-type"),
    ({"extra": {"nodlist": "n1"}}, "extra.nodlist", "did you mean nodelist"),
    ({"extra": {"frobnicate": "1"}}, "extra.frobnicate", "these have their own keys, not extra: time, partition"),
    ({"extra": {"time": "10"}}, "extra.time", "the pipeline sets --time itself; use resources.time"),
    ({"extra": {"partition": "gpu"}}, "extra.partition", "use resources.partition"),
    ({"extra": {"mem-per-cpu": "1G"}}, "extra.mem-per-cpu", "sbatch refuses --mem together with --mem-per-cpu"),
    ({"extra": {"gpus-per-node": "1"}}, "extra.gpus-per-node", "use resources.gpus"),
    ({"extra": {"dependency": "afterok:1"}}, "extra.dependency", "use the stage's `needs`"),
    ({"extra": {"mail-user": True}}, "extra.mail-user", "--mail-user needs a value, got true"),
    ({"extra": {"requeue": "yes"}}, "extra.requeue", "--requeue is a flag and takes no value"),
    ({"extra": {"exclusive": False}}, "extra.exclusive", "got false; leave --exclusive out"),
    ({"extra": {"begin": ""}}, "extra.begin", "--begin needs a value, got ''"),
])
def test_bad_string_resources_are_refused(resources, key, why):
    raw = {"name": "e", "resources": resources, "stages": {"a": {"kind": "download", "dataset": "digits"}}}
    with pytest.raises(ConfigError) as info:
        config.from_raw(raw)
    assert f"key 'resources.{key}': " in str(info.value) and why in str(info.value)
    assert "\n" not in str(info.value)          # one line, whatever the value held


def test_good_extra_options_reach_the_job_script(tmp_path):
    path = write(tmp_path, """\
        name: e
        stages:
          a:
            kind: download
            dataset: digits
            resources: {extra: {exclusive: true, mail-type: END, comment: two words, nodes: 1}}
        """)
    from pipeline.executors.slurm.executor import SlurmExecutor
    exp = config.load(path, [f"paths.logs={tmp_path / 'logs'}"], root=tmp_path)
    script = SlurmExecutor(dry_run=True).script(exp, "a")
    for line in ("#SBATCH --exclusive\n", "#SBATCH --mail-type=END\n", "#SBATCH --comment='two words'\n",
                 "#SBATCH --nodes=1\n", "#SBATCH --time=30\n"):
        assert line in script


def test_newline_in_extra_constraint_or_account_stops_submit_before_anything(tmp_path, workspace):
    for resources in ('{extra: {comment: "a\\nb"}}', '{constraint: "x\\ny"}', '{account: "lab\\n"}'):
        path = write(tmp_path, f"""\
            name: e
            stages:
              first: {{kind: download, dataset: digits}}
              second: {{kind: download, dataset: digits, needs: [first], resources: {resources}}}
            """)
        proc = cli("submit", "all", "-c", str(path), "--executor", "local", "--dry-run",
                   *sets(workspace["overrides"]), check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "key 'stages.second.resources." in proc.stderr and "control characters" in proc.stderr
        assert proc.stderr.splitlines()[-1] == "nothing was submitted or run." and len(proc.stderr.splitlines()) == 2
        assert "----- first" not in proc.stdout
        assert not any(workspace["results"].iterdir()) and not any(workspace["logs"].iterdir())


# --- duplicate keys and --set -----------------------------------------------------------------

def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    path = write(tmp_path, """\
        name: e
        stages:
          a:
            kind: train
            epochs: 3
            lr: 0.1
            epochs: 30
        """)
    assert "exp.yaml: key 'stages.a.epochs': appears twice (lines 5 and 7)" in load_error(path)
    path = write(tmp_path, "name: e\nstages:\n  a: {kind: download, dataset: digits}\nname: f\n")
    assert "key 'name': appears twice (lines 1 and 4)" in load_error(path)


def test_duplicate_keys_in_defaults_yaml_name_that_file(tmp_path):
    defaults = (REPO / "configs" / "defaults.yaml").read_text() + "signal_delay_s: 60\n"
    write(tmp_path, defaults, "defaults.yaml")
    line = defaults.count("\n")
    message = load_error(write(tmp_path, "name: e\nstages:\n  a: {kind: download, dataset: digits}\n"))
    assert f"{tmp_path / 'defaults.yaml'}: key 'signal_delay_s': appears twice (lines " in message
    assert f" and {line})" in message


def test_duplicate_key_inside_a_set_value(tmp_path):
    message = load_error(QUICKSTART, ["resources={mem: 1G, mem: 2G}"])
    assert "(from --set resources={mem: 1G, mem: 2G}): key 'resources.mem': appears twice" in message


@pytest.mark.parametrize("override, expected", [
    ("resources.mem=lots", "(from --set resources.mem=lots): key 'resources.mem': got 'lots'"),
    ("resources.time=99:99",
     "(from --set resources.time=99:99): key 'resources.time': got '99:99'; seconds must be 0-59"),
    ("resources.extra.nodlist=x", "(from --set resources.extra.nodlist=x): key 'resources.extra.nodlist'"),
    ("stages.train.resources.time=0", "(from --set stages.train.resources.time=0): key 'stages.train.resources.time'"),
    ("stages.train.needs=[ghost]", "(from --set stages.train.needs=[ghost]): key 'stages.train.needs[0]'"),
    ("seed.x=1", "(from --set seed.x=1): key 'seed': --set 'seed.x=1': this key holds a value"),
    ("stages.nope.epochs=1", "(from --set stages.nope.epochs=1): key 'stages.nope.epochs': --set names no stage"),
])
def test_set_errors_name_the_override_and_the_key_written(override, expected):
    message = load_error(QUICKSTART, ["seed=3", override, "stages.train.epochs=2"])
    assert expected in message
    assert "stages.download" not in message


def test_cli_set_error_is_one_line(workspace):
    proc = cli("submit", "all", "-c", "configs/quickstart.yaml", "--executor", "local", "--dry-run",
               *sets(workspace["overrides"]), "--set", "resources.time=99:99", check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: config error: configs/quickstart.yaml (from --set resources.time=99:99): key 'resources.time': "
        "got '99:99'; seconds must be 0-59 in the form M:S (SLURM forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)",
        "nothing was submitted or run."]


# --- sbatch refusing a stage mid-DAG -----------------------------------------------------------

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
    return write(tmp_path, f"""\
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
    deadline, job_state = time.time() + 60, ""
    while time.time() < deadline:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", first_id, "-o", "State"],
                             capture_output=True, text=True).stdout
        job_state = out.strip().splitlines()[0] if out.strip() else ""
        if job_state.startswith("CANCELLED"):
            break
        time.sleep(0.2)
    assert job_state.startswith("CANCELLED"), job_state
