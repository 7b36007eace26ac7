"""Config loading: typed values, overrides, and one clear error per mistake."""
from __future__ import annotations

import pytest

from pipeline.core import config
from pipeline.core.schema import ConfigError
from tests.support.cli import REPO, cli, sets
from tests.support.experiments import write_experiment

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def load_error(path, overrides=()) -> str:
    """The one ConfigError loading `path` with `overrides` gives."""
    with pytest.raises(ConfigError) as info:
        config.load(path, list(overrides))
    return str(info.value)


def error_for(tmp_path, body: str, overrides=()) -> str:
    return load_error(write_experiment(tmp_path, body), overrides)


def test_quickstart_loads_typed_and_merged_over_defaults():
    exp = config.load(QUICKSTART)
    train = exp.stages["train"]
    assert exp.name == "quickstart" and exp.seed == 0
    assert train.params.epochs == 15 and isinstance(train.params.lr, float)
    assert train.resources.cpus_per_task == 2 and train.resources.mem == "2G"   # experiment over defaults
    assert exp.signal_delay_s == 120 and exp.setup                              # from defaults.yaml
    assert train.needs == ["preprocess"]


def test_set_overrides_are_typed():
    exp = config.load(QUICKSTART, ["stages.train.epochs=3", "stages.train.lr=1e-2", "seed=7",
                                   "stages.train.resources.gpus=1", "stages.train.amp=true"])
    p = exp.stages["train"].params
    assert (p.epochs, p.lr, p.amp, exp.seed) == (3, 0.01, True, 7)
    assert exp.stages["train"].resources.gpus == 1


def test_relative_paths_become_absolute(tmp_path):
    exp = config.load(QUICKSTART, root=tmp_path)
    assert exp.paths.results == str(tmp_path / "results")


@pytest.mark.parametrize("body, overrides, expected", [
    ("name: e\nstages:\n  a: {kind: download, dataset: digits, colour: red}\n", [],
     "key 'stages.a.colour': unknown key; valid keys here:"),
    ("name: e\nstages:\n  a: {kind: train, epochs: ten}\n", [],
     "key 'stages.a.epochs': expected int, got 'ten'"),
    ("name: e\nstages:\n  a: {kind: nope}\n", [],
     "key 'stages.a.kind': unknown kind 'nope'; valid kinds: command, deploy_benchmark, download, evaluate,"),
    ("name: e\nstages:\n  a: {kind: download, dataset: digits, needs: [ghost]}\n", [],
     "key 'stages.a.needs[0]': names no stage 'ghost'; stages: a"),
    ("name: e\nstages:\n  a: {kind: download, dataset: digits, needs: [b]}\n  b: {kind: download, dataset: digits, needs: [a]}\n", [],
     "cycle: a -> b -> a"),
    ("name: e\nstages:\n  a: {kind: train, epochs: -1}\n", [],
     "key 'stages.a.epochs': must be >= 1, got -1"),
    ("name: e\nstages:\n  a: {kind: train}\n", ["stages.a.batch_size=0"],
     "(from --set stages.a.batch_size=0): key 'stages.a.batch_size': must be >= 1, got 0"),
    ("name: e\nstages:\n  a: {kind: train, optimizer: lamb}\n", [],
     "got 'lamb'; valid choices: sgd, adam, adamw"),
    ("name: e\nstages:\n  a: {kind: download, dataset: digits, resources: {time: soon}}\n", [],
     "key 'stages.a.resources.time': got 'soon'; expected one of the SLURM forms M, M:S, H:M:S, D-H"),
    ("name: e\nstages:\n  a: {kind: download, dataset: digits, resources: {gpu: 1}}\n", [],
     "key 'stages.a.resources.gpu': unknown key; valid keys here: partition, time, gpus"),
    ("name: e\nstages:\n  a: {kind: download, dataset: digits}\nextra_top: 1\n", [],
     "key 'extra_top': unknown key"),
    ("name: e\nstages:\n  'a$(touch x)': {kind: download, dataset: digits}\n", [],
     "may only use letters, digits"),
    ("name: e\nstages:\n  a: {kind: download, dataset: digits}\n", ["stages.b.epochs=3"],
     "--set names no stage 'b'; stages: a"),
])
def test_config_errors_name_file_key_and_choices(tmp_path, body, overrides, expected):
    message = error_for(tmp_path, body, overrides)
    assert expected in message
    assert str(tmp_path / "exp.yaml") in message


def test_cli_config_error_exits_nonzero_and_submits_nothing(tmp_path, workspace):
    path = write_experiment(tmp_path, "name: e\nstages:\n  a: {kind: train, epochs: -2}\n")
    proc = cli("submit", "all", "-c", str(path), "--executor", "local", *sets(workspace["overrides"]), check=False)
    assert proc.returncode == 2
    assert "stages.a.epochs" in proc.stderr and "nothing was submitted" in proc.stderr
    assert not any(workspace["results"].iterdir()) and not any(workspace["logs"].iterdir())




def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    path = write_experiment(tmp_path, """\
        name: e
        stages:
          a:
            kind: train
            epochs: 3
            lr: 0.1
            epochs: 30
        """)
    assert "exp.yaml: key 'stages.a.epochs': appears twice (lines 5 and 7)" in load_error(path)
    path = write_experiment(tmp_path, "name: e\nstages:\n  a: {kind: download, dataset: digits}\nname: f\n")
    assert "key 'name': appears twice (lines 1 and 4)" in load_error(path)


def test_duplicate_keys_in_defaults_yaml_name_that_file(tmp_path):
    defaults = (REPO / "configs" / "defaults.yaml").read_text() + "signal_delay_s: 60\n"
    write_experiment(tmp_path, defaults, "defaults.yaml")
    line = defaults.count("\n")
    message = load_error(write_experiment(tmp_path, "name: e\nstages:\n  a: {kind: download, dataset: digits}\n"))
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



def test_a_profile_merges_between_defaults_and_the_experiment(tmp_path, monkeypatch):
    """profiles/gpu-cluster.yaml: GPU stages to its GPU partition with the GPU type, CPU stages to
    its CPU partition, its account and setup lines; what the experiment sets itself wins."""
    exp = config.load(REPO / "configs" / "emnist.yaml", ["stages.evaluate.resources.partition=mine"],
                      profile="gpu-cluster")
    train, prep = exp.stages["full"].resources, exp.stages["preprocess"].resources
    assert (train.partition, train.gpu_type, train.gpu_request, train.account) == ("gpu", "a100", "gres", "my-project")
    assert (prep.partition, prep.gpus) == ("cpu", 0)
    assert exp.stages["evaluate"].resources.partition == "mine"
    assert exp.setup[0] == "module purge" and exp.raw["profile"] == "gpu-cluster"
    monkeypatch.setenv(config.PROFILE_ENV, "local")          # the environment variable, when no --profile
    assert config.load(REPO / "configs" / "quickstart.yaml").stages["train"].resources.partition == "debug"
    plain = config.load(REPO / "configs" / "emnist.yaml", profile="")
    monkeypatch.delenv(config.PROFILE_ENV)
    assert config.load(REPO / "configs" / "emnist.yaml").stages["full"].resources.partition is None
    assert plain.stages["full"].resources.partition == "debug"                    # "" falls back to the env


def test_profile_errors_are_one_line_with_the_valid_choices(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"no cluster profile 'nope' .* profiles in .*: gpu-cluster, local"):
        config.load(REPO / "configs" / "quickstart.yaml", profile="nope")
    monkeypatch.setattr(config, "PROFILES_DIR", tmp_path)
    (tmp_path / "typo.yaml").write_text("partitons: {gpu: a100}\n")
    with pytest.raises(ConfigError, match=r"typo.yaml.*partitons.*description, partitions, resources, setup"):
        config.load(REPO / "configs" / "quickstart.yaml", profile="typo")
    (tmp_path / "badres.yaml").write_text("resources: {gpu_request: gpus}\n")
    with pytest.raises(ConfigError, match=r"badres.yaml.*resources.gpu_request.*valid choices: gres, gpus-per-node"):
        config.load(REPO / "configs" / "quickstart.yaml", profile="badres")


def test_a_submit_host_stage_can_only_need_submit_host_stages():
    with pytest.raises(ConfigError, match=r"stages.preprocess.where.*needs 'download', which runs as a job"):
        config.load(REPO / "configs" / "quickstart.yaml", ["stages.preprocess.where=submit_host"])
    with pytest.raises(ConfigError, match=r"stages.train.where.*cannot ask for gpus"):
        config.load(REPO / "configs" / "quickstart.yaml", ["stages.train.where=submit_host",
                                                            "stages.preprocess.where=submit_host",
                                                            "stages.download.where=submit_host",
                                                            "stages.train.resources.gpus=1"])
