"""The engine's seams, checked on the source (issue 8): SLURM commands run only in the SLURM
executor, no import cycles among the project's modules, the engine and the stages meet only at
the stage contract, and the engine keeps no ML vocabulary beyond the efficiency columns it owns."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from conftest import REPO

SLURM_COMMANDS = {"sacct", "squeue", "sinfo", "scancel", "scontrol"}
SLURM_MODULE = REPO / "pipeline" / "executors" / "slurm.py"
# Functions that run or look up a program given as a string (subprocess, os, shutil, asyncio).
RUNNERS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput", "system",
           "popen", "which", "create_subprocess_exec", "create_subprocess_shell"}

# What jobs/ may import from the engine: the stage contract and the atomic writers.
JOBS_MAY_IMPORT = {"pipeline.contract", "pipeline.core.state"}
# Imports that break that rule today, each with why it is tolerated and how it goes away.
KNOWN_EXCEPTIONS = {
    ("jobs.stages.evaluate", "pipeline.core.schema"): "ConfigError, raised by a params __post_init__; "
                                                 "pipeline.contract re-exports it, import it from there",
}

# Words of the model-training trade, matched in pipeline/'s code, strings, docstrings and comments
# (each identifier split at `_` and digits, so `resnet18` and `val_acc` are caught too).
ML_WORDS = {"acc", "accuracy", "epoch", "epochs", "resnet", "logit", "logits", "torch", "torchvision", "timm",
            "cifar", "mnist", "emnist", "imagenet", "optimizer", "backbone", "softmax", "finetune", "vit"}
# The allow-list: efficiency.csv columns the engine owns (pipeline/accounting.py COLUMNS). It
# writes them for any stage, copies metrics of these names from metrics.json and reports them, so
# their names are the engine's words; no other use of an ML word is.
OWNED_COLUMNS = {"epochs", "samples_per_epoch", "val_acc", "test_acc"}


def _python_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# --- (a) SLURM commands live behind the SLURM executor -------------------------------------------

def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def slurm_command_calls(source: str) -> list[tuple[int, str]]:
    """(line, command) where the code runs or looks up a SLURM command: a list or tuple literal
    that starts with one (an argv, wherever it is built), or a string starting with one handed to
    a program runner (`shutil.which("sacct")`, `os.system("squeue -h")`). Messages, docstrings
    and comments that merely name a command are not calls."""
    found = []
    for node in ast.walk(ast.parse(source)):
        first = None
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            first = node.elts[0]
        elif isinstance(node, ast.Call) and node.args and _called_name(node) in RUNNERS:
            first = node.args[0]
            if isinstance(first, ast.JoinedStr) and first.values:
                first = first.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.split():
            word = first.value.split()[0].rsplit("/", 1)[-1]
            if word in SLURM_COMMANDS:
                found.append((node.lineno, word))
    return found


def test_the_detector_finds_commands_however_they_are_run():
    source = ('subprocess.run(["sacct", "-j", ids])\nshutil.which("squeue")\nos.system(f"scontrol ping {x}")\n'
              'cmd = ("/usr/bin/scancel", job)\nprint("sinfo failed")\nlog.append(f"sacct {x}")\n'
              '"""docstring naming sinfo"""\n')
    assert sorted(slurm_command_calls(source)) == [(1, "sacct"), (2, "squeue"), (3, "scontrol"), (4, "scancel")]
    assert {c for _, c in slurm_command_calls(SLURM_MODULE.read_text())} == SLURM_COMMANDS


def test_only_the_slurm_executor_runs_slurm_commands():
    offenders = [f"{_rel(path)}:{line}: {cmd}" for path in _python_files("pipeline") if path != SLURM_MODULE
                 for line, cmd in slurm_command_calls(path.read_text())]
    assert not offenders, "SLURM commands outside pipeline/executors/slurm.py:\n" + "\n".join(offenders)


# --- (b) no import cycles ---------------------------------------------------------------------------

def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports, at module level or inside functions. `from pkg import
    name` is an import of `pkg.name` when that is a module, else of `pkg`; relative imports are
    resolved against the file's package."""
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:   # `import pkg.mod.Thing` -> its deepest module
                name = name.rpartition(".")[0]
            if name and name != own:
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in ("pipeline", "jobs") for p in _python_files(package)}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets, each as its path (first module repeated at the end).
    Iterative: a deep chain of imports must not hit the recursion limit."""
    cycles, done = [], set()
    for root in sorted(graph):
        if root in done:
            continue
        path, on_path = [root], {root}
        stack = [iter(sorted(graph[root]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif nxt in on_path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return cycles


def test_the_cycle_finder_reports_the_path():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "pipeline.runner" in graph["pipeline.executors.slurm.executor"]       # inside StageJob.__call__
    assert "pipeline.executors.slurm.sacct" in graph["pipeline.executors.slurm.executor"]   # `from ..accounting import`
    assert any("pipeline.contract" in ts for m, ts in graph.items() if m.startswith("jobs."))   # absolute


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# --- (c) the engine and the stages meet at the stage contract ----------------------------------------

def test_pipeline_never_imports_jobs():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.startswith("pipeline")
                   for t in ts if t.split(".")[0] == "jobs")
    assert not wrong, "the engine imports stage code:\n" + "\n".join(wrong)


def test_jobs_import_only_the_stage_contract_from_pipeline():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.split(".")[0] == "jobs"
                   for t in ts if t.split(".")[0] == "pipeline" and t not in JOBS_MAY_IMPORT
                   and (m, t) not in KNOWN_EXCEPTIONS)
    assert not wrong, f"jobs/ may import only {sorted(JOBS_MAY_IMPORT)} from pipeline/:\n" + "\n".join(wrong)


# --- (d) no ML vocabulary in the engine ------------------------------------------------------------

def ml_words(source: str) -> list[tuple[int, str]]:
    """(line, identifier) for each identifier-like word of the code, its strings and comments
    that contains an ML word and is not an owned efficiency column."""
    hits = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT) and \
                tok.type != getattr(tokenize, "FSTRING_MIDDLE", None):
            continue
        for word in re.findall(r"[A-Za-z0-9_]+", tok.string):
            parts = {p for p in re.split(r"[_\d]+", word.lower()) if p}
            if parts & ML_WORDS and word not in OWNED_COLUMNS:
                hits.append((tok.start[0], word))
    return hits


def test_the_vocabulary_check_sees_identifiers_strings_and_comments():
    source = 'x = "resnet18"  # logits\ntop1_accuracy = 1\ny = "val_acc"\n'
    assert ml_words(source) == [(1, "resnet18"), (1, "logits"), (2, "top1_accuracy")]


def test_owned_columns_are_efficiency_columns():
    from pipeline.accounting.record import COLUMNS
    assert OWNED_COLUMNS <= set(COLUMNS)


def test_pipeline_has_no_ml_vocabulary():
    offenders = [f"{_rel(path)}:{line}: {word}" for path in _python_files("pipeline")
                 for line, word in ml_words(path.read_text())]
    assert not offenders, ("ML vocabulary in the engine (allowed: the efficiency columns "
                           f"{sorted(OWNED_COLUMNS)}):\n" + "\n".join(offenders))


def test_registering_the_kinds_does_not_import_torch():
    """Every CLI call and every stage start registers all kinds; stages that need no torch
    (download, prepare, report) and `status`/`submit` must not pay its import (~2.5 s here)."""
    import subprocess
    import sys
    code = ("import sys, jobs.stages, jobs.models, pipeline.cli.main; "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
