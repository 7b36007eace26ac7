"""Stages, `needs`, topological order, target selection and cycle detection."""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from pipeline.core.schema import ConfigError


class HasNeeds(Protocol):
    needs: list[str]


def check_graph(stages: Mapping[str, HasNeeds]) -> None:
    """Every `needs` names a stage; no stage needs itself through any path."""
    for name, stage in stages.items():
        for i, dep in enumerate(stage.needs):
            if dep not in stages:
                raise ConfigError(f"stages.{name}.needs[{i}]",
                                  f"names no stage {dep!r}; stages: {', '.join(stages)}")
    topological_order(stages)


def topological_order(stages: Mapping[str, HasNeeds]) -> list[str]:
    """Depth-first order that keeps the file's order among independent stages.

    Iterative with an explicit stack, so a chain of any length cannot exceed Python's recursion
    limit; each stage and each `needs` entry is visited once (linear time).
    """
    order: list[str] = []
    done: set[str] = set()
    on_path: dict[str, int] = {}  # stage being visited -> its position on the stack
    for root in stages:
        if root in done:
            continue
        stack = [(root, iter(stages[root].needs))]
        on_path[root] = 0
        while stack:
            name, deps = stack[-1]
            for dep in deps:
                if dep in done:
                    continue
                if dep in on_path:
                    cycle = [n for n, _ in stack[on_path[dep]:]] + [dep]
                    raise ConfigError(f"stages.{dep}.needs", f"cycle: {' -> '.join(cycle)}")
                on_path[dep] = len(stack)
                stack.append((dep, iter(stages[dep].needs)))
                break
            else:  # every need of `name` is placed: place it
                stack.pop()
                del on_path[name]
                done.add(name)
                order.append(name)
    return order


def select(stages: Mapping[str, HasNeeds], targets: Sequence[str]) -> list[str]:
    """The targets plus everything they need, in topological order. `all` selects every stage."""
    if not targets or "all" in targets:
        return topological_order(stages)
    unknown = [t for t in targets if t not in stages]
    if unknown:
        raise ConfigError("", f"no stage {unknown[0]!r}; stages: {', '.join(stages)} (or 'all')")
    wanted: set[str] = set()
    todo = list(targets)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(stages[name].needs)
    return [s for s in topological_order(stages) if s in wanted]


def forced(stages: Mapping[str, HasNeeds], targets: Sequence[str]) -> set[str]:
    """What --force reruns: the named stages (every stage for `all`), not what they need."""
    return set(stages) if not targets or "all" in targets else set(targets)


def downstream(stages: Mapping[str, HasNeeds], name: str) -> list[str]:
    """Every stage that needs `name`, directly or not, in topological order."""
    hit = {name}
    out = []
    for s in topological_order(stages):  # needs come first, so one pass sees every path
        if any(d in hit for d in stages[s].needs):
            hit.add(s)
            out.append(s)
    return out
