"""Experiment YAML -> typed dataclasses, with `--set a.b=c` overrides and clear errors.

An experiment file is merged over `defaults.yaml` (the one beside it, else the repo's
configs/defaults.yaml), overrides are applied, then everything is validated: unknown keys,
wrong types, unknown kinds, bad `needs`, cycles and out-of-range values are one ConfigError
naming the file, the key path, what was expected and the valid choices.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from . import registry
from .schema import ConfigError, build, to_dict

REPO_ROOT = Path(__file__).resolve().parent.parent
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TIME_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?$")
MEM_RE = re.compile(r"^\d+[KMGT]?$")


@dataclass
class Resources:
    partition: Optional[str] = field(default=None, metadata={"help": "SLURM partition (default: cluster's)"})
    time: str = field(default="00:30:00", metadata={"help": "time limit, [D-]HH:MM:SS or minutes"})
    gpus: int = field(default=0, metadata={"min": 0})
    cpus_per_task: int = field(default=1, metadata={"min": 1})
    mem: str = field(default="2G", metadata={"help": "memory per node, e.g. 4G or 512M"})
    constraint: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    extra: dict[str, str] = field(default_factory=dict, metadata={"help": "extra sbatch options, e.g. {mail-type: END}"})


@dataclass
class Paths:
    data: str = "data"
    results: str = "results"
    logs: str = "logs"
    cache: str = ".cache"


@dataclass
class StageSpec:
    kind: str
    needs: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)


@dataclass
class Stage:
    name: str
    kind: str
    needs: list[str]
    params: Any              # the kind's params dataclass
    resources: Resources
    setup: list[str]

    def params_dict(self) -> dict:
        return to_dict(self.params)


@dataclass
class Experiment:
    name: str
    seed: int
    description: str
    paths: Paths
    setup: list[str]
    resources: Resources
    signal_delay_s: int
    stage_modules: list[str]
    stages: dict[str, Stage]
    source: str
    raw: dict                # merged + overridden plain data, paths absolute: round-trips

    @property
    def results_dir(self) -> Path:
        return Path(self.paths.results) / self.name

    def stage_dir(self, stage: str) -> Path:
        return self.results_dir / stage

    def log_dir(self, stage: str) -> Path:
        return Path(self.paths.logs) / self.name / stage


@dataclass
class _Top:  # the top-level keys of a merged experiment file
    name: str
    stages: dict[str, Any]
    seed: int = field(default=0, metadata={"min": 0})
    description: str = ""
    paths: Paths = field(default_factory=Paths)
    setup: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    signal_delay_s: int = field(default=120, metadata={"min": 0})
    stage_modules: list[str] = field(default_factory=lambda: ["jobs"])
    default_experiment: Optional[str] = None


def defaults_path(config_path: Path) -> Path:
    beside = config_path.parent / "defaults.yaml"
    return beside if beside.exists() else REPO_ROOT / "configs" / "defaults.yaml"


def default_config_path() -> Path:
    """The experiment named by `default_experiment` in configs/defaults.yaml."""
    defaults = _read_yaml(REPO_ROOT / "configs" / "defaults.yaml")
    name = defaults.get("default_experiment")
    if not name:
        raise ConfigError("default_experiment", "not set in configs/defaults.yaml; pass -c CONFIG")
    return REPO_ROOT / "configs" / f"{name}.yaml"


def load(config_path: str | Path, overrides: list[str] = (), root: Path | None = None) -> Experiment:
    """Read, merge, override and validate an experiment. Relative paths resolve against root."""
    path = Path(config_path)
    if not path.exists():
        raise ConfigError("", f"config file not found: {path}")
    merged = _deep_merge(_read_yaml(defaults_path(path)), _read_yaml(path))
    merged.setdefault("name", path.stem)
    try:
        for item in overrides:
            _apply_override(merged, item)
        _absolutize_paths(merged, root or Path.cwd())
        return from_raw(merged, str(path))
    except ConfigError as err:
        raise err.with_source(_describe_source(path, overrides, err.key)) from None


def from_raw(raw: dict, source: str = "<resolved>") -> Experiment:
    """Validate merged plain data (e.g. a resolved config written earlier) into an Experiment."""
    top = build(_Top, copy.deepcopy(raw))
    registry.load_modules(top.stage_modules)
    _check_name("name", top.name)
    base_resources = build(Resources, top.resources, "resources")
    stages = {name: _build_stage(name, spec, base_resources) for name, spec in top.stages.items()}
    if not stages:
        raise ConfigError("stages", "an experiment needs at least one stage")
    from .dag import check_graph  # the DAG checks live with the DAG code
    check_graph(stages)
    return Experiment(top.name, top.seed, top.description, top.paths, top.setup, base_resources,
                      top.signal_delay_s, top.stage_modules, stages, source, raw)


def _build_stage(name: str, spec: Any, base: Resources) -> Stage:
    key = f"stages.{name}"
    _check_name(key, name)
    if not isinstance(spec, dict):
        raise ConfigError(key, f"expected a mapping with 'kind' and the stage's parameters, got {spec!r}")
    if "kind" not in spec:
        raise ConfigError(f"{key}.kind", f"required; valid kinds: {', '.join(registry.kinds())}")
    kind = spec["kind"]
    if kind not in registry.kinds():
        raise ConfigError(f"{key}.kind", f"unknown kind {kind!r}; valid kinds: {', '.join(registry.kinds())}")
    reserved = {f.name for f in dataclasses.fields(StageSpec)}
    head = build(StageSpec, {k: v for k, v in spec.items() if k in reserved}, key)
    params = build(registry.get(kind).params, {k: v for k, v in spec.items() if k not in reserved}, key)
    resources = build(Resources, {**to_dict(base), **head.resources}, f"{key}.resources")
    _check_resources(resources, f"{key}.resources")
    return Stage(name, kind, head.needs, params, resources, head.setup)


def _check_name(key: str, name: str) -> None:
    # Names become job names, folder names and command arguments: keep them shell- and path-safe.
    if not SAFE_NAME.match(name):
        raise ConfigError(key, f"name {name!r} may only use letters, digits, '_', '.', '-' (first: letter or digit)")


def _check_resources(r: Resources, key: str) -> None:
    if not TIME_RE.match(r.time):
        raise ConfigError(f"{key}.time", f"got {r.time!r}; expected minutes, HH:MM:SS or D-HH:MM:SS")
    if not MEM_RE.match(r.mem):
        raise ConfigError(f"{key}.mem", f"got {r.mem!r}; expected a number with an optional K/M/G/T suffix")
    for opt in r.extra:
        if not re.match(r"^[a-z][a-z0-9-]*$", opt):
            raise ConfigError(f"{key}.extra.{opt}", "sbatch option names are lowercase words with '-'")


def time_minutes(time: str) -> int:
    """SLURM time string -> whole minutes, rounded up (submitit wants minutes).

    Forms (sbatch(1)): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
    """
    days, _, rest = time.rpartition("-")
    nums = [int(x) for x in rest.split(":")]
    if days:
        h, m, s = (nums + [0, 0])[:3]
    else:
        h, m, s = ([0] * (3 - len(nums)) + nums) if len(nums) == 3 else (0, nums[0], nums[1] if len(nums) == 2 else 0)
    return int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)


def mem_mb(mem: str) -> float:
    """sbatch --mem value -> MB (a number without suffix is MB, as sbatch reads it)."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)", mem).groups()
    return int(number) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit or "M"]


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("", f"not valid YAML: {err}", str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("", "expected a mapping at the top level", str(path))
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _apply_override(data: dict, item: str) -> None:
    """`a.b.c=value`: value is parsed as YAML (so 3 is an int, true a bool, [1,2] a list)."""
    if "=" not in item:
        raise ConfigError("", f"--set {item!r}: expected KEY=VALUE, e.g. stages.train.epochs=3")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if parts[0] == "stages" and len(parts) > 1 and parts[1] not in data.get("stages", {}):
        raise ConfigError(key, f"--set names no stage {parts[1]!r}; stages: {', '.join(data.get('stages', {}))}")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"--set {item!r}: this key holds a value, not a mapping")
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = text


def _absolutize_paths(data: dict, root: Path) -> None:
    paths = data.setdefault("paths", {})
    if isinstance(paths, dict):
        for k, v in list(paths.items()):
            if isinstance(v, str) and not Path(v).is_absolute():
                paths[k] = str((root / v).resolve())


def _describe_source(path: Path, overrides: list[str], key: str) -> str:
    hits = [o for o in overrides if key and (o.split("=", 1)[0] == key or key.startswith(o.split("=", 1)[0] + "."))]
    return f"{path} (from --set {hits[-1]})" if hits else str(path)
