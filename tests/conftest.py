"""Fixtures every test may take: an isolated workspace per test and the real local SLURM cluster.
The helpers the tests share are in tests/support/."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.cli import REPO


@pytest.fixture
def workspace(tmp_path):
    """Separate results/logs/data folders; `overrides` points an experiment at them."""
    ws = {k: tmp_path / k for k in ("results", "logs", "data", "cache")}
    for p in ws.values():
        p.mkdir()
    ws["overrides"] = [f"paths.{k}={ws[k]}" for k in ("results", "logs", "data", "cache")]
    ws["root"] = tmp_path
    return ws


@pytest.fixture(scope="session")
def slurm():
    """The real cluster. Under CI=true it must be there: a missing cluster fails, never skips."""
    from pipeline.executors.slurm.executor import SlurmExecutor
    ok, why = SlurmExecutor.reachable()
    if not ok and os.geteuid() == 0:
        subprocess.run(["bash", str(REPO / "scripts" / "slurm_cluster.sh"), "up"], check=False)
        ok, why = SlurmExecutor.reachable()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the local SLURM cluster but it is not reachable: {why}")
        pytest.skip(f"no SLURM cluster: {why} (run scripts/slurm_cluster.sh up as root)")
    return True


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium (tests/support/browser.py). Under CI=true as root it must be there (the
    test command's set-up installs it); elsewhere a missing one skips, saying how to install it."""
    from tests.support.browser import headless_chromium, missing
    why = missing()
    if why:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(f"CI needs the headless browser: {why}")
        pytest.skip(f"no headless browser: {why}")
    driver = headless_chromium()
    yield driver
    driver.quit()


@pytest.hookimpl(tryfirst=True)       # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items):
    """A test that takes the `slurm` fixture (itself or through another fixture) needs the
    cluster: mark it `slurm`, so `-m slurm` / `-m "not slurm"` split the suite exactly.

    With pytest-xdist (`-n 2 --dist loadgroup`, scripts/test.sh) every module with a SLURM test
    runs on one worker, one test after another: they share the one 2-CPU node and assert on its
    queue (queue wait, nothing left in squeue). The other modules are each a group (a module-scoped
    fixture is built once) and run on the other worker meanwhile, in the time SLURM tests wait; so
    does a test marked `beside_slurm`, whose jobs ask for the partition `side` (a node of its own).
    Groups are handed out in collection order (`--no-loadscope-reorder`): the SLURM group, which
    the first test module starts, to one worker, the `beside_slurm` test right after to the other."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)
    slurm_modules = {item.module.__name__ for item in items if item.get_closest_marker("slurm")}
    for item in items:
        module = item.module.__name__
        group = "slurm" if module in slurm_modules else module
        if item.get_closest_marker("beside_slurm"):        # its jobs run on a node of their own
            group = "beside-slurm"
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(optionalhook=True)       # a pytest-xdist hook, run where the tests are handed out
def pytest_xdist_node_collection_finished(node, ids):
    """Every test has a group, which xdist appends to its id (`...@slurm`). Where it could not
    (pytest-xdist issue 1386: pytest 9.2), SLURM tests would run side by side: stop, saying why."""
    if node.config.getvalue("dist") == "loadgroup" and not all("@" in i for i in ids):
        pytest.exit("pytest-xdist did not group the tests (--dist loadgroup has no effect with this pytest, "
                    "pytest-xdist issue 1386): install pytest<9.2 as pyproject.toml asks, or run without -n",
                    returncode=4)
