"""Stage kinds `hpo` (a hyper-parameter search, its workers one SLURM job array) and `retrain`
(the best parameters trained on train + val, scored on the test split).

`hpo` takes every parameter of kind `train` as the base recipe; `search_space` names the ones a
trial sets (a train parameter such as `lr`, or a model argument as `model.kwargs.width`). Each
trial is the train recipe (jobs/training/recipe.py) in its own folder, trials/<number>/, reporting
its val metric after every epoch so the pruner can stop it. The library is jobs/search/hpo.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.contract import ConfigError, StageContext, register
from safeio import atomic_write_json, atomic_write_text
from safeio.markdown import markdown_table

from jobs.training.params import TrainModelSpec, TrainStageParams

# TrainStageParams fields a trial may not set: they pick files and stages, not a recipe.
_NOT_SEARCHABLE = {"model", "data_stage", "init_from", "weights_stage", "sample_grid", "surgery"}


@dataclass
class HpoParams(TrainStageParams):
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "help": "name -> {type: float|int|categorical, low, high, log, step, choices}; names are train "
                "parameters (lr, weight_decay, ...) or model arguments (model.kwargs.width)"})
    n_trials: int = field(default=20, metadata={"min": 1, "help": "finished (complete or pruned) trials to reach"})
    metric: Literal["val_acc", "val_loss"] = "val_acc"
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Literal["tpe", "random"] = field(default="tpe", metadata={"help": "seeded with the experiment "
                                                                               "seed + the worker's task index"})
    pruner: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = field(default=5, metadata={
        "min": 0, "help": "trials TPE draws at random, and the median pruner waits for, before they judge"})
    prune_after_epochs: int = field(default=1, metadata={
        "min": 0, "help": "median pruner: a trial is never pruned in its first N epochs"})
    heartbeat_s: float = field(default=10.0, metadata={"min": 0.1, "help": "a running trial's heartbeat period"})
    stale_after_s: float = field(default=120.0, metadata={
        "min": 1.0, "help": "a RUNNING trial without a heartbeat for this long is failed and retried"})
    enqueue: list[dict[str, Any]] = field(default_factory=list, metadata={
        "help": "trials to run first, as {name: value} over the search space (e.g. a known recipe)"})

    def __post_init__(self):
        if problem := self.problem():
            raise ConfigError(*problem)
        if not self.search_space:
            raise ConfigError("search_space", "empty; name at least one parameter, e.g. "
                              "lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}")
        from jobs.search.hpo import check_space
        problems = check_space(self.search_space, searchable)
        if problems:
            raise ConfigError(problems[0].split(":")[0], problems[0].split(": ", 1)[1])
        if (self.metric == "val_acc") != (self.direction == "maximize"):
            raise ConfigError("direction", f"{self.direction} of {self.metric}: the search would look for the "
                              f"worst trials; use {'maximize' if self.metric == 'val_acc' else 'minimize'}")
        if self.stale_after_s < 3 * self.heartbeat_s:
            raise ConfigError("stale_after_s", f"{self.stale_after_s} s is under 3 heartbeats ({self.heartbeat_s} s "
                              "each): a busy worker's trial would be failed as if it had died")
        for i, trial in enumerate(self.enqueue):
            unknown = set(trial) - set(self.search_space)
            if unknown:
                raise ConfigError(f"enqueue[{i}]", f"{sorted(unknown)} not in search_space")


def searchable(name: str) -> bool:
    """A TrainStageParams field a recipe sets, or `model.kwargs.<argument>`."""
    if name.startswith("model.kwargs.") and len(name) > len("model.kwargs."):
        return True
    names = {f.name for f in dataclasses.fields(TrainStageParams)}
    return name in names and name not in _NOT_SEARCHABLE


def with_values(base: TrainStageParams, values: dict[str, Any]) -> TrainStageParams:
    """The train recipe with a trial's values: plain fields replaced, model arguments merged."""
    plain = {k: v for k, v in values.items() if not k.startswith("model.kwargs.")}
    kwargs = {k[len("model.kwargs."):]: v for k, v in values.items() if k.startswith("model.kwargs.")}
    recipe = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainStageParams)}
    model = dataclasses.replace(base.model, kwargs={**base.model.kwargs, **kwargs})
    return TrainStageParams(**{**recipe, **plain, "model": model})


def train_env(ctx: StageContext):
    """The recipe's TrainEnv from a context (a trial's: its own folder and fingerprint). Each stage
    module adapts its own context; kind train's does the same in jobs/stages/train.py."""
    from jobs.training.recipe import TrainEnv
    return TrainEnv(ctx.out_dir, ctx.checkpoint_path, ctx.log, ctx.seed, ctx.device, ctx.fingerprint, ctx.rank,
                    ctx.world_size, experiment=ctx.experiment, stage=ctx.stage, report_path=ctx.report_path,
                    cache_dir=ctx.cache_dir, need=ctx.need, load_upstream=ctx.load_upstream, record=ctx.record)


def settings_of(p: HpoParams, ctx: StageContext):
    from jobs.search.hpo import SearchSettings
    return SearchSettings(n_trials=p.n_trials, direction=p.direction, sampler=p.sampler, pruner=p.pruner,
                          startup_trials=p.startup_trials, warmup_epochs=p.prune_after_epochs, max_epochs=p.epochs,
                          seed=ctx.seed, heartbeat_s=p.heartbeat_s, stale_after_s=p.stale_after_s,
                          poll_s=min(2.0, p.heartbeat_s))


@register("hpo", HpoParams, array_tasks=True)   # resources.array: N workers share the study
def run(p: HpoParams, ctx: StageContext) -> dict:
    from jobs.search.hpo import open_study, summarise, work
    settings = settings_of(p, ctx)
    study = open_study(ctx.out_dir, f"{ctx.experiment}.{ctx.stage}", ctx.fingerprint, settings, ctx.task,
                       ctx.log)
    _enqueue_once(study, p, ctx)
    ctx.log.info("worker %d of %d: study %s, %d trials to finish, sampler %s, pruner %s", ctx.task, ctx.num_tasks,
                 study.study_name, p.n_trials, p.sampler, p.pruner)
    work(study, ctx.out_dir, settings, lambda trial: run_trial(trial, p, ctx), ctx.log, progress=ctx.progress)
    summary = summarise(study, ctx.out_dir, settings)
    best_recipe = with_values(p, summary["best_params"])
    atomic_write_json(ctx.out_dir / "best_config.json", dataclasses.asdict(best_recipe))
    atomic_write_text(ctx.report_path, report_fragment(ctx, p, summary))
    attrs = [t.user_attrs for t in study.get_trials(deepcopy=False) if "epochs_run" in t.user_attrs]
    ctx.record(epochs=sum(a["epochs_run"] for a in attrs), total_samples=sum(a["total_samples"] for a in attrs),
               trainable_params=summary["best_user_attrs"].get("trainable_params"), model=p.model.name,
               n_trials=p.n_trials, n_complete=summary["n_complete"], n_pruned=summary["n_pruned"],
               n_failed=summary["n_failed"], workers=ctx.num_tasks, trial_seconds=summary["trial_seconds"])
    ctx.log.info("study complete: best %s %.4f (trial %d) with %s; %d complete, %d pruned, %d failed", p.metric,
                 summary["best_value"], summary["best_trial"], summary["best_params"], summary["n_complete"],
                 summary["n_pruned"], summary["n_failed"])
    return {p.metric: summary["best_value"], "best_params": summary["best_params"],
            "best_trial": summary["best_trial"], "n_complete": summary["n_complete"],
            "n_pruned": summary["n_pruned"], "n_failed": summary["n_failed"]}


def _enqueue_once(study, p: HpoParams, ctx: StageContext) -> None:
    """The `enqueue` trials go in once per study, by whichever worker comes first."""
    from safeio import waiting_lock
    if not p.enqueue:
        return
    with waiting_lock(ctx.out_dir / "study.lock"):
        if study.user_attrs.get("enqueued"):
            return
        for values in p.enqueue:
            study.enqueue_trial(values)
        study.set_user_attr("enqueued", len(p.enqueue))


def run_trial(trial, p: HpoParams, ctx: StageContext) -> float:
    """One trial: the shared training loop on train/val in trials/<number>/, the val metric
    reported after each epoch (the pruner may stop it there); its metric at the best epoch."""
    import optuna

    from jobs.search.hpo import suggest
    from jobs.training.recipe import run_recipe
    values = suggest(trial, p.search_space)
    recipe = with_values(p, values)
    folder = ctx.out_dir / "trials" / f"{trial.number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    trial_ctx = dataclasses.replace(ctx, out_dir=folder, accounting={},
                                    fingerprint=f"{ctx.fingerprint}-trial{trial.number}")
    ctx.log.info("trial %d (worker %d): %s", trial.number, ctx.task, values)

    seen: list[dict] = []          # the epochs trained, pruned or not: what the trial cost

    def report(epoch: int, entry: dict) -> None:
        seen.append(entry)
        trial.set_user_attr("epochs_run", len(seen))
        trial.set_user_attr("total_samples", sum(e["samples"] for e in seen))
        trial.report(entry[p.metric], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {p.metric} {entry[p.metric]:.4f}")
    metrics = run_recipe(recipe, train_env(trial_ctx), on_epoch=report)
    trial.set_user_attr("trainable_params", metrics["trainable_params"])
    if p.metric == "val_acc":
        return metrics["val_acc"]
    return min(e["val_loss"] for e in seen)


def report_fragment(ctx: StageContext, p: HpoParams, s: dict) -> str:
    params = markdown_table([(f"`{k}`", v) for k, v in s["best_params"].items()], ["parameter", "best value"], fmt=str)
    plots = "\n".join(f"![{name}]({name})" if why == "written" else f"- {name}: {why}"
                      for name, why in s["plots"].items())
    return (f"### {ctx.stage}: hyper-parameter search\n\n"
            f"Best {p.metric}: **{s['best_value']:.4f}** (trial {s['best_trial']}, {p.direction}). "
            f"Trials: {s['n_complete']} complete, {s['n_pruned']} pruned, {s['n_failed']} failed "
            f"(target {p.n_trials} finished), by {ctx.num_tasks} worker(s); sampler {p.sampler}, pruner {p.pruner}. "
            f"All trials: [trials.csv](trials.csv). The trials trained for {s['trial_seconds']:.0f} s in all; "
            f"the search's SLURM cost, summed over its array tasks, is this stage's row in efficiency.csv.\n\n"
            f"{params}\n\n{plots}\n")


@dataclass
class RetrainParams:
    search_stage: str = field(default="search", metadata={"help": "the hpo stage whose best parameters to train"})
    epochs: int = field(default=0, metadata={"min": 0, "help": "0 = the search's epochs"})


@register("retrain", RetrainParams)
def run_retrain(p: RetrainParams, ctx: StageContext) -> dict:
    """The search's best recipe (its best_config.json) trained on train + val, the final epoch's
    model scored on the test split (best.pt is that model); resolved_train.yaml holds the exact
    recipe, best parameters included."""
    import json

    import yaml

    from jobs.training.recipe import run_recipe
    raw = ctx.load_upstream(p.search_stage, "best_config.json", lambda path: json.loads(path.read_text()))
    best = ctx.load_upstream(p.search_stage, "best.json", lambda path: json.loads(path.read_text()))
    recipe = TrainStageParams(**{**raw, "model": TrainModelSpec(**raw["model"])})
    if p.epochs:
        recipe = dataclasses.replace(recipe, epochs=p.epochs)
    recipe = dataclasses.replace(recipe, patience=0)      # no held-out epoch to stop on
    atomic_write_text(ctx.out_dir / "resolved_train.yaml", yaml.safe_dump(
        {"search_stage": p.search_stage, "best_trial": best["best_trial"], "best_params": best["best_params"],
         "train_on": "train+val", "recipe": dataclasses.asdict(recipe)}, sort_keys=False))
    ctx.log.info("retrain with the best parameters of %s (trial %d): %s, on train + val", p.search_stage,
                 best["best_trial"], best["best_params"])
    env = train_env(ctx)
    env.progress = ctx.progress            # a trial's env reports nothing: the study reports per trial
    metrics = run_recipe(recipe, env, train_on_val=True)
    metrics.update(search_best=best["best_value"], best_params=best["best_params"])
    return metrics
