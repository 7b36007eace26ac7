"""Discoverable from the command line: `python -m pipeline kinds [KIND]` and `models [PATTERN]`."""
from __future__ import annotations

import re

from pipeline.cli.main import main
from tests.support.cli import cli


def test_kinds_lists_every_kind_with_typed_parameters():
    out = cli("kinds").stdout
    assert re.search(r"^train  \(jobs\.stages\.train\): ", out, re.M)
    after = out.split("train  (jobs.stages.train)")[1].splitlines()[1:]
    block = "\n".join(line for line in after[:next(i for i, l in enumerate(after + [""]) if not l.startswith("  "))])
    assert re.search(r"^  epochs +int +10 +\(min 1\)$", block, re.M)
    assert re.search(r"^  optimizer +'sgd'\|'adam'\|'adamw' +'adamw'$", block, re.M)
    assert re.search(r"^command  \(pipeline\.kinds\)", out, re.M)
    assert re.search(r"^  argv +list\[str\] +\[\] +program and arguments; no shell$", out, re.M)


def test_kinds_one_kind_shows_help(capsys):
    assert main(["kinds", "train"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("train  (jobs.stages.train): Stage kind `train`")
    assert re.search(r"^  patience +int +0 +early stop after this many epochs without a better val acc; "
                     r"0 = off \(min 0\)$", out, re.M)
    assert re.search(r"^  augment +list\['crop_pad'\|'hflip'", out, re.M)
    assert "finetune" not in out


def test_kinds_unknown_kind_lists_choices(capsys):
    assert main(["kinds", "trian"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown stage kind 'trian'; valid choices: ") and " train" in err


def test_models_pattern_lists_each_source(capsys):
    assert main(["models", "resnet1"]) == 0
    out = capsys.readouterr().out
    sections = dict(re.findall(r"^(\w+) \(\d+\):\n((?:  .*\n)+)", out, re.M))
    assert set(sections) == {"project", "torchvision", "timm"}
    assert "  resnet18\n" in sections["torchvision"] and "  resnet10t\n" in sections["timm"]
    assert sections["project"] == "  (none)\n"
    assert main(["models", "small_*"]) == 0
    assert "project (1):\n  small_cnn\n" in capsys.readouterr().out


def test_report_open_prints_the_page_and_opens_it_only_where_a_desktop_is(tmp_path, monkeypatch, capsys):
    import webbrowser

    from pipeline.cli.main import _open_in_browser
    page = tmp_path / "report.html"
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    _open_in_browser(page)
    out = capsys.readouterr().out
    assert f"report: {page}" in out and "no desktop browser here" in out and opened == []
    monkeypatch.setenv("DISPLAY", ":0")
    _open_in_browser(page)
    assert opened == [page.as_uri()] and "no desktop" not in capsys.readouterr().out


def test_advise_and_right_size_after_a_local_run(tmp_path):
    """`advise` reads what the stages used; `submit --right-size` applies it, the file unchanged."""
    from tests.support.cli import sets
    from tests.support.experiments import write_experiment
    config = write_experiment(tmp_path, """\
        name: sized
        resources: {cpus_per_task: 2, mem: 4G, time: "00:30:00"}
        stages:
          one: {kind: command, argv: ["sleep", "1.5"]}
        """, "sized.yaml")         # long enough for its CPU use to be measured (samplers.MIN_CPU_SPAN_S)
    text = config.read_text()
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    assert "nothing to advise (submit it first)" in cli("advise", "-c", str(config), *overrides).stdout
    cli("submit", "all", "-c", str(config), "--executor", "local", *overrides)
    advice = cli("advise", "-c", str(config), *overrides).stdout
    assert re.search(r"^\| one \| 1 successful attempt\(s\) \| 00:30:00 -> 00:05:00 \| 4G -> (256|512)M \| 2 -> 1 \|",
                     advice, re.M)
    dry = cli("submit", "all", "-c", str(config), "--executor", "local", "--dry-run", "--force", "--right-size",
              *overrides).stdout
    assert re.search(r"^\[pipeline\] right-size: one: time 00:30:00 -> 00:05:00, mem 4G -> (256|512)M, "
                     r"cpus_per_task 2 -> 1$", dry, re.M)
    refused = cli("submit", "all", "-c", str(config), "--right-size", "--sweep", "seed=1,2", *overrides, check=False)
    assert refused.returncode == 2 and "not applied to variants" in refused.stderr
    assert config.read_text() == text
