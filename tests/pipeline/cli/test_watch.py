"""status's table and `status --watch`: the progress column of running stages, a plain table per
refresh when stdout is no terminal, status's exit code once every stage has ended, and Ctrl-C
that stops the view, never the jobs."""
from __future__ import annotations

import io

from pipeline.cli import watch

RUNNING = {"unit": "epoch", "done": 3, "of": 10, "val_acc": 0.771, "images_per_s": 176.0, "eta_s": 240.0}


def row(stage: str, state: str, progress: dict | None = None, **more) -> dict:
    return {"stage": stage, "variant": "", "state": state, "job_id": "7", "elapsed_s": 12.0, "log": "l.out",
            "reason": "", "progress": progress, **more}


def test_plain_table_shows_the_progress_of_running_stages_only_when_one_reports():
    table = watch.plain_table([row("prepare", "done"), row("train", "running", RUNNING), row("evaluate", "pending")])
    header, prepare, train, evaluate = table.splitlines()
    assert header.split() == ["stage", "state", "job", "id", "elapsed", "progress", "log", "detail"]
    assert "epoch 3/10 · val 77.1% · 176 img/s · ETA 4m" in train
    assert prepare.split()[:5] == ["prepare", "done", "7", "12s", "-"]
    assert "progress" not in watch.plain_table([row("prepare", "done")])


def test_watch_without_a_terminal_prints_a_table_per_refresh_and_exits_with_status_code(monkeypatch):
    monkeypatch.setattr(watch.time, "sleep", lambda s: None)
    refreshes = iter([[row("a", "running", RUNNING), row("b", "pending")],
                      [row("a", "done"), row("b", "running")],
                      [row("a", "done"), row("b", "failed")]])
    out = io.StringIO()
    assert watch.watch(lambda: next(refreshes), 2.0, out) == 1            # b failed: status's code
    text = out.getvalue()
    assert text.count("stage  state") == 3 and "ETA 4m" in text and "\x1b[" not in text


def test_ctrl_c_stops_watching_and_says_the_jobs_go_on():
    def interrupted():
        raise KeyboardInterrupt
    out = io.StringIO()
    assert watch.watch(interrupted, 1.0, out) == 130
    assert "the jobs keep running" in out.getvalue()


def test_the_terminal_table_draws_a_bar_for_a_running_stage():
    from rich.console import Console
    console = Console(record=True, width=200, color_system=None)
    console.print(watch.rich_table([row("train", "running", RUNNING),
                                    row("evaluate", "pending", reason="[red]not markup[/]")]))
    text = console.export_text()
    assert "[red]not markup[/]" in text
    train = next(line for line in text.splitlines() if line.startswith("train"))
    assert "━" in train and "epoch 3/10" in train and "━" not in text.splitlines()[-1]
