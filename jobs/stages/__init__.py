"""Thin stage modules: each registers YAML kinds with the engine and composes the library parts
(jobs.data, jobs.models, jobs.training, jobs.evaluation, jobs.deployment, jobs.scratch)."""
# Registration happens on import.
from . import data, deploy, deploy_bench, deploy_export, evaluate  # noqa: F401
from . import scratch, train  # noqa: F401
