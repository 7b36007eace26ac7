"""Test stage kinds: `noop` does nothing (large-DAG tests, benchmarks/large_dag_bench.py);
`rank_fail` is a several-process stage with one failing rank (tests/jobs/training/test_distributed.py);
`ticks` counts slowly, reporting progress (tests/experiments/test_live_view.py).

Load it with `stage_modules: [tests.support.noop_stages]` (the repo root is on sys.path when
`python -m pipeline` runs from it).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.contract import StageContext, register


@dataclass
class NoopParams:
    """`value` only makes stages differ in their fingerprints; nothing reads it."""
    value: int = 0


@register("noop", NoopParams)
def run_noop(p: NoopParams, ctx: StageContext) -> dict:
    return {}


@dataclass
class TicksParams:
    """`ticks` steps of `sleep_s` seconds each, every one reported through ctx.progress."""
    ticks: int = 6
    sleep_s: float = 2.0


@register("ticks", TicksParams)
def run_ticks(p: TicksParams, ctx: StageContext) -> dict:
    import time
    ctx.progress(0, p.ticks, "tick")
    for i in range(1, p.ticks + 1):
        time.sleep(p.sleep_s)
        ctx.progress(i, p.ticks, "tick")
    return {}


@dataclass
class RankFailParams:
    """A several-process stage whose rank `fail_rank` raises while the others wait in a collective."""
    fail_rank: int = 1
    timeout_s: float = 60.0


@register("rank_fail", RankFailParams, several_processes=True)
def run_rank_fail(p: RankFailParams, ctx: StageContext) -> dict:
    import torch
    import torch.distributed as dist

    from jobs.training.distributed import setup
    setup(ctx, p.timeout_s)
    if ctx.rank == p.fail_rank:
        raise RuntimeError(f"rank {ctx.rank} fails on purpose")
    dist.all_reduce(torch.ones(1))        # waits for the failed rank: srun ends the step, or the timeout does
    return {}
