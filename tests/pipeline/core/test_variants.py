"""Variants and sweeps without SLURM (pipeline/variants.py, pipeline/variant_report.py): names,
grid and zip, where each variant's stages keep their results (shared or own), the local
executor, and the comparison's Pareto front. On the real cluster: tests/experiments/test_sweeps.py."""
from __future__ import annotations

import json
import re

import pytest

from pipeline.core import config
from pipeline.core.schema import ConfigError
from pipeline.core.variants import (
    combinations,
    expand,
    load_variants,
    parse_sweep_items,
    variant_name,
)
from pipeline.reporting.comparison import pareto_front
from tests.support.cli import REPO, cli, sets
from tests.support.results import read_csv

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def test_sweep_items_grid_and_zip():
    values = parse_sweep_items(["stages.train.lr=0.1,0.01", "stages.train.optimizer=sgd,adam"])
    assert values == {"stages.train.lr": [0.1, 0.01], "stages.train.optimizer": ["sgd", "adam"]}
    assert combinations(values, "grid") == [
        {"stages.train.lr": 0.1, "stages.train.optimizer": "sgd"}, {"stages.train.lr": 0.1, "stages.train.optimizer": "adam"},
        {"stages.train.lr": 0.01, "stages.train.optimizer": "sgd"}, {"stages.train.lr": 0.01, "stages.train.optimizer": "adam"}]
    assert combinations(values, "zip") == [{"stages.train.lr": 0.1, "stages.train.optimizer": "sgd"},
                                          {"stages.train.lr": 0.01, "stages.train.optimizer": "adam"}]
    with pytest.raises(ConfigError, match="zip needs lists of one length"):
        combinations({"a": [1, 2], "b": [1]}, "zip")
    with pytest.raises(ConfigError, match="expected KEY=V1,V2"):
        parse_sweep_items(["stages.train.lr"])


def test_variant_names_read_like_their_values():
    assert variant_name({"stages.train.lr": 0.01, "stages.train.model.kwargs.width": 8}) == "lr-0.01_width-8"
    # two keys ending alike keep their full names
    assert variant_name({"stages.a.lr": 1, "stages.b.lr": 2}) == "stages-a-lr-1_stages-b-lr-2"
    assert variant_name({"stages.train.augment": ["hflip", "crop_pad"]}) == "augment-hflip-crop_pad"
    assert variant_name({"stages.train.amp": True}) == "amp-true"


def test_yaml_sweep_block_and_cli(tmp_path):
    exp = config.load(QUICKSTART, ["sweep={mode: zip, values: {stages.train.lr: [0.1, 0.2], "
                                   "stages.train.epochs: [1, 2]}, limit: 1}"])
    variants, limit = expand(exp, [], "", [])
    assert [v.name for v in variants] == ["lr-0.1_epochs-1", "lr-0.2_epochs-2"] and limit == 1
    assert variants[1].overrides == ["stages.train.lr=0.2", "stages.train.epochs=2"]
    cli_variants, _ = expand(exp, ["stages.train.lr=0.3"], "try", [])        # --sweep replaces the block
    assert [v.name for v in cli_variants] == ["try_lr-0.3"]
    one, _ = expand(config.load(QUICKSTART), [], "fast", ["stages.train.epochs=1", "paths.results=/x"])
    assert [(v.name, v.changed) for v in one] == [("fast", {"stages.train.epochs": 1})]
    with pytest.raises(ConfigError, match="may only use"):
        expand(config.load(QUICKSTART), [], "a b", [])
    with pytest.raises(ConfigError, match="unknown keys"):
        expand(config.load(QUICKSTART, ["sweep={values: {}, grid: 1}"]), [], "", [])


@pytest.mark.parametrize("sweep, key, says", [
    ("{values: {stages.train.lr: [0.1, 0.2]}, limit: abc}", "sweep.limit", "expected a whole number: the most"),
    ("{values: {stages.train.lr: [0.1, 0.2]}, limit: -1}", "sweep.limit", "got -1"),
    ("{values: [1, 2]}", "sweep.values", "expected a mapping KEY: [V1, V2, ...], got [1, 2]"),
    ("{values: {stages.train.lr: 0.1}}", "sweep.values.stages.train.lr", "expected a non-empty list of values"),
])
def test_a_bad_sweep_block_is_one_error_naming_its_key(sweep, key, says):
    with pytest.raises(ConfigError) as info:
        expand(config.load(QUICKSTART, [f"sweep={sweep}"]), [], "", [])
    assert info.value.key == key and says in info.value.message and "\n" not in str(info.value)


def test_sweep_values_on_the_command_line_as_a_list_or_badly_written():
    assert parse_sweep_items(["stages.train.lr=[0.1, 0.2]"]) == {"stages.train.lr": [0.1, 0.2]}
    assert parse_sweep_items(["stages.train.augment=[[hflip], []]"]) == {"stages.train.augment": [["hflip"], []]}
    for bad, says in [("stages.train.lr=[0.1,", "not valid YAML"), ("stages.train.lr=[]", "a non-empty list"),
                      ("stages.train.lr=", "expected KEY=V1,V2")]:
        with pytest.raises(ConfigError, match=re.escape(says)):
            parse_sweep_items([bad])


def test_a_bad_swept_value_names_the_sweep_not_a_set(tmp_path):
    paths = [f"paths.results={tmp_path}"]
    variants, _ = expand(config.load(QUICKSTART, paths), ["stages.train.lr=0.1,nan"], "", paths)
    with pytest.raises(ConfigError) as info:
        load_variants(QUICKSTART, paths, variants)
    assert info.value.key == "stages.train.lr" and "expected a finite number, got 'nan'" in info.value.message
    assert "(from the sweep, variant lr-nan: stages.train.lr=\"nan\")" in str(info.value)
    assert "--set" not in str(info.value)


@pytest.mark.parametrize("args", [["--sweep", "stages.train.lr=nan,0.1"], ["--sweep", "stages.train.lr=[0.1,"],
                                  ["--set", "sweep={values: {stages.train.lr: [0.1, 0.2]}, limit: -1}"]])
def test_a_bad_sweep_stops_submit_with_one_line_before_anything(tmp_path, args):
    proc = cli("submit", "all", "-c", str(QUICKSTART), "--executor", "slurm", "--dry-run",
               "--set", f"paths.results={tmp_path / 'results'}", *args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    error, after = proc.stderr.splitlines()
    assert error.startswith("error: config error: ") and after == "nothing was submitted or run."
    assert "#SBATCH" not in proc.stdout and not (tmp_path / "results").exists()


def test_each_stage_is_shared_or_its_variants_own(tmp_path):
    paths = [f"paths.results={tmp_path}"]
    variants, _ = expand(config.load(QUICKSTART, paths), ["stages.train.lr=0.003,0.01", "stages.evaluate.tta=true"],
                         "", paths)
    exps = load_variants(QUICKSTART, paths + ["stages.train.epochs=15"], variants)
    a, b = exps                         # lr 0.003 is the file's own value (and 15 epochs): train is shared
    assert a.stage_dir("preprocess") == b.stage_dir("preprocess") == tmp_path / "quickstart" / "preprocess"
    assert a.stage_dir("train") == tmp_path / "quickstart" / "train"
    assert b.stage_dir("train") == tmp_path / "quickstart" / "variants" / "lr-0.01_tta-true" / "train"
    # evaluate changed in both (tta true), each under its own variant; the report is the experiment's
    assert a.stage_dir("evaluate").parent.name == "lr-0.003_tta-true" and a.stage_dir("report") == \
        tmp_path / "quickstart" / "report"
    # the folders travel with the resolved config the jobs get
    again = config.from_raw(b.raw)
    assert again.variant == b.variant and again.stage_dir("train") == b.stage_dir("train")


def test_two_variants_that_agree_on_a_stage_share_one_run(tmp_path):
    paths = [f"paths.results={tmp_path}"]
    variants, _ = expand(config.load(QUICKSTART, paths), ["stages.evaluate.tta=true,false"], "", paths)
    a, b = load_variants(QUICKSTART, paths + ["stages.train.epochs=1"], variants)
    assert a.stage_dir("train") == b.stage_dir("train") == tmp_path / "quickstart" / "variants" / "tta-true" / "train"
    assert a.stage_dir("evaluate") != b.stage_dir("evaluate")


def test_a_variant_that_reused_every_stage_says_so_in_the_comparison(tmp_path):
    """Resources are not in a fingerprint: a variant that changes only them reuses the plain run,
    and the comparison must not present the plain run's numbers as run with its resources."""
    from pipeline.reporting.comparison import variant_rows
    exp = tmp_path / "quickstart"
    index = {"raw": {"stages": {"train": {"kind": "train"}, "report": {"kind": "report"}}},
             "dirs": {"train": str(exp / "train"), "report": str(exp / "report")}}
    reused, own = variant_rows([
        {**index, "name": "cpus-4", "changed": {"resources.cpus_per_task": 4}},
        {**index, "name": "lr-0.1", "changed": {"stages.train.lr": 0.1},
         "dirs": {"train": str(exp / "variants" / "lr-0.1" / "train"), "report": str(exp / "report")}}])
    assert reused["changed"] == ("resources.cpus_per_task=4 (ran nothing of its own: every stage is the plain "
                                 "run's, with the plain run's resources)")
    assert own["changed"] == "stages.train.lr=0.1"


def test_pareto_front():
    points = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.85), (0.5, 0.70), (2.0, 0.90), (4.0, 0.95)]
    assert pareto_front(points) == [3, 0, 1, 4, 5]      # (3.0, 0.85) is beaten by (2.0, 0.90)
    assert pareto_front([(1.0, 0.5)]) == [0]


def test_local_sweep_writes_side_by_side_and_compares(tmp_path):
    overrides = [f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}",
                 "stages.train.epochs=2"]
    proc = cli("submit", "all", "-c", str(QUICKSTART), "--executor", "local", *sets(overrides),
               "--sweep", "stages.train.lr=0.003,0.01")
    assert proc.stdout.count("running train locally") == 2 and proc.stdout.count("running preprocess locally") == 1
    exp_dir = tmp_path / "results" / "quickstart"
    for name in ("lr-0.003", "lr-0.01"):
        assert json.loads((exp_dir / "variants" / name / "train" / "metrics.json").read_text())["val_acc"] > 0.8
        assert json.loads((exp_dir / "variants" / name / "variant.json").read_text())["changed"] == {
            "stages.train.lr": float(name[3:])}
    rows = {r["variant"]: r for r in read_csv(exp_dir / "variants" / "comparison.csv")}
    assert set(rows) == {"lr-0.003", "lr-0.01"} and all(r["status"] == "done" for r in rows.values())
    assert all(float(r["test_acc"]) > 0.8 and r["total_samples"] == str(2 * int(r["samples_per_epoch"]))
               for r in rows.values())
    status = json.loads(cli("status", "-c", str(QUICKSTART), "--json", *sets(overrides)).stdout)
    assert {(r["variant"], r["stage"]): r["state"] for r in status}[("lr-0.01", "train")] == "done"
    again = cli("submit", "all", "-c", str(QUICKSTART), "--executor", "local", *sets(overrides),
                "--sweep", "stages.train.lr=0.003,0.01")
    assert "running" not in again.stdout


def test_dry_run_of_a_sweep_shows_the_arrays_and_writes_nothing(tmp_path):
    proc = cli("submit", "all", "-c", str(QUICKSTART), "--executor", "slurm", "--dry-run",
               "--set", f"paths.results={tmp_path / 'results'}", "--sweep", "stages.train.lr=0.1,0.01")
    out = proc.stdout
    assert "----- train: one job array of 2 tasks (lr-0.1, lr-0.01)" in out and out.count("#SBATCH --array=0-1%2") == 2
    assert "#SBATCH --dependency='afterok:<job of preprocess>,aftercorr:<array of train>'" in out
    assert "#SBATCH --dependency='afterany:<every job above>'" in out
    assert not (tmp_path / "results").exists()
    explained = cli("submit", "all", "-c", str(QUICKSTART), "--executor", "slurm", "--dry-run", "--explain",
                    "--set", f"paths.results={tmp_path / 'results'}", "--sweep", "stages.train.lr=0.1,0.01").stdout
    assert re.search(r"^preprocess +lr-0\.1,lr-0\.01 +submit +upstream 'download' reruns$", explained, re.M)
    assert re.search(r"^train +lr-0\.01 +submit +upstream 'preprocess' reruns$", explained, re.M)
