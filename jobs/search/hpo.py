"""Hyper-parameter search with Optuna, shared by the workers of one SLURM job array.

The study lives in Optuna's journal storage (JournalFileBackend): an append-only file in the
stage folder, safe for several processes on a shared file system, no database server. Every
worker (array task) runs `work`: it pulls trials until the study holds `n_trials` finished
(complete or pruned) trials, then each writes the same summary files.

What Optuna does not give here, and this module adds:
- Heartbeats for the journal storage. Optuna's heartbeat (`heartbeat_interval`, and
  RetryFailedTrialCallback) exists only for RDBStorage; with a journal, a worker killed mid-trial
  (scancel, node failure, requeue) would leave its trial RUNNING forever and the study would never
  reach n_trials. So each running trial has a heartbeat file its worker touches; a trial whose
  file is older than `stale_after_s` is marked FAIL by whichever worker looks next, and its
  parameters are enqueued again, so the study loses at most that trial's work.
- An exact trial count across workers. Optuna's MaxTrialsCallback counts after the fact, so
  several workers starting at once overshoot; here the count and the `ask` happen under one file
  lock, so the study ends with exactly n_trials finished trials.
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from safeio import atomic_write_bytes, atomic_write_json, atomic_write_text, heartbeat, waiting_lock

_LOG = logging.getLogger(__name__)

SPACE_TYPES = ("float", "int", "categorical")


@dataclass
class SearchSettings:
    n_trials: int
    direction: str              # maximize | minimize
    sampler: str                # tpe | random
    pruner: str                 # median | hyperband | none
    startup_trials: int         # trials before TPE models and the median pruner judges
    warmup_epochs: int          # median pruner: epochs of a trial never pruned
    max_epochs: int             # hyperband's max resource
    seed: int
    heartbeat_s: float
    stale_after_s: float
    poll_s: float = 2.0


def check_space(space: dict[str, dict[str, Any]], valid_keys: Callable[[str], bool]) -> list[str]:
    """Problems with a `search_space:` mapping (name -> {type, low, high, log, step, choices});
    `valid_keys(name)` says whether a name is a parameter the trial can set."""
    problems = []
    for name, spec in space.items():
        where = f"search_space.{name}"
        if not valid_keys(name):
            problems.append(f"{where}: not a parameter a trial can set")
            continue
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            problems.append(f"{where}: expected a mapping with type: {' | '.join(SPACE_TYPES)}")
            continue
        kind = spec["type"]
        if kind == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                problems.append(f"{where}: categorical needs a non-empty list `choices`")
            continue
        low, high = spec.get("low"), spec.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
            problems.append(f"{where}: {kind} needs numbers low < high, got low={low!r} high={high!r}")
        elif spec.get("log") and low <= 0:
            problems.append(f"{where}: log scale needs low > 0, got {low}")
        elif kind == "int" and (int(low) != low or int(high) != high):
            problems.append(f"{where}: int needs whole numbers, got low={low} high={high}")
        unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
    return problems


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per search-space entry, drawn through the trial (so the sampler sees them)."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")),
                                             step=int(spec.get("step") or 1))
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               log=bool(spec.get("log")), step=spec.get("step"))
    return values


def journal_path(out_dir: Path, fingerprint: str) -> Path:
    """One journal per fingerprint: a changed search never continues an older study."""
    return out_dir / f"study-{fingerprint}.journal"


def repair_journal(path: Path, log) -> Path | None:
    """Keep the readable start of a damaged journal, set the rest aside; the path it went to.

    Optuna reads the journal line by line and stops every worker at the first line that is not
    JSON (a worker killed mid-write leaves half a line, the next append lands after it), so one
    bad write would fail the search on every resubmit. Each line is one whole operation, so the
    lines before the first bad one are a consistent study: trials finished there are kept, and a
    trial left RUNNING is reaped like any other whose worker stopped. Under Optuna's own journal
    lock, so no worker appends meanwhile."""
    from optuna.storages.journal import JournalFileSymlinkLock
    if not path.exists():
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        lines = path.read_bytes().splitlines(keepends=True)
        good = next((i for i, line in enumerate(lines) if not _whole_json_line(line)), len(lines))
        if good == len(lines):
            return None
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        atomic_write_bytes(aside, b"".join(lines[good:]))
        atomic_write_bytes(path, b"".join(lines[:good]))
    finally:
        lock.release()
    log.warning("study journal %s: line %d of %d is damaged; kept the %d readable lines (the trials "
                "finished in them) and set the rest aside in %s", path, good + 1, len(lines), good, aside)
    return aside


def _whole_json_line(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def open_study(out_dir: Path, name: str, fingerprint: str, settings: SearchSettings, task: int,
               log=_LOG):
    """Create or load the study (a damaged journal repaired first); under the study lock, since
    workers start together."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    path = journal_path(out_dir, fingerprint)
    # Each worker its own seed: with one seed, workers in the random start-up phase draw the same points.
    seed = settings.seed + task
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials) \
        if settings.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                                              n_warmup_steps=settings.warmup_epochs),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=settings.max_epochs),
              "none": optuna.pruners.NopPruner}[settings.pruner]()
    with waiting_lock(out_dir / "study.lock"):
        repair_journal(path, log)
        storage = JournalStorage(JournalFileBackend(str(path)))
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                   direction=settings.direction, load_if_exists=True)


def counts(study) -> dict[str, int]:
    from optuna.trial import TrialState
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {name.lower(): states.count(getattr(TrialState, name)) for name in
            ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}


def reap_stale(study, beats: Path, stale_after_s: float, log) -> list[int]:
    """RUNNING trials whose worker stopped beating: FAIL, and their parameters enqueued again."""
    from optuna.trial import TrialState
    now, reaped = time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = beats / str(trial.number)
        last = beat.stat().st_mtime if beat.exists() else trial.datetime_start.timestamp()
        if now - last <= stale_after_s:
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        study.set_user_attr(f"trial_{trial.number}_failed", f"no heartbeat for {now - last:.0f} s")
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        reaped.append(trial.number)
        log.warning("trial %d: no heartbeat for %.0f s (its worker was killed or requeued): marked failed, its "
                    "parameters enqueued again", trial.number, now - last)
    return reaped


def work(study, out_dir: Path, settings: SearchSettings, objective: Callable[[Any], float], log,
         max_failed: int | None = None, progress: Callable[..., None] | None = None) -> None:
    """Pull trials until the study holds n_trials finished ones. A trial that raises is FAIL (not
    retried: its parameters failed); a pruned one counts as finished. Returns when the study is
    complete; meanwhile a worker with nothing to ask waits, reaping stale trials of others.
    `progress` hears trials finished of n_trials and the best value so far."""
    import optuna
    from optuna.trial import TrialState
    beats, lock = out_dir / "heartbeats", out_dir / "study.lock"
    max_failed = max_failed if max_failed is not None else max(3, settings.n_trials)
    while True:
        with waiting_lock(lock):
            reap_stale(study, beats, settings.stale_after_s, log)
            n = counts(study)
            finished = n["complete"] + n["pruned"]
            if progress is not None:
                best = {"best_value": study.best_value} if n["complete"] else {}
                progress(min(finished, settings.n_trials), settings.n_trials, unit="trial", **best)
            if finished >= settings.n_trials:
                return
            if n["fail"] > max_failed:
                raise RuntimeError(f"{n['fail']} trials failed (more than {max_failed}); see this log's tracebacks "
                                   "and the search space")
            trial = study.ask() if finished + n["running"] < settings.n_trials else None
            if trial is not None:
                (beats / str(trial.number)).parent.mkdir(parents=True, exist_ok=True)
                (beats / str(trial.number)).touch()
        if trial is None:
            time.sleep(settings.poll_s)
            continue
        with heartbeat(beats / str(trial.number), settings.heartbeat_s, create=True, remove=True):
            try:
                value = objective(trial)
            except optuna.TrialPruned as pruned:
                study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d pruned: %s", trial.number, pruned)
                continue
            except Exception as err:  # noqa: BLE001 - a broken trial fails alone; the study goes on
                study.tell(trial, state=TrialState.FAIL)
                log.exception("trial %d failed: %s", trial.number, err)
                continue
        study.tell(trial, value)
        log.info("trial %d: %.4f with %s", trial.number, value, trial.params)


def summarise(study, out_dir: Path, settings: SearchSettings) -> dict:
    """trials.csv, best.json, the two plots; returns best value, params and trial counts."""
    from optuna.trial import TrialState
    frame = study.trials_dataframe()
    atomic_write_text(out_dir / "trials.csv", frame.to_csv(index=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError("the study finished without a complete trial (every trial was pruned or failed): "
                           "widen the search space or relax the pruner")
    best = study.best_trial
    n = counts(study)
    summary = {"best_value": best.value, "best_params": best.params, "best_trial": best.number,
               "best_user_attrs": best.user_attrs, "direction": settings.direction,
               "n_complete": n["complete"], "n_pruned": n["pruned"], "n_failed": n["fail"],
               "n_running": n["running"], "trial_seconds": round(sum(
                   (t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials(deepcopy=False)
                   if t.datetime_complete and t.datetime_start), 1)}
    atomic_write_json(out_dir / "best.json", summary)
    summary["plots"] = write_plots(study, out_dir)
    return summary


def write_plots(study, out_dir: Path) -> dict[str, str]:
    """Optimization history and parameter importances (Optuna's matplotlib versions); an
    importance plot needs two complete trials that differ: without, the reason is returned."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    written = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # ExperimentalWarning on every call
        for name, plot in (("history.png", vis.plot_optimization_history),
                           ("importance.png", vis.plot_param_importances)):
            try:
                ax = plot(study)
                fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
                fig.tight_layout()
                tmp = out_dir / f".{name}.tmp.png"
                fig.savefig(tmp, dpi=110)
                plt.close(fig)
                tmp.replace(out_dir / name)
                written[name] = "written"
            except Exception as err:  # noqa: BLE001 - e.g. importances of a single complete trial
                written[name] = f"not drawn: {type(err).__name__}: {err}"
    return written
