"""Thin stage modules: each registers YAML kinds with the engine and composes the library parts
(jobs.data, jobs.models, jobs.training, jobs.evaluation, jobs.deployment, jobs.scratch,
jobs.search)."""
# Registration happens on import.
from . import data, deploy, deploy_bench, deploy_export, evaluate  # noqa: F401
from . import scratch, search, train  # noqa: F401
