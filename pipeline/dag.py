"""Stages, `needs`, topological order, target selection and cycle detection."""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from .schema import ConfigError


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
    """Depth-first order that keeps the file's order among independent stages."""
    order: list[str] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name):] + [name]
            raise ConfigError(f"stages.{name}.needs", f"cycle: {' -> '.join(cycle)}")
        state[name] = "visiting"
        for dep in stages[name].needs:
            visit(dep, path + [name])
        state[name] = "done"
        order.append(name)

    for name in stages:
        visit(name, [])
    return order


def select(stages: Mapping[str, HasNeeds], targets: Sequence[str]) -> list[str]:
    """The targets plus everything they need, in topological order. `all` selects every stage."""
    if not targets or "all" in targets:
        return topological_order(stages)
    unknown = [t for t in targets if t not in stages]
    if unknown:
        raise ConfigError("", f"no stage {unknown[0]!r}; stages: {', '.join(stages)} (or 'all')")
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for dep in stages[name].needs:
                add(dep)

    for t in targets:
        add(t)
    return [s for s in topological_order(stages) if s in wanted]


def forced(stages: Mapping[str, HasNeeds], targets: Sequence[str]) -> set[str]:
    """What --force reruns: the named stages (every stage for `all`), not what they need."""
    return set(stages) if not targets or "all" in targets else set(targets)


def downstream(stages: Mapping[str, HasNeeds], name: str) -> list[str]:
    """Every stage that needs `name`, directly or not, in topological order."""
    hit = {name}
    for s in topological_order(stages):
        if any(d in hit for d in stages[s].needs):
            hit.add(s)
    return [s for s in topological_order(stages) if s in hit and s != name]
