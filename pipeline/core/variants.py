"""Variants and sweeps: one experiment run with several sets of values, results side by side.

A variant is the experiment with some values changed: `submit --variant NAME --set ...`, or one
combination of a sweep (`--sweep key=v1,v2`, repeatable: a grid; or the YAML `sweep:` block,
`grid` or `zip`). Where each stage of a variant keeps its results:
- results/<exp>/<stage> when its fingerprint is that of the experiment as written (only `paths.*`
  overrides applied): stages a variant does not change (download, prepare, an unchanged upstream
  training stage) are shared with plain runs and with every other variant, and run once;
- else results/<exp>/variants/<v>/<stage>, where <v> is the first variant of this submit with that
  fingerprint: variants that agree on a stage share that one run too.
results/<exp>/variants/<name>/variant.json records each variant (its changed values, folders and
resolved config); `status` and `report` list the variants from these files.
"""
from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import safeio
from pipeline import contract
from pipeline.core import config, paths, state
from pipeline.core.config import Experiment
from pipeline.core.fingerprint import fingerprints
from pipeline.core.schema import ConfigError

@dataclass
class Variant:
    name: str
    changed: dict[str, Any]      # key -> value, as the user wrote them
    overrides: list[str]         # the --set items that make it


def parse_sweep_items(items: list[str]) -> dict[str, list[Any]]:
    """`--sweep stages.train.lr=0.1,0.01` (repeatable) -> {key: [values]}; each value is YAML.
    `KEY=[V1, V2]` is the same list written as YAML (to sweep over lists: `KEY=[[1, 2], [3]]`)."""
    values: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not key or not text:
            raise ConfigError("", f"--sweep {item!r}: expected KEY=V1,V2,..., e.g. stages.train.lr=0.1,0.01")
        values[key] = _sweep_values(item, text)
    return values


def _sweep_values(item: str, text: str) -> list[Any]:
    try:
        if text.startswith("["):
            listed = yaml.safe_load(text)
            if isinstance(listed, list) and listed:
                return listed
        else:
            return [yaml.safe_load(v) for v in text.split(",")]
    except yaml.YAMLError as err:
        problem = str(getattr(err, "problem", "") or err).splitlines()[0]
        raise ConfigError("", f"--sweep {item!r}: the values are not valid YAML ({problem}); write "
                          "KEY=V1,V2,... or KEY=[V1, V2, ...]") from None
    raise ConfigError("", f"--sweep {item!r}: expected a non-empty list of values, e.g. KEY=[0.1, 0.01]")


def combinations(values: dict[str, list[Any]], mode: str) -> list[dict[str, Any]]:
    """grid: every combination (first key slowest); zip: the i-th value of every key together."""
    if mode not in ("grid", "zip"):
        raise ConfigError("sweep.mode", f"got {mode!r}; valid choices: grid, zip")
    keys = list(values)
    for key, listed in values.items():
        if not isinstance(listed, list) or not listed:
            raise ConfigError(f"sweep.values.{key}", f"expected a non-empty list of values, got {listed!r}")
    if mode == "zip":
        lengths = {k: len(v) for k, v in values.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError("sweep.values", f"zip needs lists of one length, got {lengths}")
        return [dict(zip(keys, row)) for row in zip(*values.values())]
    return [dict(zip(keys, row)) for row in itertools.product(*values.values())]


def variant_name(changed: dict[str, Any]) -> str:
    """`{stages.train.lr: 0.01, stages.train.model.kwargs.width: 8}` -> `lr-0.01_width-8`: each
    key's last part (the full key where two would read alike), characters a folder and job name
    can hold."""
    last = [k.rsplit(".", 1)[-1] for k in changed]
    names = [k.replace(".", "-") if last.count(s) > 1 else s for k, s in zip(changed, last)]
    text = "_".join(f"{n}-{_text(v)}" for n, v in zip(names, changed.values()))
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "variant"
    return text if text[0].isalnum() else "v" + text


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "-".join(_text(v) for v in value) or "none"
    if isinstance(value, dict):
        return "-".join(f"{k}-{_text(v)}" for k, v in value.items()) or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def expand(exp: Experiment, sweep_items: list[str], variant: str, overrides: list[str]) -> tuple[list[Variant], int]:
    """The variants a submit asks for (none: a plain run) and the array limit (0 = none)."""
    block = exp.raw.get("sweep") or {}
    unknown = set(block) - {"mode", "values", "limit"}
    if unknown:
        raise ConfigError("sweep", f"unknown keys {sorted(unknown)}; valid: mode, values, limit")
    written = block.get("values") or {}
    if not isinstance(written, dict):
        raise ConfigError("sweep.values", f"expected a mapping KEY: [V1, V2, ...], got {written!r}")
    values = parse_sweep_items(sweep_items) if sweep_items else dict(written)
    limit = _array_limit(block.get("limit"))
    if not values:
        if not variant:
            return [], 0
        changed = {o.partition("=")[0]: yaml.safe_load(o.partition("=")[2]) for o in overrides
                   if not o.startswith("paths.")}
        return [Variant(_checked_name(variant), changed, [])], limit
    combos = combinations(values, block.get("mode", "grid") if not sweep_items else "grid")
    out = []
    for combo in combos:
        name = variant_name(combo)
        # JSON is YAML: each value reads back as the type it was (0.01, "small_cnn", true, [1, 2])
        out.append(Variant(f"{variant}_{name}" if variant else name, combo,
                           [f"{k}={json.dumps(v)}" for k, v in combo.items()]))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ConfigError("sweep", f"two combinations would share a name: {names}")
    return out, limit


def _array_limit(limit: Any) -> int:
    """`sweep.limit`: the most array tasks of a varied stage running at once (0: no limit)."""
    if limit is None:
        return 0
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError("sweep.limit", f"expected a whole number: the most tasks running at once (0, or "
                          f"left out: no limit), got {limit!r}")
    return limit


def _checked_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError("--variant", f"name {name!r} may only use letters, digits, '_', '.', '-' "
                          "(first: letter or digit)")
    return name


def load_variants(config_path: str | Path, overrides: list[str], variants: list[Variant]) -> list[Experiment]:
    """Each variant as an Experiment whose stage folders are shared or its own (module doc)."""
    as_written = config.load(config_path, [o for o in overrides if o.startswith("paths.")])
    written_fps = fingerprints(as_written)
    exps, owner_of = [], {}          # (stage, fingerprint) -> the folder of its first variant
    for v in variants:
        try:
            exp = config.load(config_path, list(overrides) + v.overrides)
        except ConfigError as err:
            raise _from_sweep(err, v) from None
        fps = fingerprints(exp)
        dirs = {}
        for stage in exp.stages:
            if fps[stage] == written_fps.get(stage) or contract.experiment_wide(exp.stages[stage].kind):
                dirs[stage] = as_written.stage_dir(stage)
            else:
                dirs[stage] = owner_of.setdefault((stage, fps[stage]),
                                                  paths.variant_dir(exp.paths.results, exp.name, v.name) / stage)
        raw = copy.deepcopy(exp.raw)
        raw["variant"] = {"name": v.name, "changed": v.changed, "dirs": {s: str(d) for s, d in dirs.items()}}
        exps.append(config.from_raw(raw, exp.source))
    return exps


def _from_sweep(err: ConfigError, variant: Variant) -> ConfigError:
    """A value of the sweep is wrong: say so, not "from --set" (the user wrote no such --set)."""
    source = err.source or ""
    for item in variant.overrides:
        source = source.replace(f"(from --set {item})", f"(from the sweep, variant {variant.name}: {item})")
    return ConfigError(err.key, err.message, source)


def write_index(exp: Experiment) -> None:
    """results/<exp>/variants/<name>/variant.json: what status and report read back."""
    safeio.atomic_write_json(paths.variant_dir(exp.paths.results, exp.name, exp.variant) / paths.VARIANT_INDEX, {
        "name": exp.variant, "changed": exp.raw["variant"]["changed"],
        "dirs": exp.raw["variant"]["dirs"], "raw": exp.raw})


def recorded_experiments(exp: Experiment) -> list[Experiment]:
    """The recorded variants of this experiment, loaded (those whose config no longer loads are left out)."""
    out = []
    for index in state.recorded_variants(Path(exp.paths.results), exp.name):
        try:
            out.append(config.from_raw(index["raw"], f"{exp.source} (variant {index['name']})"))
        except ConfigError:
            continue
    return out
