"""What `status` prints: the plain table, and `status --watch [SECONDS]`, which redraws it in
place (rich's Live) with a progress bar per running stage until every stage has ended, then
exits with status's exit code. Each refresh is one `collect()` (status's stage_states: one live
and one accounting query per backend, whatever the number of stages and variants). When stdout
is not a terminal it prints a plain table per refresh instead."""
from __future__ import annotations

import sys
import time
from typing import Callable

from pipeline.core import progress

LIVE = ("running", "pending")          # a stage in one of these has not ended yet
FAILED = ("failed", "interrupted")     # status exits 1 when a stage is in one of these


def exit_code(rows: list[dict]) -> int:
    return 1 if any(r["state"] in FAILED for r in rows) else 0


def ended(rows: list[dict]) -> bool:
    return not any(r["state"] in LIVE for r in rows)


def _cells(rows: list[dict]) -> tuple[list[str], list[tuple]]:
    """The table's header and its rows as text; the variant column only when there are variants,
    the progress column only when a stage reports progress."""
    variants = any(r.get("variant") for r in rows)
    shown = any(r.get("progress") for r in rows)
    header = ["stage", *(["variant"] if variants else []), "state", "job id", "elapsed",
              *(["progress"] if shown else []), "log", "detail"]
    body = []
    for r in rows:
        elapsed = f"{r['elapsed_s']:.0f}s" if r.get("elapsed_s") is not None else "-"
        body.append((r["stage"], *([r.get("variant") or "-"] if variants else []), r["state"], r["job_id"] or "-",
                     elapsed, *([progress.describe(r.get("progress")) or "-"] if shown else []), r["log"] or "-",
                     r["reason"] or ""))
    return header, body


def plain_table(rows: list[dict]) -> str:
    header, body = _cells(rows)
    table = [tuple(header), *body]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def rich_table(rows: list[dict]):
    """The same table for a terminal, a bar beside each running stage that reports how far it is;
    without the log paths, which a live view has no room for (`status` prints them)."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text
    header, body = _cells(rows)
    keep = [i for i, name in enumerate(header) if name != "log"]
    header, body = [header[i] for i in keep], [tuple(cells[i] for i in keep) for cells in body]
    at = header.index("progress") if "progress" in header else None
    table = Table(box=None, pad_edge=False)
    for i, name in enumerate(header):
        if i == at:
            table.add_column("", width=12)          # the bar
        # on a narrow terminal the detail gives way (ellipsis), the other columns never
        widest = max([len(name)] + [len(str(cells[i])) for cells in body])
        table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=8 if name == "detail" else widest)
    colours = {"running": "cyan", "pending": "yellow", "done": "green", "cached": "green",
               "failed": "red", "interrupted": "red", "never-run": "red"}
    for r, cells in zip(rows, body):
        # Text, not markup: a detail like "[pipeline] ..." is shown as it is
        cells = [Text(str(c), style=colours.get(r["state"], "") if name == "state" else "")
                 for name, c in zip(header, cells)]
        if at is not None:
            p = r.get("progress") or {}
            bar = ProgressBar(total=p["of"], completed=p["done"], width=12) if p.get("of") else ""
            cells.insert(at, bar)
        table.add_row(*cells)
    return table


def watch(collect: Callable[[], list[dict]], every_s: float, out=None) -> int:
    """Refresh every `every_s` seconds until no stage is pending or running; status's exit code.
    Ctrl-C stops watching, never the jobs."""
    out = out or sys.stdout
    try:
        return _live(collect, every_s) if out.isatty() else _plain(collect, every_s, out)
    except KeyboardInterrupt:
        print("\nstopped watching; the jobs keep running (`python -m pipeline status` shows them, "
              "`scancel` stops them)", file=out, flush=True)
        return 130


def _plain(collect, every_s: float, out) -> int:
    while True:
        rows = collect()
        print(f"-- {time.strftime('%H:%M:%S')}\n{plain_table(rows)}\n", file=out, flush=True)
        if ended(rows):
            return exit_code(rows)
        time.sleep(every_s)


def _live(collect, every_s: float) -> int:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text
    with Live(auto_refresh=False, redirect_stdout=False) as live:
        while True:
            rows = collect()
            done = ended(rows)
            footer = "every stage has ended" if done else f"refreshing every {every_s:g} s; Ctrl-C stops watching"
            live.update(Group(rich_table(rows), Text(f"{time.strftime('%H:%M:%S')}  {footer}", style="dim")),
                        refresh=True)
            if done:
                return exit_code(rows)
            time.sleep(every_s)
