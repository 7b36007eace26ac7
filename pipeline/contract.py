"""The stage contract: the one seam between the engine (pipeline/) and the stages (jobs/).

A stage kind is a function `run(params, ctx) -> dict` registered under its YAML `kind`, with a
dataclass describing its parameters. The engine calls it the same way in a queued job, locally, or
in-process for tests.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from pipeline.accounting.record import device_hours
from pipeline.core import paths
from pipeline.core.progress import no_progress
# Part of the contract: a kind's params dataclass raises it from __post_init__ for a bad value.
from pipeline.core.schema import ConfigError  # noqa: F401

_KINDS: dict[str, "StageKind"] = {}


@dataclasses.dataclass(frozen=True)
class StageKind:
    name: str
    run: Callable[[Any, "StageContext"], dict]
    params: type
    module: str
    several_processes: bool = False   # may run as nodes x tasks processes (ctx.rank, ctx.world_size)
    array_tasks: bool = False         # may run as a job array of independent tasks (ctx.task, ctx.num_tasks)
    needs_order_only: bool = False    # `needs` only orders it (report: it reports on whatever is there)

    def code_version(self) -> str:
        """Hash of the kind's module and every project module it imports, transitively: a change
        to any of them (e.g. the shared training loop) reruns the stage. Cached per process."""
        from pipeline.core.fingerprint import code_version
        return code_version(self.module)

    def code_closure(self) -> list[str]:
        """The project modules whose sources make up code_version(), sorted."""
        from pipeline.core.fingerprint import code_closure
        return [name for name, _ in code_closure(self.module)]


@dataclasses.dataclass
class StageContext:
    """What a stage gets from the engine besides its parameters."""
    experiment: str
    stage: str
    out_dir: Path                 # results/<exp>/<stage>/ ; write artifacts with state.atomic_*
    upstream: dict[str, Path]     # name of each needed stage -> its out_dir
    data_dir: Path                # shared data folder (downloads)
    cache_dir: Path               # cache root of the stages' libraries (downloaded weights)
    seed: int
    device: str                   # "cuda" when a GPU is visible, else "cpu"
    log: logging.Logger
    accounting: dict[str, Any]    # stage-specific accounting fields (epochs, params, precision...)
    fingerprint: str = ""         # changes whenever config, code or upstream change
    rank: int = 0                 # this process's rank when the stage runs as several (resources
    world_size: int = 1           # nodes x tasks, one process group); only rank 0 writes results
    task: int = 0                 # this job-array task (resources.array): tasks share out_dir and
    num_tasks: int = 1            # coordinate through it (a study); each may write there
    # progress(done, of, unit, train_loss=, val_acc=, images_per_s=, best_value=...): how
    # far the stage is, for `status`; cheap enough to call every step (pipeline/core/progress.py)
    progress: Callable[..., None] = no_progress

    @property
    def is_main(self) -> bool:
        """The process that writes the stage's files (every process of a 1-process stage)."""
        return self.rank == 0

    @property
    def checkpoint_path(self) -> Path:
        """Where the stage keeps its resume file (not a result: never checksummed or read by others)."""
        return paths.StagePaths(self.out_dir).checkpoint

    @property
    def report_path(self) -> Path:
        """The stage's own section of results/report.md (markdown; links relative to out_dir)."""
        return paths.StagePaths(self.out_dir).report_fragment

    @property
    def extra_rows_path(self) -> Path:
        """JSON list of further efficiency.csv rows the stage adds (e.g. one per variant it measured)."""
        return paths.StagePaths(self.out_dir).accounting_extra

    def need(self, name: str) -> Path:
        """The folder of upstream stage `name`; it must be listed in this stage's `needs`."""
        if name not in self.upstream:
            raise ValueError(f"stage {self.stage!r} reads stage {name!r}, which is not in its `needs` "
                             f"({', '.join(self.upstream) or 'none'}); add it there")
        return self.upstream[name]

    def load_upstream(self, stage: str, filename: str, loader: Callable[[Path], Any]) -> Any:
        """`loader(path)` on a file of upstream stage `stage`; any failure to read it becomes one
        UpstreamError naming the file and the stage to rerun (the engine then marks that stage
        corrupt, so the next `submit all` reruns it)."""
        path = self.need(stage) / filename
        if not path.exists():
            raise UpstreamError(stage, path, "is missing")
        try:
            return loader(path)
        except Exception as err:  # noqa: BLE001 - any reader error means the file is unusable
            raise UpstreamError(stage, path, f"cannot be read ({type(err).__name__}: {err})") from err

    def upstream_metrics(self, stage: str) -> dict:
        """What upstream `stage` returned (its metrics.json, written by the engine)."""
        return self.load_upstream(stage, paths.METRICS, _read_json)

    def upstream_accounting(self, stage: str) -> dict:
        """Upstream `stage`'s accounting (status, skip_reason, wall_s, what it recorded)."""
        return self.load_upstream(stage, paths.ACCOUNTING, _read_json)

    def upstream_cost(self, accounting: dict) -> dict:
        """{gpu_hours, cpu_hours} of an upstream stage's accounting (upstream_accounting), by the
        one cost formula of efficiency.csv."""
        return device_hours(accounting)

    def record(self, **fields: Any) -> None:
        """Add fields to this stage's accounting.json (e.g. trainable_params, epochs)."""
        self.accounting.update(fields)


def _read_json(path: Path) -> Any:
    import json
    return json.loads(path.read_text())


class UpstreamError(RuntimeError):
    """An upstream stage's file is missing or cannot be read: that stage must run again."""

    def __init__(self, stage: str, path: Path, problem: str):
        self.stage, self.path = stage, path
        super().__init__(f"upstream file {path} {problem}; it is written by stage {stage!r}, which is now "
                         f"marked corrupt: rerun it and what follows with `python -m pipeline submit all`")


def register(kind: str, params: type, several_processes: bool = False, array_tasks: bool = False,
             needs_order_only: bool = False):
    """Decorator: `@register("train", TrainParams) def run(p, ctx): ...`. `several_processes`:
    the kind may run as several processes (resources nodes x tasks, or gpus > 1), each calling
    it with its own ctx.rank; it must let rank 0 alone write (ctx.is_main). `array_tasks`: it may
    run as a job array (resources.array), each task an independent job calling it with its own
    ctx.task on the same out_dir; it returns only once the shared work is complete, and every
    task returns the same metrics (whichever ends first marks the stage done). `needs_order_only`:
    its `needs` only say when it runs, it reads nothing of them (the report, which a sweep runs once
    after every variant, done or failed)."""
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"params for stage kind {kind!r} must be a dataclass")

    def deco(fn):
        _KINDS[kind] = StageKind(kind, fn, params, fn.__module__, several_processes, array_tasks, needs_order_only)
        return fn
    return deco


def get(kind: str) -> StageKind:
    return _KINDS[kind]


def experiment_wide(kind: str) -> bool:
    """A kind that reports on the whole experiment (registered `needs_order_only`, e.g. report):
    variants do not vary it; a submit runs it once, after every variant."""
    return kind in _KINDS and _KINDS[kind].needs_order_only


def kinds() -> list[str]:
    return sorted(_KINDS)


# Catalogs: named listings a stage package offers the command line (`python -m pipeline NAME
# [PATTERN]`), e.g. what a model registry can build. The engine only prints them.
_CATALOGS: dict[str, Callable[[str], dict[str, list[str]]]] = {}


def register_catalog(name: str, fn: Callable[[str], dict[str, list[str]]]) -> None:
    """`fn(pattern) -> {group: [names]}`, registered by a stage package when it is imported."""
    _CATALOGS[name] = fn


def catalog(name: str, packages: list[str] = ()) -> Callable[[str], dict[str, list[str]]]:
    """The catalog `name`. Not registered yet: import `<package>.<name>` of each stage package
    (a module registers its catalog on import, and packages import their modules lazily)."""
    from importlib.util import find_spec
    for package in packages:
        if name in _CATALOGS:
            break
        if find_spec(package) and find_spec(f"{package}.{name}"):
            importlib.import_module(f"{package}.{name}")
    if name not in _CATALOGS:
        raise KeyError(f"no catalog {name!r}; registered: {', '.join(sorted(_CATALOGS)) or 'none'}")
    return _CATALOGS[name]


def describe(kind: StageKind) -> str:
    """One line on what the kind does: the first sentence of its function's docstring, else of its
    parameter dataclass's, else of its module's when the module registers no other kind (a module
    with several kinds describes all of them, not this one); else nothing."""
    own_module = [k for k in _KINDS.values() if k.module == kind.module] == [kind]
    module_doc = sys.modules[kind.module].__doc__ if own_module and kind.module in sys.modules else None
    for doc in (kind.run.__doc__, _written_doc(kind.params), module_doc):
        if doc and doc.strip():
            first = " ".join(doc.strip().split("\n\n")[0].split())
            return first.split(". ")[0].rstrip(".")
    return ""


def _written_doc(cls: type) -> str | None:
    """The class's own docstring; None for the one @dataclass generates (`Name(field: type, ...)`)."""
    doc = cls.__dict__.get("__doc__")
    return None if not doc or doc.startswith(f"{cls.__name__}(") else doc


def describe_params(params: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of each field of a kind's parameter dataclass, for the CLI;
    help is the field's metadata["help"] plus its bounds."""
    import typing
    hints = typing.get_type_hints(params)
    rows = []
    for f in dataclasses.fields(params):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default) if isinstance(f.default, str) else str(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = str(f.default_factory())
        else:
            default = "required"
        bounds = ", ".join(f"{k} {f.metadata[k]}" for k in ("min", "max") if k in f.metadata)
        text = f.metadata.get("help", "") + (f" ({bounds})" if bounds else "")
        rows.append((f.name, _short_type(hints.get(f.name, f.type)), default, text.strip()))
    return rows


def _short_type(tp: Any) -> str:
    """int, float, 'sgd'|'adamw', str|null, list[str], mapping."""
    import types
    import typing
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "|".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return "|".join(_short_type(a) for a in args)
    if origin in (list, tuple):
        return f"{origin.__name__}[{', '.join(_short_type(a) for a in args if a is not Ellipsis)}]"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))
