"""`submit`: plan which stages run, submit them in topological order, each after what it needs."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import safeio
from pipeline import contract, executors
from pipeline.core import paths, state
from pipeline.core.config import Experiment
from pipeline.core.dag import forced, select, topological_order
from pipeline.core.fingerprint import fingerprints
from pipeline.core.schema import ConfigError
from pipeline.executors import After, Executor, LiveJob, SchedulerUnavailable, SubmitError
from pipeline.executors.watch import live_jobs


def plan(exp: Experiment, targets: list[str], force: bool, live: dict[str, LiveJob]) -> list[dict]:
    """Decide per stage: submit, cached (done, fingerprint matches) or queued (same job still live)."""
    fps = fingerprints(exp)
    rows, rerun = [], set()
    forced_stages = forced(exp.stages, targets) if force else set()
    for name in select(exp.stages, targets):
        stage_dir = exp.stage_dir(name)
        rec = state.job_record(stage_dir)
        upstream = [d for d in exp.stages[name].needs if d in rerun]
        if name in forced_stages:
            action, why = "submit", "--force"
        elif upstream:
            action, why = "submit", f"upstream {upstream[0]!r} reruns"
        elif state.is_done(stage_dir, fps[name]):
            action, why = "cached", state.explain(stage_dir, fps[name])
        elif rec.get("fingerprint") == fps[name] and _can_still_run(live.get(str(rec.get("job_id")))):
            live_state = live[str(rec["job_id"])].reason
            action, why = "queued", f"job {rec['job_id']} with this fingerprint is still {live_state}"
        else:
            action, why = "submit", state.explain(stage_dir, fps[name])
        if action == "submit":      # a queued job's dependents can wait on it as they are
            rerun.add(name)
        rows.append({"stage": name, "action": action, "why": why, "fingerprint": fps[name],
                     "job_id": rec.get("job_id") if action == "queued" else None})
    return rows


def _can_still_run(live: LiveJob | None) -> bool:
    """A live job that is not stuck behind a failed dependency (a scheduler keeps those forever)."""
    return bool(live) and not live.never_starts


def submit(exp: Experiment, executor: Executor, targets: list[str], force: bool = False,
           dry_run: bool = False, explain: bool = False, wait: bool = False) -> int:
    """Submit what the plan says; return an exit code (non-zero when a stage failed).

    Queued submissions return at once unless `wait`; local runs are finished when this returns.
    """
    lock = contextlib.nullcontext() if dry_run else \
        safeio.exclusive_lock(paths.submit_lock(exp.paths.results, exp.name), f"a submit of experiment {exp.name!r}")
    with lock:   # a dry run writes nothing, so it needs no lock (and works on a read-only results folder)
        live = _live_or_none(executor, [exp], _experiment_folders(exp), dry_run)
        answered, live = live is not None, live or {}
        rows = plan(exp, targets, force, live)
        queued = [r["stage"] for r in rows if r["action"] == "submit" and not exp.stages[r["stage"]].on_submit_host]
        problems = executor.check(exp, queued) if answered else []
        if problems and not dry_run:
            raise ConfigError("", "these stages could never start on this cluster:\n  " + "\n  ".join(problems),
                              exp.source)
        for problem in problems:
            print(f"[pipeline] warning: would never start here: {problem}")
        if explain:
            for r in rows:
                print(f"{r['stage']:<16} {r['action']:<7} {r['why']}")
        job_of: dict[str, str] = {r["stage"]: str(r["job_id"]) for r in rows if r["action"] == "queued"}
        here = _submit_host(executor, dry_run)
        for r in sorted(rows, key=lambda r: not (here and exp.stages[r["stage"]].on_submit_host)):  # those first
            if r["action"] != "submit":
                if r["action"] == "cached" and not dry_run:
                    _mark_cached(exp, r["stage"])
                continue
            if here and exp.stages[r["stage"]].on_submit_host:
                _run_on_submit_host(exp, r, executor, here, live, dry_run)
                continue
            after = After(ok=tuple(job_of[d] for d in exp.stages[r["stage"]].needs if d in job_of))
            if contract.experiment_wide(exp.stages[r["stage"]].kind) and executor.queues_jobs:
                # the report runs on whatever finished: after its needs however they end, and
                # after every other run of the experiment still in flight
                after = After(any=tuple(dict.fromkeys([*after.ok, *_in_flight(exp, live, executor)])))
            if dry_run:
                job_of[r["stage"]] = f"<job of {r['stage']}>"
                print(f"----- {r['stage']}: {executor.name} submission -----\n{executor.script(exp, r['stage'], after)}")
                continue
            _prepare_rerun(exp, executor, r, live)
            try:
                sub = executor.submit(exp, r["stage"], after)
            except Exception as err:  # e.g. sbatch refused it: leave no half-submitted DAG queued
                ours = [str(x["job_id"]) for x in rows if x.get("state") == "submitted"]
                executor.cancel(ours)
                reply = " / ".join(line.strip() for line in str(err).splitlines() if line.strip())
                raise SubmitError(f"stage {r['stage']!r} could not be submitted: {reply or type(err).__name__}; "
                                  + (f"cancelled the job(s) this submit had queued: {', '.join(ours)}" if ours
                                     else "no other job of this submit was queued")) from err
            job_of[r["stage"]] = sub.job_id
            r.update(job_id=sub.job_id, log=str(sub.log), state=sub.state)
            state.write_job_record(exp.stage_dir(r["stage"]), {
                "job_id": sub.job_id, "executor": executor.name, "log": str(sub.log),
                "fingerprint": r["fingerprint"], "state": sub.state, "after": list(after.ok), "cached": False})
        print_table(exp, rows, dry_run)
    if dry_run:
        return 0
    if wait and executor.queues_jobs:
        return _wait_and_summarise(exp, [r["job_id"] for r in rows if r.get("job_id")], [r["stage"] for r in rows])
    if not executor.queues_jobs:
        _refresh_report(exp)
    return 1 if any(r.get("state") in ("failed", "never-run") for r in rows) else 0


def _submit_host(executor: Executor, dry_run: bool) -> Executor | None:
    """Where the stages marked `where: submit_host` run when the others are queued as jobs: in
    this process's machine (the login node), one after another; None when every stage runs here
    anyway."""
    return executors.make_executor("local", dry_run, executor.entry) if executor.queues_jobs else None


def _run_on_submit_host(exp: Experiment, row: dict, executor: Executor, here: Executor, live: dict,
                        dry_run: bool) -> None:
    """Run a `where: submit_host` stage now, before anything that needs it is queued; a failure
    ends the submit before any job is queued (SubmitError, with its log)."""
    stage, folder = row["stage"], exp.stage_dir(row["stage"])
    if dry_run:
        print(f"----- {stage}: runs here, on the submit host, before any job is queued -----\n"
              f"{here.script(exp, stage)}")
        return
    _prepare_rerun(exp, executor, row, live)     # e.g. a job of it queued before it was marked so
    print(f"[pipeline] {stage}: runs on the submit host (where: submit_host), before the jobs", flush=True)
    sub = here.submit(exp, stage)
    row.update(job_id=sub.job_id, log=str(sub.log), state=sub.state)
    state.write_job_record(folder, {"job_id": sub.job_id, "executor": here.name, "log": str(sub.log),
                                    "variant": exp.variant, "fingerprint": row["fingerprint"], "state": sub.state,
                                    "after": [], "cached": False})
    if sub.state != "done":
        raise SubmitError(f"stage {stage!r} failed on the submit host (log: {sub.log}); nothing was queued. "
                          f"Fix it and submit again")


def _live_or_none(executor: Executor, exps: list[Experiment], more: list[Path], dry_run: bool):
    """_live; for a dry run whose scheduler does not answer, None (said once): it still shows its plan,
    not checked against the queue or the cluster."""
    try:
        return _live(executor, exps, more)
    except SchedulerUnavailable as err:
        if not dry_run:
            raise
        print(f"[pipeline] warning: {err}; the plan below is not checked against the queue or the cluster",
              flush=True)
        return None


def _prepare_rerun(exp: Experiment, executor: Executor, row: dict, live: dict) -> None:
    """Before a stage's new job: it is not done, earlier queued jobs of it are cancelled (they
    would run later and overwrite it), and a forced or upstream-triggered rerun starts clean."""
    stage_dir = exp.stage_dir(row["stage"])
    state.clear_success(stage_dir)
    superseded = [j for j in state.all_job_ids(stage_dir) if j in live]
    if superseded:
        executor.cancel(superseded)
        print(f"[pipeline] {row['stage']}: cancelled its earlier queued job(s) {', '.join(superseded)}")
    if row["why"] == "--force" or row["why"].startswith("upstream "):
        state.discard_attempts(stage_dir)
        if exp.stages[row["stage"]].resources.array > 1:   # its tasks share the folder: none may clean it
            state.clean_stage_dir(stage_dir)


def _wait_and_summarise(exp: Experiment, job_ids: list[str], selected: list[str], poll_s: float = 3.0) -> int:
    """Poll squeue until every job of the experiment ended or can never start; cancel the
    latter (they would wait forever) before printing the states."""
    from pipeline.cli.status import reconcile, stage_states
    print(f"[pipeline] waiting for {len(job_ids)} job(s) of {exp.name!r} ...", flush=True)
    _wait_until_settled([exp], poll_s)
    cancelled = reconcile(exp)
    for message in cancelled:
        print(f"[pipeline] {message}")
    if cancelled:                   # what waited on them with afterany (the report) runs now
        _wait_until_settled([exp], poll_s)
    _refresh_report(exp)
    rows = [r for r in stage_states(exp) if r["stage"] in selected]
    for r in rows:
        print(f"{r['stage']:<16} {r['state']:<10} {r['job_id'] or '-':<8} {r['log'] or ''}")
    from pipeline.reporting.report import summary
    print(f"[pipeline] {summary(exp.results_dir.parent, exp.name)}", flush=True)
    return 0 if all(r["state"] in ("done", "cached", "skipped") for r in rows) else 1


def _wait_until_settled(exps: list[Experiment], poll_s: float, give_up_s: float = 1800) -> None:
    """Poll (one squeue per poll) until every job of these experiments ended or can never start.
    Once nothing has changed for STEADY_S, the pause between polls grows (x1.5, up to MAX_POLL_S)
    and drops back to `poll_s` when a job starts or ends: short stages are seen to end within
    seconds, a day-long run is polled about once a minute. The jobs go on while the scheduler does
    not answer, so an outage is waited out (said once); after `give_up_s` of it the wait ends with
    SchedulerUnavailable."""
    from pipeline.cli.status import stuck_or_done
    down_since, pause, seen, since = None, poll_s, None, time.monotonic()
    while True:
        try:
            live = _live(None, exps)
            if stuck_or_done(live):
                return
            down_since = None
            now = {job: j.state for job, j in live.items()}
            if now != seen:
                seen, since = now, time.monotonic()
            steady = time.monotonic() - since >= STEADY_S
            pause = min(pause * 1.5, MAX_POLL_S) if steady else poll_s
        except SchedulerUnavailable as err:
            if down_since is None:
                down_since = time.monotonic()
                print(f"[pipeline] {err}; still waiting (the jobs run on)", flush=True)
            elif time.monotonic() - down_since > give_up_s:
                raise
        time.sleep(pause)


MAX_POLL_S = 60.0
STEADY_S = 60.0     # unchanged this long, the queue is polled less and less often


def _refresh_report(exp: Experiment) -> None:
    """Rewrite efficiency.csv/report.md once every job ended, so the report stage's own row
    and the final sacct states are in (the report stage cannot see its own job end)."""
    if any(s.kind == "report" for s in exp.stages.values()):
        from pipeline.reporting.report import write_report
        csv_path, md_path = write_report(exp.results_dir.parent, [exp.name])
        print(f"[pipeline] report: {md_path} ; accounting: {csv_path}")


def _mark_cached(exp: Experiment, stage: str) -> None:
    rec = state.job_record(exp.stage_dir(stage))
    state.write_job_record(exp.stage_dir(stage), {**rec, "cached": True})


def _live(executor: Executor | None, exps: list[Experiment], more: list[Path] = ()) -> dict[str, LiveJob]:
    """The jobs any stage of these experiments (and the `more` stage folders) ever had that are
    still queued or running (one query per backend); none when this submit's backend runs stages
    at once."""
    if executor is not None and not executor.queues_jobs:
        return {}
    from pipeline.executors.watch import job_ids_by_backend
    folders = [*(e.stage_dir(n) for e in exps for n in e.stages), *more]
    return live_jobs(job_ids_by_backend(dict.fromkeys(folders)))


def _experiment_folders(exp: Experiment) -> list[Path]:
    """The folders of every stage of the experiment but the experiment-wide ones (the report):
    its plain run's and those of every variant submitted so far."""
    from pipeline.core.variants import recorded_experiments

    def own(e: Experiment) -> list[str]:
        return [n for n in e.stages if not contract.experiment_wide(e.stages[n].kind)]
    folders = [exp.results_dir / n for n in own(exp)]
    folders += [v.stage_dir(n) for v in recorded_experiments(exp) for n in own(v)]
    return list(dict.fromkeys(folders))


def _in_flight(exp: Experiment, live: dict[str, LiveJob], executor: Executor) -> tuple[str, ...]:
    """The live jobs of any run of the experiment (plain or a variant, this submit's or an earlier
    one's): the experiment-wide report waits for all of them, so it never reports while one of
    them is still queued or running."""
    ids = {j for folder in _experiment_folders(exp) for j in state.all_job_ids(folder)}
    # not one that can never start: the report would wait on it until someone cancels it
    return tuple(dict.fromkeys(executor.array_id(j) for j, job in live.items() if j in ids and not job.never_starts))


def print_table(exp: Experiment, rows: list[dict], dry_run: bool) -> None:
    header = ("stage", "action", "job id", "partition", "gpus", "time", "log")
    lines = [header]
    for r in rows:
        res = exp.stages[r["stage"]].resources
        action = r.get("state") if r.get("state") in ("done", "failed", "never-run") else r["action"]
        lines.append((r["stage"], ("dry-run " if dry_run and r["action"] == "submit" else "") + action,
                      str(r.get("job_id") or "-"), res.partition or "(default)", str(res.gpus), res.time,
                      r.get("log") or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


# ---- variants and sweeps (pipeline/variants.py): one submit, several variants side by side ----

def submit_variants(exps: list[Experiment], executor: Executor, targets: list[str], force: bool = False,
                    dry_run: bool = False, limit: int = 0, wait: bool = False, explain: bool = False) -> int:
    """Submit the variants of one experiment. A stage folder that several variants share runs
    once; the runs of one stage with the same resources go to the scheduler as one job array, task i
    waiting with aftercorr for task i of an upstream array when the tasks match one to one (else
    afterok on the upstream jobs): a failed variant stops only its own later stages. The
    experiment-wide stages (the report) run once at the end, after every variant, done or not."""
    from pipeline.core.variants import write_index
    lock = contextlib.nullcontext() if dry_run else \
        safeio.exclusive_lock(paths.submit_lock(exps[0].paths.results, exps[0].name),
                              f"a submit of experiment {exps[0].name!r}")
    with lock:
        live = _live_or_none(executor, exps, _experiment_folders(exps[0]), dry_run)
        answered, live = live is not None, live or {}
        runs = _plan_runs(exps, targets, force, live)
        if explain:
            for r in runs.values():
                print(f"{r['stage']:<16} {','.join(v or '-' for v in r['variants']):<24} {r['row']['action']:<7} "
                      f"{r['row']['why']}")
        todo = [r for r in runs.values() if r["row"]["action"] == "submit"]
        problems = executor.check(exps[0], sorted({r["stage"] for r in todo
                                                   if not exps[0].stages[r["stage"]].on_submit_host})) if answered else []
        if problems and not dry_run:
            raise ConfigError("", "these stages could never start on this cluster:\n  " + "\n  ".join(problems),
                              exps[0].source)
        for problem in problems:
            print(f"[pipeline] warning: would never start here: {problem}")
        if not dry_run:
            for exp in exps:
                write_index(exp)
        job_of = {folder: str(r["row"]["job_id"]) for folder, r in runs.items() if r["row"]["action"] == "queued"}
        here = _submit_host(executor, dry_run)
        for r in todo if here else []:       # before any job: a failure here queues nothing
            if r["exp"].stages[r["stage"]].on_submit_host:
                _run_on_submit_host(r["exp"], r["row"], executor, here, live, dry_run)
        todo = [r for r in todo if not (here and r["exp"].stages[r["stage"]].on_submit_host)]
        submitted: list[str] = []
        try:
            for stage in topological_order(exps[0].stages):
                for group in _array_groups([r for r in todo if r["stage"] == stage], executor):
                    submitted += _submit_group(group, executor, job_of, live, limit, dry_run)
        except SubmitError as err:           # leave no half-submitted sweep queued
            executor.cancel(submitted)
            raise SubmitError(f"{err}; " + (f"cancelled the job(s) this submit had queued: {', '.join(submitted)}"
                                            if submitted else "no other job of this submit was queued")) from err
        wide = [s for s in topological_order(exps[0].stages) if contract.experiment_wide(exps[0].stages[s].kind)
                and s in select(exps[0].stages, targets)]
        for stage in wide if (submitted or force or (dry_run and todo)) else []:
            run = {"stage": stage, "exp": exps[0], "folder": exps[0].stage_dir(stage), "variants": ["(all)"],
                   "row": {"stage": stage, "action": "submit", "why": "after every variant",
                           "fingerprint": fingerprints(exps[0])[stage]}}
            waits = dict.fromkeys([*(executor.array_id(j) for j in submitted), *_in_flight(exps[0], live, executor)])
            after = After(any=tuple(waits)) if waits and executor.queues_jobs \
                else After(any=("<every job above>",)) if dry_run else After()
            runs[run["folder"]] = run
            submitted += _submit_one(run, executor, after, live, dry_run)
        _print_variant_table(runs, dry_run)
        _say_what_runs_again(runs, len(exps))
    if dry_run:
        return 0
    if wait and executor.queues_jobs:
        return _wait_variants(exps)
    return 1 if any(r["row"].get("state") in ("failed", "never-run") for r in runs.values()) else 0


def _say_what_runs_again(runs: dict, variants: int) -> None:
    """After a sweep in which some runs failed: which variants this submit runs again (the
    others' results are kept), in one line."""
    again = sorted({v for r in runs.values() if r["row"]["action"] == "submit" and r["row"].get("failed_before")
                    for v in r["variants"]})
    if again:
        print(f"[pipeline] {len(again)} of {variants} variant(s) run again (their last run failed or was "
              f"interrupted; the others' results are kept): {', '.join(again)}")


def _plan_runs(exps: list[Experiment], targets: list[str], force: bool, live: dict) -> dict:
    """Folder -> the run of one stage that one or more variants share (the first variant's row)."""
    runs: dict = {}
    for exp in exps:
        for row in plan(exp, targets, force, live):
            if contract.experiment_wide(exp.stages[row["stage"]].kind):
                continue
            folder = exp.stage_dir(row["stage"])
            row["failed_before"] = row["action"] == "submit" and _ended_without_result(folder)
            run = runs.setdefault(folder, {"stage": row["stage"], "exp": exp, "folder": folder, "row": row,
                                           "variants": []})
            run["variants"].append(exp.variant)
    return runs


def _ended_without_result(folder: Path) -> bool:
    """The stage's last job or attempt ended without its result (failed, interrupted, never run)."""
    record, attempts = state.job_record(folder), state.read_attempts(folder).get("attempts") or [{}]
    return record.get("state") in ("failed", "never-run") or attempts[-1].get("status") in ("failed", "interrupted")


def _array_groups(runs: list[dict], executor: Executor) -> list[list[dict]]:
    """Runs of one stage that can be one job array: same resources, not themselves an array."""
    from pipeline.core.schema import to_dict
    if not executor.runs_arrays:
        return [[r] for r in runs]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        res = r["exp"].stages[r["stage"]].resources
        key = repr(to_dict(res)) if res.array == 1 else f"own:{r['folder']}"
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def _after(group: list[dict], job_of: dict[Path, str], executor: Executor) -> After:
    """What a group waits for: task by task (`each`) on an upstream array whose task i is this
    group's run i's upstream, for every run; `ok` on every other upstream job."""
    ok: list[str] = []
    each: list[str] = []
    for need in group[0]["exp"].stages[group[0]["stage"]].needs:
        ups = [job_of.get(r["exp"].stage_dir(need)) for r in group]
        tasks = [executor.array_task(u) if u else None for u in ups]
        arrays = {t[0] for t in tasks if t}
        if len(group) > 1 and all(tasks) and len(arrays) == 1 and [t[1] for t in tasks] == list(range(len(group))):
            each += list(arrays)
        else:
            ok += [u for u in ups if u]
    return After(ok=tuple(dict.fromkeys(ok)), each=tuple(dict.fromkeys(each)))


def _submit_group(group: list[dict], executor: Executor, job_of: dict, live: dict, limit: int,
                  dry_run: bool) -> list[str]:
    after = _after(group, job_of, executor)
    if len(group) == 1:
        return _submit_one(group[0], executor, after, live, dry_run, job_of)
    stage = group[0]["stage"]
    if dry_run:
        for i, r in enumerate(group):
            job_of[r["folder"]] = executor.dry_run_task_id(f"<array of {stage}>", i)
        print(f"----- {stage}: one job array of {len(group)} tasks ({', '.join(r['exp'].variant for r in group)}), "
              f"dependency {executor.describe(after) or 'none'} -----\n"
              f"{executor.script(group[0]['exp'], stage, after, len(group), limit)}")
        return []
    for r in group:
        _prepare_rerun(r["exp"], executor, r["row"], live)
    try:
        subs = executor.submit_array([r["exp"] for r in group], stage, after, limit)
    except Exception as err:  # noqa: BLE001 - one line, as a single submission says it
        raise SubmitError(f"stage {stage!r} (a job array of {len(group)} variants) could not be submitted: "
                          f"{str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}") from err
    for r, sub in zip(group, subs):
        _record(r, sub, executor, after, job_of)
    return [s.job_id for s in subs]


def _submit_one(run: dict, executor: Executor, after: After, live: dict, dry_run: bool,
                job_of: dict | None = None) -> list[str]:
    if dry_run:
        if job_of is not None:
            job_of[run["folder"]] = f"<job of {run['stage']}>"
        print(f"----- {run['stage']} ({', '.join(run['variants'])}): {executor.name} submission -----\n"
              f"{executor.script(run['exp'], run['stage'], after)}")
        return []
    _prepare_rerun(run["exp"], executor, run["row"], live)
    try:
        sub = executor.submit(run["exp"], run["stage"], after)
    except Exception as err:  # noqa: BLE001
        raise SubmitError(f"stage {run['stage']!r} could not be submitted: {err}") from err
    _record(run, sub, executor, after, job_of if job_of is not None else {})
    return [sub.job_id]


def _record(run: dict, sub, executor: Executor, after: After, job_of: dict) -> None:
    job_of[run["folder"]] = sub.job_id
    run["row"].update(job_id=sub.job_id, log=str(sub.log), state=sub.state)
    state.write_job_record(run["folder"], {
        "job_id": sub.job_id, "executor": executor.name, "log": str(sub.log), "variant": run["exp"].variant,
        "fingerprint": run["row"]["fingerprint"], "state": sub.state, "after": list(after.ok), "cached": False})


def _print_variant_table(runs: dict, dry_run: bool) -> None:
    lines = [("stage", "variants", "action", "job id", "folder")]
    for r in runs.values():
        row = r["row"]
        action = row.get("state") if row.get("state") in ("done", "failed", "never-run") else row["action"]
        lines.append((r["stage"], ",".join(v or "-" for v in r["variants"]),
                      ("dry-run " if dry_run and row["action"] == "submit" else "") + action,
                      str(row.get("job_id") or "-"), str(r["folder"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def _wait_variants(exps: list[Experiment], poll_s: float = 3.0) -> int:
    """As _wait_and_summarise, for every variant: cancel what can never start, write the report,
    name each stage that did not succeed; 1 if any did not."""
    from pipeline.cli.status import reconcile_all, states_of
    print(f"[pipeline] waiting for the jobs of {len(exps)} variant(s) ...", flush=True)
    _wait_until_settled(exps, poll_s)
    cancelled = reconcile_all(exps)
    for message in cancelled:
        print(f"[pipeline] {message}")
    if cancelled:                   # what waited on them with afterany (the report) runs now
        _wait_until_settled(exps, poll_s)
    _refresh_report(exps[0])
    from pipeline.reporting.report import summary
    print(f"[pipeline] {summary(exps[0].results_dir.parent, exps[0].name)}", flush=True)
    bad = [(exp.variant, r) for exp, rows in zip(exps, states_of(exps)) for r in rows  # the shared report is not a variant's
           if r["state"] not in ("done", "cached", "skipped")
           and not contract.experiment_wide(exp.stages[r["stage"]].kind)]
    for variant, r in bad:
        print(f"[pipeline] variant {variant}: {r['stage']} {r['state']} (job {r['job_id'] or '-'}): {r['reason']}")
    failed = {variant for variant, _ in bad}
    print(f"[pipeline] {len(exps) - len(failed)} of {len(exps)} variant(s) done"
          + (f"; not done: {', '.join(sorted(failed))}" if failed else ""))
    return 1 if bad else 0
