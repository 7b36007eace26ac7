"""What makes a stage stale: its parameters, the seed, the data folder, its upstream stages, and
the project code its kind runs.

The code of a kind is its module plus every module of the project that it imports, transitively,
found by reading import statements (`ast`, nothing is imported), including imports inside
functions (stage modules import their library lazily inside `run`). "The project" is the folder
that holds the kind's top-level package (the repo root for pipeline/, jobs/ and stage_modules):
third-party and standard-library modules are not followed. `from pkg.mod import x` counts
pkg/mod.py, not pkg/__init__.py (which, for jobs/, imports every stage module and would tie
every kind to all the others). The engine (`pipeline.*`) is not followed from a kind outside it:
the stage contract and the state files do not change what a stage computes, and following them
would make every result stale on any engine edit. Everything is computed once per process: a `run all` of 1,000 stages
reads each source file once, and fingerprints are one pass over the stages in topological order.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

_CLOSURES: dict[str, tuple[tuple[str, Path], ...]] = {}   # kind module -> its code closure
_VERSIONS: dict[str, str] = {}                             # kind module -> code version
_IMPORTS: dict[Path, list[tuple[str, list[str]]]] = {}     # source file -> its import statements
_SITE_DIRS = ("site-packages", "dist-packages")


def fingerprints(exp) -> dict[str, str]:
    """Fingerprint of every stage: resolved params, seed, data folder, code version, upstream.

    One pass in topological order; each stage's payload holds only its own params and its direct
    upstream fingerprints (which already cover everything further up), so the whole is linear.
    """
    from pipeline.core.dag import topological_order
    out: dict[str, str] = {}
    for name in topological_order(exp.stages):
        stage = exp.stages[name]
        payload = {
            "kind": stage.kind,
            "code": code_version(stage.module),
            "params": stage.params_dict(),
            "seed": exp.seed,
            "data": exp.paths.data,
            # An order-only stage (the report) reads nothing of its needs, and is one run for every
            # variant: its fingerprint leaves them out, else each variant would see it stale.
            # It reruns all the same whenever a submit runs anything (pipeline/cli/submit.py).
            "upstream": {} if stage.order_only else {d: out[d] for d in sorted(stage.needs)},
        }
        out[name] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


def code_version(module: str) -> str:
    """Hash of the sources of `module`'s code closure (module names and file contents, sorted)."""
    if module not in _VERSIONS:
        digest = hashlib.sha256()
        for name, path in code_closure(module):
            digest.update(f"{name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
        _VERSIONS[module] = digest.hexdigest()[:12]
    return _VERSIONS[module]


def code_closure(module: str) -> tuple[tuple[str, Path], ...]:
    """(module name, source file) of `module` and every project module it imports, transitively,
    sorted by name. Iterative: the import graph may be deep and may have cycles."""
    if module in _CLOSURES:
        return _CLOSURES[module]
    root, allowed_top, origin = _project_root(module)
    found = {module: _module_file(root, module) or origin}   # origin: e.g. a script's __main__
    todo = [module]
    while todo:
        name = todo.pop()
        for dep in _resolved_imports(root, name, found[name]):
            if dep not in found and (allowed_top is None or dep.split(".")[0] == allowed_top) \
                    and not _engine_of_another(module, dep):
                found[dep] = _module_file(root, dep)
                todo.append(dep)
    _CLOSURES[module] = tuple(sorted(found.items()))
    return _CLOSURES[module]


ENGINE = "pipeline"


def _engine_of_another(kind_module: str, dep: str) -> bool:
    return dep.split(".")[0] == ENGINE and kind_module.split(".")[0] != ENGINE


def clear_cache() -> None:
    """Forget computed closures and versions (tests that edit sources within one process)."""
    _CLOSURES.clear()
    _VERSIONS.clear()
    _IMPORTS.clear()


def _project_root(module: str) -> tuple[Path, str | None, Path]:
    """The folder that holds `module`'s top-level package; for an installed package (root is a
    site-packages folder) also the one top-level name that may be followed; the module's file."""
    mod = sys.modules.get(module)
    origin = getattr(mod, "__file__", None) or getattr(importlib.util.find_spec(module), "origin", None)
    if not origin:
        raise ValueError(f"module {module!r} has no source file to fingerprint")
    path = Path(origin).resolve()
    depth = module.count(".") + (1 if path.name == "__init__.py" else 0)
    root = path.parents[depth]
    return root, (module.split(".")[0] if root.name in _SITE_DIRS else None), path


def _module_file(root: Path, name: str) -> Path | None:
    """root/a/b.py or root/a/b/__init__.py for module a.b; None when it is not in the project."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.parent / f"{base.name}.py", base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolved_imports(root: Path, name: str, path: Path) -> list[str]:
    """Project modules that the source of module `name` imports anywhere in its body."""
    out = []
    for base, names in _imports(name, path):
        subs = [f"{base}.{n}" for n in names if n != "*" and _module_file(root, f"{base}.{n}")]
        # `from pkg import sub` imports pkg/sub.py; `from pkg import func` and `import pkg` need pkg
        if (not names or len(subs) < len(names)) and _module_file(root, base):
            subs.append(base)
        out += subs
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import statement; `import a.b` -> ("a.b", [])."""
    if path not in _IMPORTS:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: list[tuple[str, list[str]]] = []
        for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
            if isinstance(node, ast.Import):
                found += [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(package, node.module, node.level)
                if base:
                    found.append((base, [alias.name for alias in node.names]))
        _IMPORTS[path] = found
    return _IMPORTS[path]


def _absolute(package: str, module: str | None, level: int) -> str | None:
    """The absolute name of `from <level dots><module> import ...` inside `package`."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or (level - 1 == len(parts) and not module):
        return None  # beyond the top-level package: Python would refuse it too
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))
