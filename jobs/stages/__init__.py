"""Thin stage modules: each registers YAML kinds with the engine and composes the library parts
(jobs.data, jobs.models, jobs.training, jobs.evaluation, jobs.deployment, jobs.scratch,
jobs.search). The package also offers the model registry as the `models` catalog
(`python -m pipeline models PATTERN`)."""
from pipeline.contract import register_catalog

# Registration happens on import.
from . import data, deploy, deploy_benchmark, deploy_export, evaluate  # noqa: F401
from . import hpo, scratch, train  # noqa: F401


def _list_models(pattern: str) -> dict[str, list[str]]:
    from jobs.models.registry import list_models   # torch: only when the catalog is listed
    return list_models(pattern)


register_catalog("models", _list_models)
