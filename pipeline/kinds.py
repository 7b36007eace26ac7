"""Stage kinds that belong to the engine itself: `report` and `command`."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

from pipeline.contract import StageContext, register
from pipeline.core.paths import REPO_ROOT


@dataclass
class ReportParams:
    """No parameters: writes results/efficiency.csv and results/report.md."""


@register("report", ReportParams, needs_order_only=True)
def run_report(p: ReportParams, ctx: StageContext) -> dict:
    from pipeline.reporting.report import write_report
    results = ctx.out_dir.parent.parent      # results/<experiment>/<this stage>
    csv_path, md_path = write_report(results, [ctx.experiment])
    ctx.log.info("wrote %s and %s (run `python -m pipeline report` again after the last job ends "
                 "to add this stage's own row and final sacct states)", csv_path, md_path)
    return {"efficiency_csv": str(csv_path), "report_md": str(md_path)}


@dataclass
class CommandParams:
    argv: list[str] = field(default_factory=list, metadata={"help": "program and arguments; no shell"})
    env: dict[str, str] = field(default_factory=dict)


@register("command", CommandParams)
def run_command(p: CommandParams, ctx: StageContext) -> dict:
    """Run a program as a stage. argv is passed without a shell, so nothing in it is interpreted."""
    if not p.argv:
        raise ValueError(f"stage {ctx.stage!r}: `argv` is empty; give the program and its arguments")
    env = {**os.environ, **p.env, "STAGE_OUT_DIR": str(ctx.out_dir),
           **{f"STAGE_UPSTREAM_{k.upper().replace('-', '_').replace('.', '_')}": str(v)
              for k, v in ctx.upstream.items()}}
    code = subprocess.call(p.argv, cwd=REPO_ROOT, env=env)
    if code != 0:
        raise RuntimeError(f"stage {ctx.stage!r}: command {p.argv[0]!r} exited with code {code}")
    return {"returncode": code}
