"""results/efficiency.csv and results/report.md from every stage's accounting.json, joined with
what the executor that ran it accounted (one query per backend)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sys
from pathlib import Path

import safeio
from pipeline.accounting.record import ATTEMPT_COLUMNS, COLUMNS, METRIC_COLUMNS, gpu_hours, scheduler_columns
from pipeline.core import paths, state
from pipeline.core.paths import StagePaths
from pipeline.executors import UsageRequest
from pipeline.executors.watch import schedulers, usages
from pipeline.reporting import timeline
from safeio.markdown import markdown_table

# report.md's table per experiment: these, with the metric columns its stages filled in between.
SUMMARY_HEAD = ("stage", "variant", "kind", "status", "job_id", "step_id", "attempts", "device", "wall_s", "throughput_per_s")
SUMMARY_TAIL = ("sacct_state", "sacct_attempts", "sacct_queue_wait_s", "sacct_elapsed_s", "sacct_cpu_eff",
                "sacct_maxrss_step_mb", "sacct_mem_eff", "sacct_time_eff", "cpu_util", "gpu_util_mean", "idle")
UNREADABLE = "accounting-unreadable"


def collect(results: Path, experiment: str, started: bool = False) -> tuple[list[dict], str | None]:
    rows, why = collect_all(results, [experiment], started)
    return rows[experiment], why


def collect_all(results: Path, experiments: list[str], started: bool = False) -> tuple[dict[str, list[dict]], str | None]:
    """Per experiment, one row per stage folder, joined with the executor's accounting (the sacct_*
    columns, every attempt) in one query per backend for all of them. A stage whose
    accounting.json is unreadable, or missing although the stage finished, keeps its row (status
    accounting-unreadable, the job id from job.json so the sacct columns still fill) and a
    warning goes to stderr. `started`: also stages whose attempts left no record (_stage_records)."""
    records = [r for e in experiments for r in _experiment_records(results, e, started)]
    used, why = usages({i: (r.pop(EXECUTOR), UsageRequest(tuple(_job_ids(r)), _step_name(r["experiment"], r),
                                                          r.get("step_id")))
                        for i, r in enumerate(records)})
    out: dict[str, list[dict]] = {e: [] for e in experiments}
    for i, rec in enumerate(records):
        row = {**rec, **scheduler_columns(used.get(i)), "gpu_hours": gpu_hours(rec)}
        out[rec["experiment"]].append({**{c: row.get(c) for c in COLUMNS}, ENDED: (used.get(i) or {}).get("ended"),
                                       ATTEMPTS: timeline.attempt_rows(row, used.get(i)),
                                       UNMEASURED: rec.get("unmeasured") or {}})
    for e, rows in out.items():
        order = _stage_order(results / e)
        rows.sort(key=lambda r: (order.get(str(r["stage"]).split(":")[0], len(order)), r.get("variant") or ""))
    return out, why


def _experiment_records(results: Path, experiment: str, started: bool = False) -> list[dict]:
    """The accounting records of every stage folder of an experiment: its own and its variants'."""
    records = []
    for stage_dir in _stage_dirs(results / experiment):
        records += _stage_records(stage_dir, experiment, started)
    for stage_dir in _variant_dirs(results, experiment):     # each run once: the variant that owns it
        records += [{**r, "variant": stage_dir.parent.name} for r in _stage_records(stage_dir, experiment) if r]
    return [{**r, "experiment": experiment} for r in records if r]


EXECUTOR = "_executor"   # the backend that ran a record's jobs (job.json), to ask for its accounting
ENDED = "_ended"         # the stage's jobs have all ended: their CPU time is final (not a CSV column)
ATTEMPTS = "_attempts"   # the stage's attempts.csv rows
UNMEASURED = "_unmeasured"   # the sampler's reasons for the figures it could not have


def _step_name(experiment: str, record: dict) -> str:
    """The name of the stage's own step in a job that ran several stages: `<experiment>.<stage>`
    (an extra row `stage:variant` is its stage's)."""
    return f"{experiment}.{str(record.get('stage')).split(':')[0]}"


def _variant_dirs(results: Path, experiment: str) -> list[Path]:
    """The stage folders of the recorded variants that are their own (results/<exp>/variants/...)."""
    own = paths.variants_dir(results, experiment).resolve()    # the same folder reached through a symlink too
    dirs = {Path(d).resolve() for index in state.recorded_variants(results, experiment) for d in index["dirs"].values()}
    return sorted(d for d in dirs if own in d.parents and d.is_dir())


def _stage_dirs(exp_dir: Path) -> list[Path]:
    if not exp_dir.is_dir():
        return []
    return sorted(p for p in exp_dir.iterdir() if p.is_dir() and StagePaths(p).is_stage_folder())


def _stage_records(stage_dir: Path, experiment: str, started: bool = False) -> list[dict]:
    """The stage's accounting record and the extra rows it added (e.g. one per benchmarked variant).
    `started`: also a row (from job.json) for a stage whose only attempts left no record, e.g.
    killed for its memory, for the advice (the report leaves them out: they may still run)."""
    files = StagePaths(stage_dir)
    path = files.accounting
    record, problem = _read_record(path)
    if problem is None and record is None and not files.success.exists():
        if started and files.attempts.exists():
            return [{**_row_without_accounting(stage_dir, experiment), "status": "no-record",
                     EXECUTOR: state.recorded_executor(stage_dir)}]
        return []   # not started yet, or still running its first attempt: nothing to account
    if problem is not None or record is None:
        problem = problem or "missing, although the stage finished (_SUCCESS is there)"
        print(f"[pipeline] warning: {path}: {problem}; its efficiency.csv row is marked {UNREADABLE}",
              file=sys.stderr, flush=True)
        record = _row_without_accounting(stage_dir, experiment)
    extra = safeio.read_json(files.accounting_extra, []) or []
    executor = {EXECUTOR: state.recorded_executor(stage_dir)}   # None: not recorded, or several
    return [{**record, **executor}] + [{**r, **executor} for r in extra if isinstance(r, dict)]


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    """(record, None), (None, None) when there is no file, or (None, what is wrong with it)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    if not isinstance(data, dict):
        return None, f"unreadable (a JSON {type(data).__name__}, not an object)"
    return data, None


def _row_without_accounting(stage_dir: Path, experiment: str) -> dict:
    """The row of a stage without a readable record: what job.json and config.yaml still say."""
    job = state.job_record(stage_dir)
    kind = None
    with contextlib.suppress(Exception):
        import yaml
        cfg = yaml.safe_load(StagePaths(stage_dir).config.read_text()) or {}
        kind = cfg["experiment"]["stages"][stage_dir.name]["kind"]
    return {"experiment": experiment, "stage": stage_dir.name, "kind": kind, "status": UNREADABLE,
            "job_id": job.get("job_id"), "step_id": job.get("step_id"), "config_hash": job.get("fingerprint")}


def _job_ids(rec: dict) -> list[str]:
    """Every job that ran an attempt of this stage's current result, oldest first."""
    ids = [str(j) for j in (rec.get("job_ids") or []) if j]
    if rec.get("job_id") and str(rec["job_id"]) not in ids:
        ids.append(str(rec["job_id"]))
    return ids


def _stage_order(exp_dir: Path) -> dict[str, int]:
    """Stages in the order of the experiment file: each stage's config.yaml records its index
    (older ones hold the whole experiment, in order)."""
    import yaml
    order: dict[str, int] = {}
    found = [*exp_dir.glob(f"*/{paths.CONFIG}"), *exp_dir.glob(f"{paths.VARIANTS}/*/*/{paths.CONFIG}")]
    for path in sorted(found, key=lambda p: p.stat().st_mtime):
        with contextlib.suppress(Exception):
            resolved = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
            if "stage_index" in resolved:
                order[str(resolved.get("stage"))] = int(resolved["stage_index"])
            else:
                order.update({s: i for i, s in enumerate(resolved.get("experiment", {}).get("stages", {}))})
    return order


def write_report(results: Path, experiments: list[str] | None = None) -> tuple[Path, Path]:
    """Rewrite efficiency.csv (rows of other experiments still in results/ kept) and report.md for
    all experiments."""
    results = Path(results)
    experiments = experiments or sorted(p.name for p in results.iterdir() if p.is_dir() and (
        any(p.glob(f"*/{paths.ACCOUNTING}")) or any(p.glob(f"*/{paths.SUCCESS}"))))
    collected, why = collect_all(results, experiments)
    rows_by_exp = {e: (rows, why) for e, rows in collected.items()}
    csv_path = results / paths.EFFICIENCY_CSV
    # other experiments' rows stay while their results do: a deleted results/<exp> drops its rows
    kept = [r for r in _read_csv(csv_path) if r.get("experiment") not in rows_by_exp
            and paths.experiment_dir(results, r.get("experiment") or "-").is_dir()]
    all_rows = kept + [r for rows, _ in rows_by_exp.values() for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(all_rows)
    safeio.atomic_write_text(csv_path, buf.getvalue())
    _write_attempts(results, rows_by_exp)
    all_exps = sorted({r["experiment"] for r in all_rows})
    rows_of = {e: rows_by_exp.get(e) or _rows_from_csv(all_rows, e) for e in all_exps}
    sections = {e: _section(results, e, *rows_of[e]) for e in all_exps}
    md = "# Experiment report\n\nGenerated by `python -m pipeline report`. One row per stage in " \
         "[efficiency.csv](efficiency.csv).\n\n" + "\n".join(head + body for head, body in sections.values())
    md_path = results / paths.REPORT_MD
    safeio.atomic_write_text(md_path, md)
    from pipeline.reporting.html import write_html      # report.html: the same sections, one page
    write_html(results, [{"experiment": e, "rows": rows_of[e][0], "table": markdown_table(rows_of[e][0], summary_columns(
        rows_of[e][0])), "body": sections[e][1]} for e in all_exps])
    return csv_path, md_path


def _write_attempts(results: Path, rows_by_exp: dict) -> None:
    """results/attempts.csv: every attempt of these experiments' stages; other experiments' rows kept
    while their results are."""
    path = results / paths.ATTEMPTS_CSV
    kept = [r for r in _read_csv(path) if r.get("experiment") not in rows_by_exp
            and paths.experiment_dir(results, r.get("experiment") or "-").is_dir()]
    new = [a for rows, _ in rows_by_exp.values() for r in rows for a in r.get(ATTEMPTS, [])]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ATTEMPT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(kept + new)
    safeio.atomic_write_text(path, buf.getvalue())


def _rows_from_csv(rows: list[dict], experiment: str) -> tuple[list[dict], str | None]:
    return [r for r in rows if r["experiment"] == experiment], None


def _section(results: Path, experiment: str, rows: list[dict], sacct_why: str | None) -> tuple[str, str]:
    """The experiment's section of report.md: (its heading and summary table, the rest); the HTML
    page shows the rest below a table of its own."""
    head = "\n".join([f"## {experiment}\n", markdown_table(rows, summary_columns(rows)), "", ""])
    out = [_total_time(rows)]
    out += _where_the_time_went(results, experiment, rows)
    if sacct_why:
        out.append(f"{schedulers()} accounting (sacct) columns are empty: {sacct_why}.\n")
    out += _accounting_notes(results, experiment, rows)
    skipped = [r for r in rows if r.get("status") == "skipped"]
    for r in skipped:
        out.append(f"- `{r['stage']}` was skipped: {r.get('skip_reason')}")
    for r in rows:
        fragment = StagePaths(paths.experiment_dir(results, experiment) / str(r["stage"])).report_fragment
        if fragment.exists() and not r.get("variant"):      # variants: the comparison below
            out.append(_relink(fragment.read_text(), f"{experiment}/{r['stage']}"))
    indexes = state.recorded_variants(results, experiment)
    if indexes:
        from pipeline.reporting.comparison import write_comparison
        out.append(write_comparison(results, experiment, indexes))
    return head, "\n".join(out) + "\n"


def summary(results: Path, experiment: str) -> str:
    """One paragraph: the experiment's totals (what `submit --wait` ends with)."""
    rows, _ = collect(Path(results), experiment)
    return timeline.totals_paragraph(experiment, timeline.totals(rows, [a for r in rows for a in r[ATTEMPTS]]))


def _where_the_time_went(results: Path, experiment: str, rows: list[dict]) -> list[str]:
    """The experiment's totals, its timeline figure and the sampler's reasons for empty columns."""
    attempts = [a for r in rows for a in r.get(ATTEMPTS, [])]
    out = ["**Totals.** " + timeline.totals_paragraph(experiment, timeline.totals(rows, attempts)) + "\n"]
    png = timeline.draw(attempts, paths.experiment_dir(results, experiment) / paths.TIMELINE_PNG)
    if png:
        out.append(f"![where the time went]({experiment}/{paths.TIMELINE_PNG})\n")
    reasons = {f"{k}: {why}" for r in rows for k, why in (r.get(UNMEASURED) or {}).items()}
    if reasons:
        out.append("Empty sampled columns, why: " + "; ".join(sorted(reasons)) + ".\n")
    idle = [r for r in rows if r.get("idle")]
    for r in idle:
        out.append(f"- **idle** `{r['stage']}`: {r['idle']}")
    return out + _advice_table(results, experiment, rows)


def _advice_table(results: Path, experiment: str, rows: list[dict]) -> list[str]:
    """What `advise` says for the stages' next submit, against what each stage's config.yaml asked."""
    import yaml

    from pipeline.accounting.advice import RESOURCES, advise, table
    resources = {}
    for r in rows:
        with contextlib.suppress(Exception):
            folder = paths.experiment_dir(results, experiment) / str(r["stage"])
            asked = (yaml.safe_load(StagePaths(folder).config.read_text()) or {})["resources"]
            resources[str(r["stage"])] = {k: asked[k] for k in RESOURCES}
    advice = table(advise(resources, rows, lambda row: row.get(ATTEMPTS, [])))
    if not advice:
        return []
    return ["\n**Advice for the next submit** (`python -m pipeline advise`; `submit --right-size` applies it):\n",
            markdown_table(advice, tuple(advice[0])), ""]


def _total_time(rows: list[dict]) -> str:
    """The experiment's compute time: every stage's wall_s (all its attempts) added up."""
    walls = [float(r["wall_s"]) for r in rows if r.get("wall_s") not in (None, "")]
    if not walls:
        return ""
    return (f"Total wall time of the stages: **{sum(walls):.1f} s** over {len(walls)} stages (every attempt; "
            f"stages that ran side by side count each).\n")


def summary_columns(rows: list[dict]) -> tuple[str, ...]:
    """The summary table's columns: the engine's own, and those metric columns some stage filled
    (which ones show depends on what the stages return, not on the report)."""
    filled = tuple(c for c in METRIC_COLUMNS if any(r.get(c) not in (None, "") for r in rows))
    return SUMMARY_HEAD + filled + SUMMARY_TAIL


def _accounting_notes(results: Path, experiment: str, rows: list[dict]) -> list[str]:
    """Say why cells are empty or rows thin, so no number is read as something it is not."""
    notes = []
    live = [r["stage"] for r in rows if r.get("sacct_state") and not r.get("sacct_totalcpu_s")
            and r.get(ENDED) is False]
    if live:
        notes.append(f"CPU time and efficiency are filled once the job ends (sacct counts only finished "
                     f"steps): {', '.join(f'`{s}`' for s in live)} still running or pending.\n")
    unsampled = [r["stage"] for r in rows if r.get(ENDED) and r.get("sacct_maxrss_task_mb") in (None, "")]
    if unsampled:
        notes.append(f"sacct MaxRSS is empty where a job or step ended before the scheduler's first memory sample "
                     f"(JobAcctGatherFrequency): {', '.join(f'`{s}`' for s in unsampled)}; peak_rss_mb is the "
                     "stage process's own peak.\n")
    for r in rows:
        if r.get("status") == UNREADABLE:
            path = StagePaths(paths.experiment_dir(results, experiment) / str(r["stage"])).accounting
            what = "unreadable (truncated or corrupt)" if path.exists() else "missing"
            notes.append(f"- `{r['stage']}`: {path} is {what}: its row has only the job id and sacct's "
                         "numbers; rerun the stage (`submit --force`) to record it again.")
    resumed = [r for r in rows if _int(r.get("attempts")) > 1 or _int(r.get("sacct_attempts")) > 1]
    if resumed:
        notes.append("Resumed stages (wall_s, sacct elapsed and CPU summed over every attempt): " + ", ".join(
            f"`{r['stage']}` ({r.get('attempts') or '?'} attempts, sacct {r.get('sacct_attempts') or '?'})"
            for r in resumed) + ".\n")
    return notes


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _relink(markdown: str, prefix: str) -> str:
    """A stage's fragment links files beside it; make the links relative to results/."""
    return re.sub(r"\]\((?!https?://|/)([^)]+)\)", lambda m: f"]({prefix}/{m.group(1)})", markdown)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
