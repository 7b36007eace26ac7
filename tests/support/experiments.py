"""Experiment YAML files for tests: `write_experiment` writes one (a dedented text, or a dict as
YAML), and experiments more than one test module submits."""
from __future__ import annotations

import textwrap
from pathlib import Path

import yaml


def write_experiment(folder: Path, body: str | dict, name: str = "exp.yaml") -> Path:
    """folder/name holding `body`: YAML text (dedented) or a dict (dumped in its key order)."""
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(body, sort_keys=False) if isinstance(body, dict) else textwrap.dedent(body))
    return path


# `boom` fails; `after` and `last` can never run (the last also waits on a stage that succeeded).
FAILING_CHAIN = """
name: breaks
resources: {time: "00:05:00", cpus_per_task: 1, mem: 500M}
stages:
  fine:
    kind: command
    argv: [python, -c, "print('ok')"]
  boom:
    kind: command
    needs: [fine]
    argv: [python, -c, "import sys; print('failing on purpose'); sys.exit(3)"]
  after:
    kind: command
    needs: [boom]
    argv: [python, -c, "print('never')"]
  last:
    kind: command
    needs: [after, fine]
    argv: [python, -c, "print('never either')"]
"""
