"""The engine's seams, checked on the source: SLURM lives in its executor package (its commands,
its name), no import cycles among the project's modules (modules loaded by name included), the
engine and the stages meet only at the stage contract, the library stands on its own, every
per-stage file name is written once, and the engine keeps no ML vocabulary beyond the efficiency
columns it owns."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from tests.support.cli import REPO

SLURM_COMMANDS = {"sacct", "squeue", "sinfo", "scancel", "scontrol", "srun", "sbatch"}
SLURM_PACKAGE = REPO / "pipeline" / "executors" / "slurm"
# Outside the SLURM package, "slurm" may appear only in these files, for these reasons.
SAYS_SLURM = {
    "pipeline/executors/__init__.py": "the registration line of the backend (and its imports)",
    "pipeline/executors/local.py": "the hint that tells a user which executor runs several processes",
    "pipeline/cli/main.py": "the command line's help",
}
# Functions that run or look up a program given as a string (subprocess, os, shutil, asyncio).
RUNNERS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput", "system",
           "popen", "which", "create_subprocess_exec", "create_subprocess_shell"}

# What the stage modules (jobs/stages/) may import from the engine: the stage contract alone.
# The rest of jobs/ (the library) imports nothing from it.
STAGES_MAY_IMPORT = {"pipeline.contract"}

# Words of the model-training trade, matched in pipeline/'s code, strings, docstrings and comments
# (each identifier split at `_` and digits, so `resnet18` and `val_acc` are caught too).
ML_WORDS = {"acc", "accuracy", "epoch", "epochs", "resnet", "logit", "logits", "torch", "torchvision", "timm",
            "cifar", "mnist", "emnist", "imagenet", "optimizer", "backbone", "softmax", "finetune", "vit"}
# The allow-list: efficiency.csv columns the engine owns (pipeline/accounting/record.py COLUMNS). It
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
    found = {c for path in SLURM_PACKAGE.glob("*.py") for _, c in slurm_command_calls(path.read_text())}
    assert found >= SLURM_COMMANDS - {"sbatch"}    # sbatch runs through submitit


def test_only_the_slurm_executor_runs_slurm_commands():
    offenders = [f"{_rel(path)}:{line}: {cmd}" for package in ("pipeline", "jobs", "safeio")
                 for path in _python_files(package) if SLURM_PACKAGE not in path.parents
                 for line, cmd in slurm_command_calls(path.read_text())]
    assert not offenders, "SLURM commands outside pipeline/executors/slurm/:\n" + "\n".join(offenders)


def test_no_module_outside_the_slurm_package_says_slurm():
    offenders = [f"{_rel(path)}:{i}: {line.strip()}" for package in ("pipeline", "safeio")
                 for path in _python_files(package)
                 if SLURM_PACKAGE not in path.parents and _rel(path) not in SAYS_SLURM
                 for i, line in enumerate(path.read_text().splitlines(), 1) if "slurm" in line.lower()]
    assert not offenders, "SLURM named outside its package:\n" + "\n".join(offenders)


# --- (b) no import cycles ---------------------------------------------------------------------------

def _by_name(node: ast.AST) -> list[str]:
    """`importlib.import_module("a.b")` / `import_module("a.b")` / `__import__("a.b")`: a module
    loaded by a literal name is an import too."""
    if isinstance(node, ast.Call) and _called_name(node) in ("import_module", "__import__") and node.args:
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return [first.value]
    return []


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports, at module level or inside functions, or loads by a
    literal name. `from pkg import name` is an import of `pkg.name` when that is a module, else of
    `pkg`; relative imports are resolved against the file's package."""
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
            names = _by_name(node)
        for name in names:
            while name and name not in modules:   # `import pkg.mod.Thing` -> its deepest module
                name = name.rpartition(".")[0]
            if name and name != own:
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in ("pipeline", "jobs", "safeio") for p in _python_files(package)}
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


def test_the_graph_sees_function_level_and_by_name_imports():
    graph = import_graph()
    assert "pipeline.runner" in graph["pipeline.cli.main"]              # inside cmd_run
    assert "pipeline.kinds" in graph["pipeline.core.config"]            # importlib.import_module, by name
    assert any("pipeline.contract" in ts for m, ts in graph.items() if m.startswith("jobs."))   # absolute
    assert _by_name(ast.parse("importlib.import_module('a.b')").body[0].value) == ["a.b"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# --- (c) the engine and the stages meet at the stage contract ----------------------------------------

def test_pipeline_never_imports_jobs():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.startswith("pipeline")
                   for t in ts if t.split(".")[0] == "jobs")
    assert not wrong, "the engine imports stage code:\n" + "\n".join(wrong)


def _is_stage_module(module: str) -> bool:
    return module.startswith("jobs.stages")


def test_stage_modules_import_only_the_stage_contract_from_pipeline():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if _is_stage_module(m)
                   for t in ts if t.split(".")[0] == "pipeline" and t not in STAGES_MAY_IMPORT)
    assert not wrong, f"jobs/stages may import only {sorted(STAGES_MAY_IMPORT)} from pipeline/:\n" + "\n".join(wrong)


def test_the_library_imports_nothing_from_the_engine():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.split(".")[0] == "jobs"
                   and not _is_stage_module(m) for t in ts if t.split(".")[0] == "pipeline")
    assert not wrong, "library modules under jobs/ import the engine:\n" + "\n".join(wrong)


def test_safeio_is_neutral_ground():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.startswith("safeio") for t in ts
                   if t.split(".")[0] in ("pipeline", "jobs"))
    assert not wrong, "\n".join(wrong)


def test_stages_never_import_other_stages():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if _is_stage_module(m) and m != "jobs.stages"
                   for t in ts if _is_stage_module(t) and t != "jobs.stages")
    assert not wrong, "stage modules import each other (move what they share into the library):\n" + "\n".join(wrong)


def test_no_folder_circles_in_the_library():
    """training/ and models/ (and every other library folder) import each other one way only."""
    graph = import_graph()
    folders: dict[str, set[str]] = {}
    for m, ts in graph.items():
        if m.count(".") >= 2 and m.startswith("jobs.") and not _is_stage_module(m):
            folder = ".".join(m.split(".")[:2])
            folders.setdefault(folder, set()).update(".".join(t.split(".")[:2]) for t in ts
                                                     if t.startswith("jobs.") and not _is_stage_module(t))
    for folder, targets in folders.items():
        targets.discard(folder)
    cycles = find_cycles(folders)
    assert not cycles, "library folders import each other:\n" + "\n".join(" -> ".join(c) for c in cycles)


# --- (e) one owner for every file name, cost formula and table writer ---------------------------------

# Names the engine writes into a stage folder or results/: pipeline/core/paths.py names them.
OWNED_FILE_NAMES = {"_SUCCESS", "_CORRUPT", "job.json", "attempts.json", "accounting.json", "accounting_extra.json",
                    "metrics.json", "config.yaml", "report.md", "checkpoint.pt", ".run.lock", ".finish.lock",
                    ".submit.lock", "_resolved.yaml", "efficiency.csv", "variant.json", "comparison.csv",
                    "comparison.png"}
PATHS_MODULE = REPO / "pipeline" / "core" / "paths.py"


def file_name_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) for each string constant of the code (docstrings and prose aside: a name is a
    text without spaces) that is, or ends a path in, a file name the engine owns."""
    tree = ast.parse(source)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                  and not re.search(r"\s", node.value) and node.value.rsplit("/", 1)[-1] in OWNED_FILE_NAMES)


def test_the_file_name_check_sees_paths_not_docstrings():
    source = '"""Writes report.md."""\nx = out / "accounting.json"\ny = "results/efficiency.csv"\nz = "a report.md"\n'
    assert file_name_literals(source) == [(2, "accounting.json"), (3, "results/efficiency.csv")]


def test_per_stage_file_names_are_written_once():
    offenders = [f"{_rel(path)}:{line}: {name!r}" for package in ("pipeline", "jobs") for path in _python_files(package)
                 if path != PATHS_MODULE for line, name in file_name_literals(path.read_text())]
    assert not offenders, "file names the engine owns, spelled outside pipeline/core/paths.py:\n" + "\n".join(offenders)


def test_the_cost_formula_is_written_once():
    """GPU- and CPU-hours: pipeline/accounting/record.py alone divides by the hour."""
    offenders = [f"{_rel(path)}:{i}" for package in ("pipeline", "jobs") for path in _python_files(package)
                 if path.name != "record.py" for i, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"/\s*(3600|SECONDS_PER_HOUR)\b", line)]
    assert not offenders, "hours computed outside pipeline/accounting/record.py: " + ", ".join(offenders)


def test_one_markdown_table_writer():
    offenders = [f"{_rel(path)}:{i}" for package in ("pipeline", "jobs") for path in _python_files(package)
                 for i, line in enumerate(path.read_text().splitlines(), 1) if "---|" in line]
    assert not offenders, "markdown tables written by hand (use safeio.markdown.markdown_table): " + ", ".join(offenders)


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
    code = ("import sys, jobs.stages, jobs.models, pipeline.__main__; "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------- the tests' layout
def test_unit_tests_mirror_the_code():
    """tests/<package path>/test_<module>.py tests <package path>/<module>.py (test_init.py: the
    package's __init__.py); end-to-end tests live in tests/experiments/, shared helpers in
    tests/support/, and no test file sits anywhere else (tests/test_architecture.py aside)."""
    tests = REPO / "tests"
    misplaced = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        if rel.parts[0] in ("experiments",) or rel == Path("test_architecture.py"):
            continue
        module = rel.stem.removeprefix("test_")
        code = REPO.joinpath(*rel.parts[:-1], "__init__.py" if module == "init" else f"{module}.py")
        if rel.parts[0] not in ("pipeline", "jobs", "safeio") or not code.is_file():
            misplaced.append(f"{rel} (no {code.relative_to(REPO)})")
    assert not misplaced, f"test files that name no module they test: {misplaced}"
