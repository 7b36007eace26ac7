"""Models by name (registry.py), model surgery (surgery.py), trained models back (trained.py).

Importing the package registers the `models` catalog (`python -m pipeline models PATTERN`); the
registry itself, and torch with it, is imported only when the catalog is listed."""
from pipeline.contract import register_catalog


def _list_models(pattern: str) -> dict[str, list[str]]:
    from jobs.models.registry import list_models
    return list_models(pattern)


register_catalog("models", _list_models)
