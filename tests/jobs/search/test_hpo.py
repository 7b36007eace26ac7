"""Kinds `hpo` and `retrain` (jobs/stages/hpo.py, jobs/search/hpo.py) without SLURM: config
checks, the search CNN, the exact trial count with several workers on one journal, heartbeats
of killed workers, pruning of hopeless trials on real data (scikit-learn's digits), and a local
search -> retrain run. On the real cluster with job-array workers: tests/experiments/test_cifar100_hpo.py."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch
import yaml

from jobs.models.registry import count_params, create_model
from jobs.search import hpo
from jobs.stages.hpo import HpoParams, searchable, with_values
from jobs.training.params import TrainModelSpec
from pipeline.core import config
from pipeline.core.schema import ConfigError
from tests.support.cli import REPO, cli, sets
from tests.support.results import read_csv

LOG = logging.getLogger("test_hpo")
SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         "model.kwargs.width": {"type": "categorical", "choices": [8, 16]}}


def settings(n_trials: int, **kw) -> hpo.SearchSettings:
    base = dict(n_trials=n_trials, direction="maximize", sampler="random", pruner="none", startup_trials=0,
                warmup_epochs=0, max_epochs=3, seed=0, heartbeat_s=0.2, stale_after_s=2.0, poll_s=0.1)
    return hpo.SearchSettings(**{**base, **kw})


# ------------------------------------------------------------------------------ config checks
@pytest.mark.parametrize("space, message", [
    ({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log scale needs low > 0"),
    ({"lr": {"type": "float", "low": 1.0, "high": 0.1}}, "needs numbers low < high"),
    ({"model.kwargs.norm": {"type": "categorical", "choices": []}}, "non-empty list `choices`"),
    ({"data_stage": {"type": "categorical", "choices": ["a"]}}, "not a parameter a trial can set"),
    ({"lr": {"type": "uniform", "low": 0.1, "high": 1}}, "type: float | int | categorical"),
    ({"epochs": {"type": "int", "low": 1.5, "high": 3}}, "int needs whole numbers"),
])
def test_search_space_errors_name_the_entry(space, message):
    with pytest.raises(ConfigError, match=message):
        HpoParams(search_space=space)


def test_hpo_params_refuse_contradictions():
    with pytest.raises(ConfigError, match="empty"):
        HpoParams()
    with pytest.raises(ConfigError, match="use maximize"):
        HpoParams(search_space=SPACE, direction="minimize")
    with pytest.raises(ConfigError, match="under 3 heartbeats"):
        HpoParams(search_space=SPACE, heartbeat_s=10, stale_after_s=20)
    with pytest.raises(ConfigError, match=r"\['momentum'\] not in search_space"):
        HpoParams(search_space=SPACE, enqueue=[{"momentum": 0.5}])
    assert searchable("model.kwargs.depth") and searchable("label_smoothing") and not searchable("init_from")


def test_array_only_for_kinds_that_run_as_array_tasks(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "stages": {
        "prepare": {"kind": "prepare", "dataset": "digits"},
        "train": {"kind": "train", "needs": ["prepare"], "resources": {"array": 3}}}}))
    with pytest.raises(ConfigError, match="does not run as job-array tasks"):
        config.load(cfg)
    exp = config.load(REPO_CONFIG, ["stages.search.resources.array=3", "stages.search.resources.array_limit=2"])
    assert exp.stages["search"].resources.array == 3 and exp.stages["search"].resources.array_limit == 2


REPO_CONFIG = REPO / "configs" / "cifar100_hpo.yaml"


def test_with_values_sets_recipe_fields_and_model_arguments():
    base = HpoParams(search_space=SPACE, model=TrainModelSpec("search_cnn", kwargs={"depth": 2}), lr=0.5)
    recipe = with_values(base, {"lr": 0.01, "model.kwargs.width": 16})
    assert recipe.lr == 0.01 and recipe.model.kwargs == {"depth": 2, "width": 16}
    assert base.lr == 0.5 and base.model.kwargs == {"depth": 2}          # the base recipe is unchanged
    assert type(recipe).__name__ == "TrainStageParams"


def test_search_cnn_sizes_follow_its_arguments():
    small = create_model({"name": "search_cnn", "kwargs": {"depth": 2, "width": 8, "norm": "none"}}, 100)
    # two stages of two 3x3 convs with bias (3->8->8, 8->16->16), then 16 -> 100
    expected = (3 * 8 * 9 + 8) + (8 * 8 * 9 + 8) + (8 * 16 * 9 + 16) + (16 * 16 * 9 + 16) + (16 * 100 + 100)
    assert count_params(small)[0] == expected
    grouped = create_model({"name": "search_cnn", "kwargs": {"depth": 4, "width": 8, "norm": "group",
                                                            "dropout": 0.3}}, 100)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in grouped.modules()) == 8
    assert grouped(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(ValueError, match="norm 'instance'"):
        create_model({"name": "search_cnn", "kwargs": {"norm": "instance"}}, 10)


# ---------------------------------------------------------------- workers, counts, heartbeats
def _cheap_worker(out_dir: str, task: int, n_trials: int) -> None:
    """A worker process whose objective is a quadratic and a short sleep (no training)."""
    out = Path(out_dir)
    study = hpo.open_study(out, "t.search", "fp", settings(n_trials), task)

    def objective(trial):
        x = trial.suggest_float("x", -1, 1)
        time.sleep(0.05)
        return -x * x
    hpo.work(study, out, settings(n_trials), objective, LOG)


def test_workers_on_one_journal_stop_at_exactly_n_trials(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_cheap_worker, args=(str(tmp_path), i, 9)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    study = hpo.open_study(tmp_path, "t.search", "fp", settings(9), 0)
    assert hpo.counts(study) == {"complete": 9, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    assert (tmp_path / "study-fp.journal").exists()


@pytest.mark.parametrize("damage", [b'{"op_code": 4, "worker_id"', b"\x00\x00garbage\n"])
def test_a_damaged_journal_keeps_its_finished_trials_and_the_search_goes_on(tmp_path, caplog, damage):
    """Half a line (a worker killed mid-write) or garbage, then another worker's append: Optuna
    alone raises on every open; here the readable start is kept and the rest set aside."""
    _cheap_worker(str(tmp_path), 0, 3)
    journal = tmp_path / "study-fp.journal"
    whole = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(damage)
    later = hpo.open_study(tmp_path / "other", "t.search", "fp", settings(1), 0)     # a valid line to append
    later.tell(later.ask(), 1.0)
    with open(journal, "ab") as f:
        f.write((tmp_path / "other" / "study-fp.journal").read_bytes().splitlines(keepends=True)[-1])
    with caplog.at_level(logging.WARNING):
        study = hpo.open_study(tmp_path, "t.search", "fp", settings(5), 0, LOG)
    assert hpo.counts(study)["complete"] == 3                 # every trial finished before the damage
    assert journal.read_bytes().startswith(whole)            # what opening the study appends comes after
    aside = list(tmp_path.glob("study-fp.journal.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(damage)
    assert f"set the rest aside in {aside[0]}" in caplog.text
    _cheap_worker(str(tmp_path), 1, 5)                       # the search continues to n_trials
    assert hpo.counts(hpo.open_study(tmp_path, "t.search", "fp", settings(5), 0))["complete"] == 5
    assert len(list(tmp_path.glob("study-fp.journal.damaged-*"))) == 1


def test_a_trial_without_heartbeat_is_failed_and_retried(tmp_path):
    study = hpo.open_study(tmp_path, "t.search", "fp", settings(2), 0)
    dead = study.ask()                       # a worker asked, then died: no heartbeat file
    dead.suggest_float("x", -1, 1)
    alive = study.ask()
    alive.suggest_float("x", -1, 1)
    (tmp_path / "heartbeats").mkdir()
    (tmp_path / "heartbeats" / str(alive.number)).touch()
    old = time.time() - 60
    os.utime(tmp_path / "heartbeats" / str(alive.number), (time.time(), time.time()))
    assert hpo.reap_stale(study, tmp_path / "heartbeats", 30.0, LOG) == []     # both started just now
    os.utime(tmp_path / "heartbeats" / str(alive.number), (old, old))
    assert hpo.reap_stale(study, tmp_path / "heartbeats", 30.0, LOG) == [alive.number]
    # the dead one started "now" too: make its start look old through a stale heartbeat file
    (tmp_path / "heartbeats" / str(dead.number)).touch()
    os.utime(tmp_path / "heartbeats" / str(dead.number), (old, old))
    assert hpo.reap_stale(study, tmp_path / "heartbeats", 30.0, LOG) == [dead.number]
    n = hpo.counts(study)
    assert n["fail"] == 2 and n["running"] == 0 and n["waiting"] == 2
    # the retries carry the same parameters and run before anything new is sampled
    hpo.work(study, tmp_path, settings(2), lambda t: -t.suggest_float("x", -1, 1) ** 2, LOG)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["retry_of"] for t in done) == sorted([alive.number, dead.number])
    assert {t.params["x"] for t in done} == {alive.params["x"], dead.params["x"]}


def test_the_search_reports_trials_finished_of_n_and_the_best_value(tmp_path):
    study = hpo.open_study(tmp_path, "t.search", "fp", settings(3), 0)
    calls = []
    hpo.work(study, tmp_path, settings(3), lambda t: t.number / 10, LOG,
             progress=lambda done, of, unit, **n: calls.append((done, of, unit, n.get("best_value"))))
    assert calls == [(0, 3, "trial", None), (1, 3, "trial", 0.0), (2, 3, "trial", 0.1), (3, 3, "trial", 0.2)]


def test_failing_objective_stops_the_search_with_a_reason(tmp_path):
    study = hpo.open_study(tmp_path, "t.search", "fp", settings(2), 0)

    def broken(trial):
        trial.suggest_float("x", -1, 1)
        raise ValueError("no such layer")
    with pytest.raises(RuntimeError, match="4 trials failed"):
        hpo.work(study, tmp_path, settings(2), broken, LOG, max_failed=3)


# ------------------------------------------------------------- real training: digits, locally
DIGITS = """
name: digits_hpo
seed: 0
resources: {time: "00:10:00", cpus_per_task: 1, mem: 2G}
stages:
  download: {kind: download, dataset: digits}
  prepare: {kind: prepare, needs: [download], dataset: digits, val_fraction: 0.15, test_fraction: 0.15}
  search:
    kind: hpo
    needs: [prepare]
    data_stage: prepare
    model: {name: small_cnn, kwargs: {width: 8}}
    normalize: dataset
    epochs: 3
    batch_size: 64
    log_every: 1000
    search_space:
      lr: {type: categorical, choices: [1.0e-7, 0.01]}
      model.kwargs.width: {type: int, low: 4, high: 12, step: 4}
    # good, hopeless, good, hopeless: from the second on, the median pruner judges at every epoch
    enqueue: [{lr: 0.01, model.kwargs.width: 8}, {lr: 1.0e-7, model.kwargs.width: 8},
              {lr: 0.01, model.kwargs.width: 12}, {lr: 1.0e-7, model.kwargs.width: 4}]
    n_trials: 4
    startup_trials: 1
    prune_after_epochs: 0
    heartbeat_s: 1
    stale_after_s: 5
  retrain: {kind: retrain, needs: [search, prepare], search_stage: search}
"""


@pytest.fixture(scope="module")
def digits_search(tmp_path_factory):
    root = tmp_path_factory.mktemp("hpo")
    cfg = root / "digits_hpo.yaml"
    cfg.write_text(DIGITS)
    overrides = [f"paths.results={root / 'results'}", f"paths.logs={root / 'logs'}"]
    proc = cli("run", "all", "-c", str(cfg), *sets(overrides))
    return {"root": root, "out": root / "results" / "digits_hpo", "log": proc.stdout, "cfg": cfg,
            "overrides": overrides}


def test_hopeless_trials_are_pruned_and_the_study_ends_at_n_trials(digits_search):
    out = digits_search["out"] / "search"
    best = json.loads((out / "best.json").read_text())
    assert best["n_complete"] + best["n_pruned"] == 4 and best["n_running"] == 0 and best["n_failed"] == 0
    assert best["n_pruned"] >= 2          # both lr 1e-7 trials sit at chance after epoch 1
    assert best["best_params"]["lr"] == 0.01 and best["best_value"] > 0.9
    rows = read_csv(out / "trials.csv")
    hopeless = [r for r in rows if float(r["params_lr"]) < 1e-6]
    assert len(rows) == 4 and {r["state"] for r in hopeless} == {"PRUNED"}
    assert all(int(r["user_attrs_epochs_run"]) == 1 for r in hopeless)       # stopped after one epoch
    assert (out / "history.png").stat().st_size > 1000 and (out / "importance.png").exists()
    acct = json.loads((out / "accounting.json").read_text())
    assert acct["n_pruned"] == best["n_pruned"] and acct["epochs"] == sum(int(r["user_attrs_epochs_run"])
                                                                          for r in rows)
    text = (out / "report.md").read_text()
    assert "hyper-parameter search" in text and f"{best['n_pruned']} pruned" in text


def test_retrain_trains_the_best_parameters_on_train_and_val(digits_search):
    out = digits_search["out"]
    best = json.loads((out / "search" / "best.json").read_text())
    resolved = yaml.safe_load((out / "retrain" / "resolved_train.yaml").read_text())
    assert resolved["best_params"] == best["best_params"] and resolved["recipe"]["lr"] == best["best_params"]["lr"]
    assert resolved["recipe"]["model"]["kwargs"]["width"] == best["best_params"]["model.kwargs.width"]
    metrics = json.loads((out / "retrain" / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.9 and metrics["val_acc"] is None
    split = dict(__import__("numpy").load(out / "prepare" / "split.npz"))
    acct = json.loads((out / "retrain" / "accounting.json").read_text())
    assert acct["samples_per_epoch"] == len(split["y_train"]) + len(split["y_val"])
    ckpt = torch.load(out / "retrain" / "best.pt", weights_only=False)
    assert ckpt["test_acc"] == pytest.approx(metrics["test_acc"])


def test_a_done_search_is_not_run_again(digits_search):
    proc = cli("run", "all", "-c", str(digits_search["cfg"]), *sets(digits_search["overrides"]))
    assert "search: up to date, skipped" in proc.stdout and "retrain: up to date, skipped" in proc.stdout


@pytest.mark.parametrize("sampler, pruner", [("tpe", "hyperband"), ("random", "median"), ("tpe", "none")])
def test_every_sampler_and_pruner_reaches_n_trials(tmp_path, sampler, pruner):
    import optuna
    s = settings(8, sampler=sampler, pruner=pruner, startup_trials=2, max_epochs=4)
    study = hpo.open_study(tmp_path, "t.search", "fp", s, 0)

    def objective(trial):
        x = trial.suggest_float("x", -1, 1)
        for step in range(1, 5):       # a curve that ends at -x^2: far from 0 is hopeless
            trial.report(-x * x * step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return -x * x
    hpo.work(study, tmp_path, s, objective, LOG)
    n = hpo.counts(study)
    assert n["complete"] + n["pruned"] == 8 and n["running"] == 0 and n["complete"] >= 1
    summary = hpo.summarise(study, tmp_path, s)
    assert summary["best_value"] == max(t.value for t in study.trials if t.value is not None)
