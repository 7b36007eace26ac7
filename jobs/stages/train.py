"""Stage kind `train`: any registry model (project, torchvision, timm) with config surgery, trained
by the shared loop on an upstream split.npz, grey or colour. The recipe, which kinds hpo and
retrain share, is jobs/training/recipe.py; best.pt's `meta` holds what evaluate needs to rebuild the
same model and input transform (jobs/training/trained.py)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.contract import ConfigError, StageContext, register

from jobs.training.params import TrainStageParams


@dataclass
class TrainKindParams(TrainStageParams):
    # The recipe's parameters, a value no run can use refused when the config loads.
    def __post_init__(self):
        if problem := self.problem():
            raise ConfigError(*problem)


@register("train", TrainKindParams, several_processes=True)   # data parallel: jobs/training/distributed.py
def run(p: TrainKindParams, ctx: StageContext) -> dict:
    from jobs.training.recipe import run_recipe
    return run_recipe(p, train_env(ctx))


def train_env(ctx: StageContext):
    """The recipe's TrainEnv: this stage's folder, files and process, from its context."""
    from jobs.training.recipe import TrainEnv
    return TrainEnv(ctx.out_dir, ctx.checkpoint_path, ctx.log, ctx.seed, ctx.device, ctx.fingerprint, ctx.rank,
                    ctx.world_size, experiment=ctx.experiment, stage=ctx.stage, report_path=ctx.report_path,
                    cache_dir=ctx.cache_dir, need=ctx.need, load_upstream=ctx.load_upstream, record=ctx.record,
                    progress=ctx.progress)
