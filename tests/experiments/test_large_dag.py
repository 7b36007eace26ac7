"""Large DAGs (issue 9 item 10): deep chains neither recurse nor go quadratic.

Stages are of kind `noop` (tests/support/noop_stages.py). Values are asserted, not timings; the times are
in benchmarks/large_dag_bench.py.
"""
from __future__ import annotations

import json
from types import SimpleNamespace as S

import yaml

from pipeline.cli.status import _failed_upstream
from pipeline.core import config, dag
from pipeline.core.fingerprint import fingerprints
from tests.support.cli import cli, sets
from tests.support.experiments import write_experiment


def chain(n: int) -> dict:
    """s0000 <- s0001 <- ..., listed last stage first: a recursive walk would go n deep."""
    return {f"s{i:04d}": S(needs=[f"s{i - 1:04d}"] if i else []) for i in reversed(range(n))}


def test_order_select_downstream_on_a_5000_chain():
    stages = chain(5000)
    names = [f"s{i:04d}" for i in range(5000)]
    assert dag.topological_order(stages) == names
    assert dag.select(stages, ["s2500"]) == names[:2501]
    assert dag.select(stages, ["all"]) == names
    assert dag.downstream(stages, "s0000") == names[1:]
    assert dag.downstream(stages, "s4998") == ["s4999"]
    dag.check_graph(stages)


def test_cycle_through_5000_stages_names_the_whole_path():
    stages = chain(5000)
    stages["s0000"] = S(needs=["s4999"])
    try:
        dag.topological_order(stages)
    except Exception as err:  # noqa: BLE001 - the type is checked below
        assert type(err).__name__ == "ConfigError"
        cycle = str(err).split("cycle: ")[1].split(" -> ")
        assert len(cycle) == 5001 and cycle[0] == cycle[-1] == "s4999"
    else:
        raise AssertionError("the cycle was not detected")


def test_failed_upstream_deep_and_diamond():
    stages = chain(5000)
    rows = {n: {"stage": n, "state": "never-run"} for n in stages}
    rows["s0003"]["state"] = "failed"
    exp = S(stages=stages)
    assert _failed_upstream(exp, rows, "s4999")["stage"] == "s0003"
    assert _failed_upstream(exp, rows, "s0002") is None
    # 60 layers of two stages, each needing both of the layer below: 2**60 paths, 120 stages
    lattice = {"l00a": S(needs=[]), "l00b": S(needs=[])}
    for i in range(1, 60):
        lattice[f"l{i:02d}a"] = lattice[f"l{i:02d}b"] = None
        lattice[f"l{i:02d}a"] = S(needs=[f"l{i - 1:02d}a", f"l{i - 1:02d}b"])
        lattice[f"l{i:02d}b"] = S(needs=[f"l{i - 1:02d}a", f"l{i - 1:02d}b"])
    rows = {n: {"stage": n, "state": "never-run"} for n in lattice}
    assert _failed_upstream(S(stages=lattice), rows, "l59a") is None
    rows["l00b"]["state"] = "failed"
    assert _failed_upstream(S(stages=lattice), rows, "l59a")["stage"] == "l00b"


def write_chain_config(workspace, n: int) -> str:
    stages = {f"s{i:04d}": {"kind": "noop", "value": i, **({"needs": [f"s{i - 1:04d}"]} if i else {})}
              for i in reversed(range(n))}
    body = {"name": "chain", "stage_modules": ["tests.support.noop_stages"], "stages": stages}
    return str(write_experiment(workspace["root"], body, "chain.yaml"))


def test_fingerprints_of_a_1000_chain(workspace):
    path = write_chain_config(workspace, 1000)
    base = fingerprints(config.load(path, workspace["overrides"]))
    changed = fingerprints(config.load(path, [*workspace["overrides"], "stages.s0500.value=-1"]))
    assert len(set(base.values())) == 1000
    assert [n for n in base if base[n] != changed[n]] == [f"s{i:04d}" for i in range(500, 1000)]


def test_resolved_stage_config_holds_its_own_stage(workspace):
    exp = config.load(write_chain_config(workspace, 1000), workspace["overrides"])
    resolved = config.resolved_stage_config(exp, "s0999", "fp", index=0)
    assert list(resolved["experiment"]["stages"]) == ["s0999"]
    assert resolved["experiment"]["name"] == "chain" and "paths" in resolved["experiment"]
    assert resolved["needs"] == ["s0998"] and resolved["params"] == {"value": 999}
    assert resolved["stage_index"] == 0 and resolved["fingerprint"] == "fp"
    assert config.resolved_stage_config(exp, "s0000", "fp")["stage_index"] == 999  # file order
    yaml.safe_dump(resolved)  # plain data


def test_submit_dry_run_status_and_run_on_a_1000_chain(workspace):
    """A 1,000-stage chain listed last stage first crashed these with RecursionError. `run`
    runs the lower 300 stages only, to keep the suite quick (1,000 take ~10 s more)."""
    args = ["-c", write_chain_config(workspace, 1000), *sets(workspace["overrides"])]
    rows = json.loads(cli("status", "--json", *args).stdout)
    assert [r["stage"] for r in rows] == [f"s{i:04d}" for i in range(1000)]
    assert {r["state"] for r in rows} == {"not-submitted"}
    dry = cli("submit", "--dry-run", "--executor", "local", *args).stdout
    assert dry.count(": local submission -----") == 1000
    assert "dry-run submit" in dry
    cli("run", "s0299", *args)
    states = [r["state"] for r in json.loads(cli("status", "--json", *args).stdout)]
    assert states == ["done"] * 300 + ["not-submitted"] * 700
    resolved = yaml.safe_load((workspace["results"] / "chain" / "s0150" / "config.yaml").read_text())
    assert list(resolved["experiment"]["stages"]) == ["s0150"]   # not all 1,000 stages
    again = cli("run", "s0299", *args).stdout
    assert again.count("up to date, skipped") == 300
