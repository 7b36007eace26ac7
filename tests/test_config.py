"""Config loading: typed values, overrides, and one clear error per mistake."""
from __future__ import annotations

import textwrap

import pytest

from conftest import REPO, cli, sets
from pipeline.core import config
from pipeline.executors.slurm import formats
from pipeline.core.schema import ConfigError

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def write(tmp_path, body: str):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def error_for(tmp_path, body: str, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, body), list(overrides))
    return str(info.value)


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
    path = write(tmp_path, "name: e\nstages:\n  a: {kind: train, epochs: -2}\n")
    proc = cli("submit", "all", "-c", str(path), "--executor", "local", *sets(workspace["overrides"]), check=False)
    assert proc.returncode == 2
    assert "stages.a.epochs" in proc.stderr and "nothing was submitted" in proc.stderr
    assert not any(workspace["results"].iterdir()) and not any(workspace["logs"].iterdir())


@pytest.mark.parametrize("text, minutes", [("30", 30), ("10:30", 11), ("01:30:00", 90), ("2-00:00:00", 2880),
                                           ("1-2", 1560), ("1-02:03", 1563)])
def test_time_minutes(text, minutes):
    assert formats.time_minutes(text) == minutes
