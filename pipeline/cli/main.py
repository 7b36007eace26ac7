"""Command line: python -m pipeline submit|run|status|render|report|reconcile|kinds|models ..."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from pipeline import contract, executors
from pipeline.core import config as config_mod
from pipeline.core import paths
from pipeline.core.schema import ConfigError
from pipeline.core.state import describe_os_error
from pipeline.executors import SchedulerUnavailable, SubmitError
from safeio import LockedError


def _load(args) -> config_mod.Experiment:
    path = args.config or config_mod.default_config_path()
    return config_mod.load(path, args.set or [], profile=getattr(args, "profile", None))


def cmd_submit(args) -> int:
    from pipeline.cli.submit import submit
    from pipeline.core.variants import expand, load_variants
    from pipeline.runner import run_in_job
    exp = _load(args)  # validate everything before anything is submitted
    variants, limit = expand(exp, args.sweep or [], args.variant or "", args.set or [])
    if args.right_size and not variants:
        _right_size(exp)
    executor = executors.make_executor(args.executor, dry_run=args.dry_run, entry=run_in_job)
    if variants:
        if args.right_size:
            print("[pipeline] right-size: not applied to variants (each has its own history); submit them "
                  "without --right-size, or the plain run with it", file=sys.stderr)
            return 2
        from pipeline.cli.submit import submit_variants
        exps = load_variants(args.config or config_mod.default_config_path(), args.set or [], variants)
        print(f"[pipeline] {len(exps)} variant(s) of {exp.name!r}: {', '.join(e.variant for e in exps)}")
        return submit_variants(exps, executor, args.stages, force=args.force, dry_run=args.dry_run, limit=limit,
                               wait=args.wait, explain=args.explain)
    return submit(exp, executor, args.stages, force=args.force, dry_run=args.dry_run, explain=args.explain,
                  wait=args.wait)


def _advice(exp: config_mod.Experiment) -> list:
    """Advice for the next submit from every attempt the experiment's stages have made so far."""
    from pipeline.accounting.advice import RESOURCES, advise
    from pipeline.reporting.report import ATTEMPTS, collect
    rows, _ = collect(Path(exp.paths.results), exp.name, started=True)
    asked = {n: {k: getattr(s.resources, k) for k in RESOURCES} for n, s in exp.stages.items()}
    return advise(asked, rows, lambda r: r[ATTEMPTS])


def _right_size(exp: config_mod.Experiment) -> None:
    """submit --right-size: the advice applied to the stages with history, in memory, said."""
    from pipeline.accounting.advice import apply
    changed = apply(exp, _advice(exp))
    for line in changed or ["no stage with history needs a change"]:
        print(f"[pipeline] right-size: {line}", flush=True)


def cmd_advise(args) -> int:
    from pipeline.accounting.advice import CPU_MARGIN, MEM_MARGIN, TIME_MARGIN, table
    from safeio.markdown import markdown_table
    exp = _load(args)
    rows = table(_advice(exp))
    if not rows:
        print(f"no stage of {exp.name!r} has run yet: nothing to advise (submit it first)")
        return 0
    print(markdown_table(rows, tuple(rows[0])))
    print(f"\nMargins over the largest use seen: memory +{MEM_MARGIN - 1:.0%}, time +{TIME_MARGIN - 1:.0%}, "
          f"cores +{CPU_MARGIN - 1:.0%}; raises after OUT_OF_MEMORY or TIMEOUT. "
          f"`submit --right-size` applies it (the config file stays as it is).")
    return 0


def cmd_run(args) -> int:
    from pipeline.runner import plan_run, run_targets, submit_host_stages_missing
    exp = _load(args)
    missing = submit_host_stages_missing(exp, args.stages, args.force)
    if missing:     # at once, before any stage of the job runs
        profile = ["--profile", exp.raw["profile"]] if exp.raw.get("profile") else []
        command = shlex.join(["python", "-m", "pipeline", "submit", *missing, "-c",
                              args.config or str(config_mod.default_config_path()), *profile,
                              *(a for o in args.set or [] for a in ("--set", o))])
        print(f"error: stage(s) {', '.join(missing)} run on the submit host (where: submit_host: compute nodes may "
              f"have no internet) and are not done: run `{command}` on the login node, then submit this job "
              "again. No stage was run.", file=sys.stderr)
        return 2
    if args.as_steps:   # one job step per stage inside an allocation; in this process elsewhere
        config_arg = args.config or str(config_mod.default_config_path())
        return executors.run_as_steps(exp, args.stages, config_arg, args.set or [], args.force,
                                      plan=plan_run, run_here=run_targets)
    executors.install_signal_handlers()   # the time-limit warning: stop the stage, or requeue the job
    return run_targets(exp, args.stages, force=args.force)


def status_rows(exp: config_mod.Experiment) -> list[dict]:
    """status's rows: every stage of the plain run, then of every variant submitted so far, from
    one snapshot of the scheduler (one squeue and one sacct, whatever the number of variants)."""
    from pipeline.cli.status import states_of
    from pipeline.core.variants import recorded_experiments
    exps = [exp, *recorded_experiments(exp)]
    rows = []
    for e, states in zip(exps, states_of(exps)):
        wide = {s for s, st in e.stages.items() if e.variant and contract.experiment_wide(st.kind)}  # in the plain rows
        rows += [{**r, "variant": e.variant} for r in states if r["stage"] not in wide]
    return rows


def cmd_status(args) -> int:
    from pipeline.cli.watch import exit_code, plain_table, watch
    exp = _load(args)
    if args.watch is not None:
        return watch(lambda: status_rows(exp), args.watch)
    rows = status_rows(exp)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(plain_table(rows))
    return exit_code(rows)


def cmd_render(args) -> int:
    exp = _load(args)
    config_arg = args.config or os.path.relpath(config_mod.default_config_path())
    default, text = executors.render_batch_script(exp, config_arg, args.set or [])
    out = Path(args.output or default)
    if args.check:
        same = out.exists() and out.read_text() == text
        print(f"{out}: {'in sync' if same else 'OUT OF DATE: run python -m pipeline render -c ' + config_arg}")
        return 0 if same else 1
    from safeio import atomic_write_text
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0


def cmd_report(args) -> int:
    from pipeline.reporting.report import write_report
    if args.config:
        exp = _load(args)
        csv_path, md_path = write_report(Path(exp.paths.results), [exp.name])
    else:
        exp = _load(args)  # the default experiment only tells where results/ is
        csv_path, md_path = write_report(Path(exp.paths.results))
    html_path = md_path.with_name(paths.REPORT_HTML)
    print(f"wrote {csv_path}, {md_path} and {html_path}")
    if args.open:
        _open_in_browser(html_path)
    return 0


def _open_in_browser(path: Path) -> None:
    """Print the page's path; open it where a desktop is (a browser webbrowser can find)."""
    import webbrowser
    print(f"report: {path.resolve()}")
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform in ("darwin", "win32")
    if not (has_display and webbrowser.open(path.resolve().as_uri())):
        print("no desktop browser here: copy it to your laptop (scp) and open it there")


def cmd_reconcile(args) -> int:
    from pipeline.cli.status import reconcile_all
    from pipeline.core.variants import recorded_experiments
    exp = _load(args)
    messages = reconcile_all([exp, *recorded_experiments(exp)])
    print("\n".join(messages) if messages else "nothing to reconcile: no job waits on a failed dependency")
    return 0


def _stage_modules(args) -> list[str]:
    """The stage packages of -c CONFIG, else of configs/defaults.yaml (no experiment is loaded)."""
    if args.config:
        names = _load(args).stage_modules
    else:
        names = config_mod._read_yaml(config_mod.REPO_ROOT / "configs" / "defaults.yaml").get("stage_modules", ["jobs"])
    config_mod.load_kind_modules(names)
    return names


def cmd_kinds(args) -> int:
    _stage_modules(args)
    names = contract.kinds()
    if args.kind and args.kind not in names:
        print(f"error: unknown stage kind {args.kind!r}; valid choices: {', '.join(names)}", file=sys.stderr)
        return 2
    for name in [args.kind] if args.kind else names:
        kind = contract.get(name)
        doc = contract.describe(kind)
        print(f"{name}  ({kind.module}){': ' + doc if doc else ''}")
        rows = contract.describe_params(kind.params)
        widths = [max([len(r[i]) for r in rows] + [1]) for i in range(3)]
        for row in rows:
            print(("  " + "  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3]).rstrip())
        if not rows:
            print("  (no parameters)")
    return 0


def cmd_catalog(args) -> int:
    try:
        listing = contract.catalog(args.command, _stage_modules(args))(args.pattern or "")
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    for group, names in listing.items():
        print(f"{group} ({len(names)}):")
        print("  " + ("\n  ".join(names) if names else "(none)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("-c", "--config", help="experiment YAML (default: configs/defaults.yaml's default_experiment)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set stages.train.epochs=3 (repeatable)")
        p.add_argument("--profile", metavar="NAME", help=f"cluster profile profiles/NAME.yaml, merged between "
                       f"configs/defaults.yaml and the experiment (default: ${config_mod.PROFILE_ENV})")
        return p

    p = common(sub.add_parser("submit", help="submit stages (and what they need) to SLURM or run locally"))
    p.add_argument("stages", nargs="*", default=["all"], help="stage names or 'all' (default)")
    p.add_argument("--executor", default="auto", choices=["auto", *executors.BACKENDS])
    p.add_argument("--dry-run", action="store_true", help="print the plan and job scripts; submit nothing")
    p.add_argument("--force", action="store_true", help="rerun stages that are already done")
    p.add_argument("--explain", action="store_true", help="say why each stage will or will not run")
    p.add_argument("--wait", action="store_true", help="SLURM: stay until the jobs end, then print states "
                   "and refresh the report (default: return at once)")
    p.add_argument("--variant", metavar="NAME", help="keep this run's results beside the others, as variant NAME "
                   "(its --set values); with --sweep, a prefix of the variants' names")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                   help="one variant per value (repeatable: every combination), e.g. --sweep stages.train.lr=0.1,0.01; "
                        "a stage's variants go to SLURM as one job array")
    p.add_argument("--right-size", action="store_true", help="apply `advise` to the stages that have run "
                   "before (their time, mem, cpus_per_task, gpus) and print what changed; the config file stays")
    p.set_defaults(fn=cmd_submit)

    p = common(sub.add_parser("advise", help="what to ask for next time, per stage, from the attempts so far"))
    p.set_defaults(fn=cmd_advise)

    p = common(sub.add_parser("run", help="run stages in this process (what jobs execute)"))
    p.add_argument("stages", nargs="+", help="stage names or 'all'")
    p.add_argument("--force", action="store_true")
    p.add_argument("--as-steps", action="store_true",
                   help="inside a SLURM allocation, run each stage as its own job step (srun), so sacct "
                        "accounts each stage apart; elsewhere the same as without it")
    p.set_defaults(fn=cmd_run)

    p = common(sub.add_parser("status", help="state of every stage"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
                   help="redraw every SECONDS (default 5) until every stage has ended; exit as status does")
    p.set_defaults(fn=cmd_status)

    p = common(sub.add_parser("render", help="write sbatch/<experiment>.sbatch"))
    p.add_argument("-o", "--output")
    p.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    p.set_defaults(fn=cmd_render)

    p = common(sub.add_parser("report", help="write results/efficiency.csv, results/report.md and report.html"))
    p.add_argument("--open", action="store_true", help="print report.html's path and open it in a browser")
    p.set_defaults(fn=cmd_report)

    p = common(sub.add_parser("reconcile", help="cancel jobs stuck behind a failed upstream stage"))
    p.set_defaults(fn=cmd_reconcile)

    p = common(sub.add_parser("kinds", help="the stage kinds and their parameters (type, default, help)"))
    p.add_argument("kind", nargs="?", help="one kind (default: all)")
    p.set_defaults(fn=cmd_kinds)

    p = common(sub.add_parser("models", help="the model names the stage packages can build"))
    p.add_argument("pattern", nargs="?", help="a substring or glob of the names, e.g. net or 'small_*'")
    p.set_defaults(fn=cmd_catalog)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"error: {err}\nnothing was submitted or run.", file=sys.stderr)
        return 2
    except LockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except OSError as err:   # results/logs folders: in the way, read-only, full
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 4
    except SubmitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SchedulerUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 5

