"""Resource values are checked as SLURM reads them (time and memory forms, sbatch options, the
partitions' limits), before anything is submitted."""
from __future__ import annotations

import pytest

from pipeline.core import config
from pipeline.core.schema import ConfigError
from pipeline.executors.slurm import formats
from tests.support.cli import cli, sets
from tests.support.experiments import write_experiment

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
    path = write_experiment(tmp_path, """\
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
    path = write_experiment(tmp_path, """\
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
        path = write_experiment(tmp_path, f"""\
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











# --- sbatch refusing a stage mid-DAG -----------------------------------------------------------











def test_partition_limits_from_sinfo():
    from pipeline.executors.slurm.executor import partition_limits
    text = "debug*|2|23000|(null)\ngpu|64|512000|gpu:a100:4(S:0-1)\ngpu|32|256000|gpu:8\n"
    limits, default = partition_limits(text)
    assert default == "debug"
    assert limits == {"debug": {"cpus": 2, "mem_mb": 23000, "gpus": 0, "nodes": 1},
                      "gpu": {"cpus": 64, "mem_mb": 512000, "gpus": 8, "nodes": 2}}


@pytest.mark.parametrize("text, minutes", [("30", 30), ("10:30", 11), ("01:30:00", 90), ("2-00:00:00", 2880),
                                           ("1-2", 1560), ("1-02:03", 1563)])
def test_time_minutes(text, minutes):
    assert formats.time_minutes(text) == minutes
