"""Experiment YAML -> typed dataclasses, with `--set a.b=c` overrides and clear errors.

An experiment file is merged over `defaults.yaml` (the one beside it, else the repo's
configs/defaults.yaml), overrides are applied, then everything is validated: unknown keys,
wrong types, unknown kinds, bad `needs`, cycles and out-of-range values are one ConfigError
naming the file, the key path, what was expected and the valid choices.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from pipeline import contract
from pipeline.core import paths
from pipeline.core.paths import REPO_ROOT
from pipeline.core.schema import ConfigError, build, to_dict
from pipeline.executors import check_request

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")   # fullmatch: `$` would let "a\n" through


@dataclass
class Resources:
    """What a stage asks the executor for. The formats are the batch system's (checked by
    pipeline/executors/ at load): e.g. time 1-12:00:00, memory 4G."""
    partition: Optional[str] = field(default=None, metadata={"help": "partition (default: the cluster's)"})
    time: str = field(default="00:30:00", metadata={"help": "time limit: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S"})
    gpus: int = field(default=0, metadata={"min": 0, "help": "GPUs per node; with several, one task (process) each"})
    cpus_per_task: int = field(default=1, metadata={"min": 1})
    nodes: int = field(default=1, metadata={"min": 1, "help": "nodes; the stage runs nodes x tasks-per-node "
                                                              "processes, joined in one process group"})
    tasks: int = field(default=1, metadata={"min": 1, "help": "processes per node on CPU nodes (gpus: 0); "
                                                              "a kind that runs as several processes (train) "
                                                              "with gpus > 0 runs one per GPU"})

    @property
    def tasks_per_node(self) -> int:
        return self.tasks

    @property
    def world_size(self) -> int:
        """Processes the stage runs as (the process group's size); 1 = a plain process."""
        return self.nodes * self.tasks_per_node
    mem: str = field(default="2G", metadata={"help": "memory per node, e.g. 4G or 512M"})
    array: int = field(default=1, metadata={
        "min": 1, "help": "a job array of N tasks that share the stage folder (kinds that run as array tasks: "
                          "hpo's workers); 1 = one job"})
    array_limit: int = field(default=0, metadata={
        "min": 0, "help": "array: at most this many tasks run at once; 0 = all"})
    gpu_type: Optional[str] = field(default=None, metadata={
        "help": "GPU model to ask for, in the cluster's own name (e.g. a100); null = any"})
    gpu_request: Literal["gres", "gpus-per-node"] = field(default="gres", metadata={
        "help": "how GPUs are asked for: --gres=gpu:[type:]N (the form every version takes) or --gpus-per-node=[type:]N"})
    constraint: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    extra: dict[str, bool | str] = field(default_factory=dict, metadata={
        "help": "extra long options of the batch system's submit command, e.g. {mail-type: END, exclusive: true}"})


@dataclass
class Partitions:
    """The partition a stage goes to when neither it nor the experiment names one: by whether it
    asks for GPUs (a cluster profile sets these)."""
    cpu: Optional[str] = field(default=None, metadata={"help": "for stages with gpus: 0 (null: the cluster's default)"})
    gpu: Optional[str] = field(default=None, metadata={"help": "for stages with gpus > 0 (null: the cluster's default)"})

    def for_gpus(self, gpus: int) -> Optional[str]:
        return self.gpu if gpus else self.cpu


@dataclass
class Profile:
    """profiles/<name>.yaml: what one cluster needs, merged between configs/defaults.yaml and the
    experiment (`--profile NAME` or PIPELINE_PROFILE)."""
    description: str = ""
    partitions: Partitions = field(default_factory=Partitions)
    resources: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "defaults of every stage's resources: account, qos, constraint, gpu_type, gpu_request, extra, ..."})
    setup: list[str] = field(default_factory=list, metadata={
        "help": "lines that open every job (module loads, conda); replace configs/defaults.yaml's"})


@dataclass
class Paths:
    data: str = "data"
    results: str = "results"
    logs: str = paths.LOGS
    cache: str = ".cache"


SUBMIT_HOST = "submit_host"


@dataclass
class StageSpec:
    kind: str
    needs: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    where: Literal["cluster", "submit_host"] = field(default="cluster", metadata={
        "help": "submit_host: `submit` runs the stage in its own process before queuing what needs it "
                "(downloads: compute nodes often have no internet); cluster: a job like the others"})


@dataclass
class Stage:
    name: str
    kind: str
    needs: list[str]
    params: Any              # the kind's params dataclass
    resources: Resources
    setup: list[str]
    module: str              # the module that registered the kind: its code is in the fingerprint
    order_only: bool = False  # its needs only order it (the report): pipeline.contract's needs_order_only
    where: str = "cluster"   # "submit_host": submit runs it in its own process, never as a job

    @property
    def on_submit_host(self) -> bool:
        return self.where == SUBMIT_HOST

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
    variant: str = ""        # a variant of the experiment (pipeline/variants.py); "" = as run plainly
    dirs: dict[str, Path] = field(default_factory=dict)   # a variant's stage folders (shared or its own)

    @property
    def results_dir(self) -> Path:
        return paths.experiment_dir(Path(self.paths.results), self.name)

    def stage_dir(self, stage: str) -> Path:
        return self.dirs.get(stage) or self.results_dir / stage

    def stage_paths(self, stage: str) -> paths.StagePaths:
        """Every file of the stage's folder (pipeline/core/paths.py)."""
        return paths.StagePaths(self.stage_dir(stage))

    def log_dir(self, stage: str) -> Path:
        return paths.log_dir(Path(self.paths.logs), self.name, stage)


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
    sampler: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "the stages' resource sampler and idle watch (pipeline/accounting/samplers.py)"})
    stage_modules: list[str] = field(default_factory=lambda: ["jobs"])
    default_experiment: Optional[str] = None
    partitions: Partitions = field(default_factory=Partitions)
    profile: str = field(default="", metadata={"help": "set by --profile: the cluster profile merged in"})
    sweep: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "variants to run side by side: {mode: grid|zip, values: {key: [v1, v2]}, limit: N} "
                "(pipeline/variants.py)"})
    variant: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "set by `submit --variant/--sweep`: this variant's name, changed values and folders"})


def defaults_path(config_path: Path) -> Path:
    beside = config_path.parent / "defaults.yaml"
    return beside if beside.exists() else REPO_ROOT / "configs" / "defaults.yaml"


PROFILE_ENV = "PIPELINE_PROFILE"
PROFILES_DIR = REPO_ROOT / "profiles"


def read_profile(name: str | None) -> dict:
    """profiles/<name>.yaml as plain data, checked against `Profile` (unknown keys and a missing
    profile are one line listing the valid ones); {} for no profile."""
    if not name:
        return {}
    path = PROFILES_DIR / f"{name}.yaml"
    if not SAFE_NAME.fullmatch(name) or not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError("", f"no cluster profile {name!r} (--profile or {PROFILE_ENV}); profiles in "
                          f"{PROFILES_DIR}: {', '.join(known) or 'none'}")
    data = _read_yaml(path)
    try:
        build(Profile, copy.deepcopy(data))
        build(Resources, copy.deepcopy(data.get("resources") or {}), "resources")
    except ConfigError as err:
        raise err.with_source(str(path)) from None
    data.pop("description", None)
    return data


def default_config_path() -> Path:
    """The experiment named by `default_experiment` in configs/defaults.yaml."""
    defaults = _read_yaml(REPO_ROOT / "configs" / "defaults.yaml")
    name = defaults.get("default_experiment")
    if not name:
        raise ConfigError("default_experiment", "not set in configs/defaults.yaml; pass -c CONFIG")
    return REPO_ROOT / "configs" / f"{name}.yaml"


def load(config_path: str | Path, overrides: list[str] = (), root: Path | None = None,
         profile: str | None = None) -> Experiment:
    """Read, merge (defaults.yaml, then the cluster profile, then the experiment), override and
    validate an experiment. Relative paths resolve against root. `profile`: a name in profiles/,
    else PIPELINE_PROFILE, else none."""
    profile = profile or os.environ.get(PROFILE_ENV) or None
    path = Path(config_path)
    if not path.exists():
        raise ConfigError("", f"config file not found: {path}")
    merged = _deep_merge(_deep_merge(_read_yaml(defaults_path(path)), read_profile(profile)), _read_yaml(path))
    if profile:
        merged["profile"] = profile
    merged.setdefault("name", path.stem)
    for item in overrides:
        try:
            _apply_override(merged, item)
        except ConfigError as err:
            raise err.with_source(f"{path} (from --set {item})") from None
    _absolutize_paths(merged, root or Path.cwd())
    try:
        return from_raw(merged, str(path))
    except ConfigError as err:
        raise err.with_source(_describe_source(path, overrides, err.key)) from None


def from_raw(raw: dict, source: str = "<resolved>") -> Experiment:
    """Validate merged plain data (e.g. a resolved config written earlier) into an Experiment."""
    top = build(_Top, copy.deepcopy(raw))
    load_kind_modules(top.stage_modules)
    _check_name("name", top.name)
    # Checked on its own before it is merged into the stages, so that a bad value here (or from
    # `--set resources.x=...`) is reported under the key the user wrote, once.
    base_resources = build(Resources, top.resources, "resources")
    _check_resources(base_resources, "resources")
    from pipeline.accounting.samplers import SamplerSettings   # checked here, read by the runner
    build(SamplerSettings, top.sampler, "sampler")
    stages = {name: _build_stage(name, spec, base_resources, top.partitions) for name, spec in top.stages.items()}
    if not stages:
        raise ConfigError("stages", "an experiment needs at least one stage")
    from pipeline.core.dag import check_graph  # the DAG checks live with the DAG code
    check_graph(stages)
    _check_submit_host_needs(stages)
    dirs = {s: Path(d) for s, d in (top.variant.get("dirs") or {}).items()}
    return Experiment(top.name, top.seed, top.description, top.paths, top.setup, base_resources,
                      top.signal_delay_s, top.stage_modules, stages, source, raw, top.variant.get("name", ""), dirs)


def load_kind_modules(names: list[str]) -> None:
    """Import the modules that register stage kinds: the engine's own (pipeline.kinds) and the
    experiment's stage packages (configs/defaults.yaml: stage_modules)."""
    importlib.import_module("pipeline.kinds")
    for name in names:
        importlib.import_module(name)


def resolved_stage_config(exp: Experiment, name: str, fingerprint: str, index: int | None = None) -> dict:
    """What a stage's config.yaml records: the stage as written, its resolved kind, needs,
    parameters (defaults filled in) and resources, and the experiment-wide settings; not the other
    stages (1,000 stages each writing the whole experiment made `run all` quadratic).

    `stage_index` is the stage's position in the experiment file (report.py orders rows by it);
    pass `index` when writing many stages, else it is looked up (a scan of the stage names).
    For people and the report: `experiment` keeps only this stage, so its `needs` name stages
    that are not there and from_raw() would refuse it; reload the experiment file instead.
    """
    stage = exp.stages[name]
    experiment = {k: v for k, v in exp.raw.items() if k != "stages"}
    experiment["stages"] = {name: exp.raw["stages"][name]}
    return {"stage": name, "fingerprint": fingerprint,
            "stage_index": list(exp.stages).index(name) if index is None else index,
            "kind": stage.kind, "needs": list(stage.needs), "params": stage.params_dict(),
            "resources": to_dict(stage.resources), "setup": list(stage.setup), "experiment": experiment}


def _build_stage(name: str, spec: Any, base: Resources, partitions: Partitions) -> Stage:
    key = f"stages.{name}"
    _check_name(key, name)
    if not isinstance(spec, dict):
        raise ConfigError(key, f"expected a mapping with 'kind' and the stage's parameters, got {spec!r}")
    if "kind" not in spec:
        raise ConfigError(f"{key}.kind", f"required; valid kinds: {', '.join(contract.kinds())}")
    kind = spec["kind"]
    try:  # a lookup, not a sorted list of every kind, for each of 1,000 stages
        registered = contract.get(kind)
    except (KeyError, TypeError):
        raise ConfigError(f"{key}.kind", f"unknown kind {kind!r}; valid kinds: {', '.join(contract.kinds())}") from None
    reserved = {f.name for f in dataclasses.fields(StageSpec)}
    head = build(StageSpec, {k: v for k, v in spec.items() if k in reserved}, key)
    params = build(registered.params, {k: v for k, v in spec.items() if k not in reserved}, key)
    resources = build(Resources, {**to_dict(base), **head.resources}, f"{key}.resources")
    if resources.partition is None:       # the profile's partition for its kind of stage (CPU or GPU)
        resources = dataclasses.replace(resources, partition=partitions.for_gpus(resources.gpus))
    _check_resources(resources, f"{key}.resources")
    if registered.several_processes and resources.gpus:
        resources = dataclasses.replace(resources, tasks=resources.gpus)      # one process per GPU
    if resources.world_size > 1 and not registered.several_processes:
        raise ConfigError(f"{key}.resources", f"nodes x tasks = {resources.world_size} processes, but kind {kind!r} "
                          f"runs as one process (it may use several GPUs itself); set nodes: 1 and tasks: 1")
    if resources.array > 1 and not registered.array_tasks:
        raise ConfigError(f"{key}.resources.array", f"got {resources.array}, but kind {kind!r} does not run as "
                          "job-array tasks (only kinds that share work through their folder do, e.g. hpo); "
                          "set array: 1")
    if resources.array > 1 and resources.world_size > 1:
        raise ConfigError(f"{key}.resources", "array tasks run as one process each: set nodes: 1 and tasks: 1, "
                          "or array: 1")
    if head.where == SUBMIT_HOST and (resources.gpus or resources.world_size > 1 or resources.array > 1):
        raise ConfigError(f"{key}.where", "a stage that runs on the submit host runs as one plain process there: "
                          "it cannot ask for gpus, several tasks or nodes, or a job array (set where: cluster)")
    return Stage(name, kind, head.needs, params, resources, head.setup, registered.module,
                 registered.needs_order_only, head.where)


def _check_submit_host_needs(stages: dict[str, Stage]) -> None:
    """A stage on the submit host runs before any job is queued: it can only need stages that run
    there too."""
    for stage in stages.values():
        jobs = [d for d in stage.needs if not stages[d].on_submit_host] if stage.on_submit_host else []
        if jobs:
            raise ConfigError(f"stages.{stage.name}.where", f"runs on the submit host, but needs {jobs[0]!r}, which "
                              f"runs as a job; set stages.{jobs[0]}.where: submit_host too, or this one to cluster")


def _check_name(key: str, name: str) -> None:
    # Names become job names, folder names and command arguments: keep them shell- and path-safe.
    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(key, f"name {name!r} may only use letters, digits, '_', '.', '-' (first: letter or digit)")


def _check_resources(r: Resources, key: str) -> None:
    """The request in the scheduler's own terms (its formats and options, checked by the executors'
    rules), and what no backend can run."""
    check_request(r, key)
    if r.gpus and r.tasks not in (1, r.gpus):
        raise ConfigError(f"{key}.tasks", f"got {r.tasks} with gpus={r.gpus}; on GPU nodes a stage runs one task "
                          f"per GPU: leave tasks at 1 (or set it to {r.gpus})")


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads `10:30` as the text a time limit is."""

    def compose_document(self):
        node = super().compose_document()
        _refuse_duplicate_keys(node)
        return node

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        # YAML 1.1 reads unquoted 10:30 as the base-60 integer 630 (and 1:30:00 as 5400): as a
        # time limit that is 630 minutes, not 10 min 30 s. Nothing in a config is base 60.
        if kind is yaml.ScalarNode and ":" in value and tag in (_INT_TAG, _FLOAT_TAG):
            return "tag:yaml.org,2002:str"
        return tag


_INT_TAG, _FLOAT_TAG, _MERGE_TAG = (f"tag:yaml.org,2002:{t}" for t in ("int", "float", "merge"))


def _refuse_duplicate_keys(root: yaml.Node | None) -> None:
    """Of two equal keys in one mapping the last would win silently: refuse, with both lines."""
    stack, seen = [(root, "")], set()
    while stack:                       # iterative: nesting depth is the user's
        node, path = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))             # aliases share nodes (and can loop)
        if isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            continue
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key, line = f"{path}.{key_node.value}" if path else key_node.value, key_node.start_mark.line + 1
            if key_node.value in lines:
                raise ConfigError(key, f"appears twice (lines {lines[key_node.value]} and {line}); "
                                  "the last would silently win: keep one")
            lines[key_node.value] = line
            stack.append((value_node, key))


def _parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _read_yaml(path: Path) -> dict:
    try:
        data = _parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("", f"not valid YAML: {err}", str(path)) from None
    except ConfigError as err:
        raise err.with_source(str(path)) from None
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
    key = key.strip()
    parts = key.split(".")
    if parts[0] == "stages" and len(parts) > 1 and parts[1] not in data.get("stages", {}):
        raise ConfigError(key, f"--set names no stage {parts[1]!r}; stages: {', '.join(data.get('stages', {}))}")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"--set {item!r}: this key holds a value, not a mapping")
    try:
        node[parts[-1]] = _parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = text
    except ConfigError as err:     # a duplicate key inside the value: name it from the top
        raise ConfigError(f"{key}.{err.key}", err.message) from None


def _absolutize_paths(data: dict, root: Path) -> None:
    paths = data.setdefault("paths", {})
    if isinstance(paths, dict):
        for k, v in list(paths.items()):
            if isinstance(v, str) and not Path(v).is_absolute():
                paths[k] = str((root / v).resolve())


def _describe_source(path: Path, overrides: list[str], key: str) -> str:
    """The file, and the last `--set` that wrote `key` or a mapping holding it: its value is wrong."""
    def wrote(item: str) -> bool:
        target = item.split("=", 1)[0].strip()
        return key == target or key.startswith((target + ".", target + "["))
    hits = [o for o in overrides if key and wrote(o)]
    return f"{path} (from --set {hits[-1]})" if hits else str(path)
