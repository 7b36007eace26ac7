"""DAG order, target selection, downstream sets."""
from types import SimpleNamespace as S

import pytest

from pipeline.core.dag import downstream, select, topological_order
from pipeline.core.schema import ConfigError

STAGES = {
    "report": S(needs=["evaluate"]),
    "download": S(needs=[]),
    "evaluate": S(needs=["train", "preprocess"]),
    "train": S(needs=["preprocess"]),
    "preprocess": S(needs=["download"]),
    "other": S(needs=[]),
}


def test_topological_order_puts_needs_first():
    order = topological_order(STAGES)
    for name, stage in STAGES.items():
        assert all(order.index(d) < order.index(name) for d in stage.needs)
    assert set(order) == set(STAGES)


def test_select_target_adds_what_it_needs_only():
    assert select(STAGES, ["train"]) == ["download", "preprocess", "train"]
    assert select(STAGES, ["all"]) == topological_order(STAGES)
    assert "other" not in select(STAGES, ["report"])


def test_select_unknown_stage_lists_valid():
    with pytest.raises(ConfigError, match="no stage 'ghost'; stages: report, download"):
        select(STAGES, ["ghost"])


def test_downstream():
    assert downstream(STAGES, "preprocess") == ["train", "evaluate", "report"]


def test_cycle_detected_with_path():
    with pytest.raises(ConfigError, match="cycle: a -> b -> c -> a"):
        topological_order({"a": S(needs=["b"]), "b": S(needs=["c"]), "c": S(needs=["a"])})


def test_independent_stages_keep_file_order():
    stages = {"c": S(needs=[]), "a": S(needs=["b"]), "b": S(needs=[]), "d": S(needs=["c", "a"])}
    assert topological_order(stages) == ["c", "b", "a", "d"]
    assert downstream(stages, "b") == ["a", "d"]
    assert select(stages, ["d"]) == ["c", "b", "a", "d"]


def test_cycle_error_names_the_stage_and_only_the_cycle():
    stages = {"x": S(needs=["a"]), "a": S(needs=["b"]), "b": S(needs=["a"])}
    with pytest.raises(ConfigError, match=r"stages\.a\.needs.*cycle: a -> b -> a") as err:
        topological_order(stages)
    assert "x ->" not in str(err.value)
