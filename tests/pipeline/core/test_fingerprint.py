"""A stage is stale when any project code its kind imports changes, transitively (issue 8).

A small package in tmp_path stands in for jobs/: `fake_train` runs fakepkg/stage.py, which
imports the shared loop lazily inside run(); the loop imports a helper two packages down.
`fake_prep` and fakepkg/other.py import none of it.
"""
from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest

from pipeline import contract
from pipeline.core import config, fingerprint
from pipeline.core.fingerprint import fingerprints
from tests.support.cli import REPO, cli, sets
from tests.support.experiments import write_experiment

QUICKSTART = REPO / "configs" / "quickstart.yaml"
FILES = {
    "fakepkg/__init__.py": "from . import other, prep, stage  # registers the kinds, as jobs/ does\n",
    "fakepkg/stage.py": """
        from dataclasses import dataclass

        from pipeline.contract import StageContext, register


        @dataclass
        class TrainParams:
            epochs: int = 1


        @register("fake_train", TrainParams)
        def run(p: TrainParams, ctx: StageContext) -> dict:
            from .loop import fit          # lazy, as the real stage modules do
            return {"loss": fit(p.epochs)}
        """,
    "fakepkg/loop.py": """
        from fakepkg.util.numbers import halve


        def fit(epochs):
            return halve(epochs)
        """,
    "fakepkg/util/__init__.py": "",
    "fakepkg/util/numbers.py": """
        import math                        # not project code: not followed


        def halve(x):
            from .. import constants       # relative, two levels
            return x / 2 * constants.ONE
        """,
    "fakepkg/constants.py": "ONE = 1\n",
    "fakepkg/prep.py": """
        from dataclasses import dataclass

        from pipeline.contract import register


        @dataclass
        class PrepParams:
            size: int = 1


        @register("fake_prep", PrepParams)
        def run(p, ctx):
            return {}
        """,
    "fakepkg/other.py": "def unrelated():\n    return 0\n",
}


@pytest.fixture
def fakepkg(tmp_path, monkeypatch):
    """The package on sys.path and imported; kinds and modules removed again afterwards."""
    for rel, text in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    fingerprint.clear_cache()
    importlib.import_module("fakepkg")
    yield tmp_path
    for kind in ("fake_train", "fake_prep"):
        contract._KINDS.pop(kind, None)
    for name in [m for m in sys.modules if m == "fakepkg" or m.startswith("fakepkg.")]:
        del sys.modules[name]
    fingerprint.clear_cache()


def versions() -> dict[str, str]:
    fingerprint.clear_cache()  # a new process would see the edit; this one cached the old source
    return {k: contract.get(k).code_version() for k in ("fake_train", "fake_prep")}


def append(path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_closure_follows_lazy_absolute_and_relative_imports(fakepkg):
    assert contract.get("fake_train").code_closure() == [
        "fakepkg.constants", "fakepkg.loop", "fakepkg.stage", "fakepkg.util.numbers"]
    assert contract.get("fake_prep").code_closure() == ["fakepkg.prep"]


@pytest.mark.parametrize("edited, changes", [
    ("fakepkg/loop.py", {"fake_train"}),            # the shared loop: training reruns
    ("fakepkg/util/numbers.py", {"fake_train"}),    # two imports away
    ("fakepkg/constants.py", {"fake_train"}),
    ("fakepkg/stage.py", {"fake_train"}),
    ("fakepkg/prep.py", {"fake_prep"}),
    ("fakepkg/other.py", set()),                    # unrelated: nothing reruns
    ("fakepkg/__init__.py", set()),                 # imports every module, imported by none
])
def test_code_version_changes_with_what_the_kind_imports(fakepkg, edited, changes):
    before = versions()
    append(fakepkg / edited, "\n# edited\n")
    after = versions()
    assert {k for k in before if before[k] != after[k]} == changes


def test_code_version_is_cached_per_process(fakepkg):
    first = contract.get("fake_train").code_version()
    append(fakepkg / "fakepkg" / "loop.py", "\n# edited\n")
    assert contract.get("fake_train").code_version() == first   # computed once per process


def test_editing_the_loop_reruns_training_and_nothing_else(fakepkg, workspace):
    config = write_experiment(fakepkg, {"name": "fake", "stage_modules": ["fakepkg"], "stages": {
        "prep": {"kind": "fake_prep"}, "train": {"kind": "fake_train", "needs": ["prep"]}}}, "fake.yaml")
    args = ["-c", str(config), *sets(workspace["overrides"])]
    env = {"PYTHONPATH": str(fakepkg)}

    def states() -> dict[str, str]:
        return {r["stage"]: r["state"] for r in json.loads(cli("status", "--json", *args, env=env).stdout)}

    def ran() -> list[str]:
        out = cli("run", "all", *args, env=env).stdout
        return [s for s in ("prep", "train") if f"[pipeline] {s}: up to date" not in out]

    assert ran() == ["prep", "train"]
    append(fakepkg / "fakepkg" / "other.py", "\n# edited\n")
    assert states() == {"prep": "done", "train": "done"} and ran() == []
    append(fakepkg / "fakepkg" / "loop.py", "\n\ndef unused():\n    return 1\n")
    assert states() == {"prep": "done", "train": "stale"}
    assert ran() == ["train"]
    assert states() == {"prep": "done", "train": "done"}


def test_real_training_kind_includes_the_shared_loop():
    config.load_kind_modules(["jobs"])
    closure = contract.get("train").code_closure()
    assert {"jobs.stages.train", "jobs.training.loop", "jobs.models.registry"} <= set(closure)
    # jobs/__init__ and jobs/stages/__init__ import every stage module: not followed
    assert not {"jobs.stages.deploy", "jobs.stages", "jobs"} & set(closure)
    assert "jobs.training.loop" in contract.get("evaluate").code_closure()


def test_fingerprint_changes_with_config_and_propagates_downstream():
    base = fingerprints(config.load(QUICKSTART))
    changed = fingerprints(config.load(QUICKSTART, ["stages.train.epochs=3"]))
    assert base["download"] == changed["download"] and base["preprocess"] == changed["preprocess"]
    assert base["train"] != changed["train"]
    assert base["evaluate"] != changed["evaluate"]
    assert base["report"] == changed["report"]     # order-only: reruns when what it follows reruns, see below
    seeded = fingerprints(config.load(QUICKSTART, ["seed=1"]))
    assert all(seeded[s] != base[s] for s in base)


def test_fingerprint_ignores_resources():
    base = fingerprints(config.load(QUICKSTART))
    moved = fingerprints(config.load(QUICKSTART, ["stages.train.resources.time=02:00:00"]))
    assert base == moved


def test_the_report_has_one_fingerprint_for_every_variant():
    """It reads nothing of its needs and runs once for all variants: a changed upstream stage
    changes every stage after it but the report (a finished sweep's report is not `stale`)."""
    base = fingerprints(config.load(QUICKSTART))
    varied = fingerprints(config.load(QUICKSTART, ["stages.train.lr=0.01"]))
    assert [s for s in base if base[s] != varied[s]] == ["train", "evaluate"]
