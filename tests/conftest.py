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


def pytest_collection_modifyitems(items):
    """A test that takes the `slurm` fixture (itself or through another fixture) needs the
    cluster: mark it `slurm`, so `-m slurm` / `-m "not slurm"` split the suite exactly."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)
