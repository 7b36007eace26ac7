"""The one writer of markdown tables, for the engine's report and the stages' report fragments."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence


def cell(value: Any) -> str:
    """Floats to 4 significant digits, None and "" empty, everything else as str()."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None or value == "" else str(value)


def markdown_table(rows: Iterable[Sequence[Any] | dict], columns: Sequence[str], fmt: Callable[[Any], str] = cell,
                   header: Sequence[str] | None = None) -> str:
    """A GitHub markdown table: `rows` are dicts (read by `columns`) or sequences (in column
    order); `header` names the columns when it differs from their keys."""
    head = list(header or columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        values = [row.get(c) for c in columns] if isinstance(row, dict) else list(row)
        lines.append("| " + " | ".join(fmt(v) for v in values) + " |")
    return "\n".join(lines)
