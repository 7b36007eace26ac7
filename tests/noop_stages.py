"""A stage kind that does nothing, for large-DAG tests and benchmarks/large_dag_bench.py.

Load it with `stage_modules: [tests.noop_stages]` (the repo root is on sys.path when
`python -m pipeline` runs from it).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.registry import StageContext, register


@dataclass
class NoopParams:
    """`value` only makes stages differ in their fingerprints; nothing reads it."""
    value: int = 0


@register("noop", NoopParams)
def run_noop(p: NoopParams, ctx: StageContext) -> dict:
    return {}
