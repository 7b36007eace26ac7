"""SLURM's formats: time limits and memory sizes as sbatch reads them, its names and long
options; `check_request` refuses at config load what sbatch would read wrongly or refuse halfway
through a DAG."""
from __future__ import annotations

import difflib
import re

from pipeline.core.schema import ConfigError

MEM_RE = re.compile(r"\d+[KMGT]?")                  # fullmatch
# sbatch(1) --time: "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S".
TIME_RE = re.compile(r"(?:([0-9]+)-)?([0-9]+(?::[0-9]+){0,2})")   # fullmatch
TIME_FORMS = "M, M:S, H:M:S, D-H, D-H:M, D-H:M:S"
# Control characters (newline, tab, NUL, C1, Unicode line breaks) would end or corrupt an
# #SBATCH line; the job script would then run with options nobody wrote.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_request(r, key: str) -> None:
    """What sbatch would read wrongly, or refuse halfway through a DAG, is refused here."""
    for name in ("partition", "constraint", "account", "qos", "gpu_type"):
        _check_slurm_name(f"{key}.{name}", getattr(r, name))
    _check_text(f"{key}.time", r.time)
    try:
        time_seconds(r.time)
    except ValueError as err:
        raise ConfigError(f"{key}.time", f"got {r.time!r}; {err}") from None
    _check_text(f"{key}.mem", r.mem)
    if not MEM_RE.fullmatch(r.mem):
        raise ConfigError(f"{key}.mem", f"got {r.mem!r}; expected a number with an optional K/M/G/T suffix")
    for opt, value in r.extra.items():
        _check_extra(f"{key}.extra.{opt}", opt, value)


def gpu_request(r, form: str | None = None) -> dict[str, str]:
    """The sbatch/srun option that asks for a stage's GPUs, in the cluster's form (`gpu_request`, or
    `form` where a command only takes one): {"gpus-per-node": "[type:]N"} or {"gres": "gpu:[type:]N"};
    {} without GPUs."""
    if not r.gpus:
        return {}
    typed = f"{r.gpu_type}:{r.gpus}" if r.gpu_type else str(r.gpus)
    return {"gres": f"gpu:{typed}"} if (form or r.gpu_request) == "gres" else {"gpus-per-node": typed}


def _check_text(key: str, value: str) -> None:
    if CONTROL_RE.search(value):
        raise ConfigError(key, f"got {value!r}; control characters (newline, tab, NUL, ...) cannot go into "
                          "an sbatch option")


def _check_slurm_name(key: str, value: str | None) -> None:
    if value is None:
        return
    _check_text(key, value)
    if not value:
        raise ConfigError(key, "empty; write null to leave the option out")
    if re.search(r"\s", value):
        raise ConfigError(key, f"got {value!r}; SLURM names have no spaces (a list is comma-separated)")


# sbatch long options (sbatch(1), SLURM 22.05) a stage may add under `resources.extra`.
SBATCH_OPTIONS = frozenset("""
    acctg-freq batch bb bbf begin cluster-constraint clusters comment container contiguous core-spec
    cores-per-socket cpu-freq cpus-per-gpu deadline delay-boot distribution exclude exclusive export
    export-file extra-node-info get-user-env gpu-bind gpu-freq gpus-per-socket gpus-per-task gres
    gres-flags hint hold ignore-pbs kill-on-invalid-dep licenses mail-type mail-user mcs-label mem-bind
    mincpus network nice no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu
    ntasks-per-node ntasks-per-socket overcommit oversubscribe power prefer priority profile propagate
    reboot requeue reservation sockets-per-node spread-job switches thread-spec threads-per-core
    time-min tmp use-min-nodes wckey""".split())
FLAG_OPTIONS = frozenset("contiguous hold ignore-pbs no-requeue overcommit oversubscribe reboot requeue "
                         "spread-job use-min-nodes".split())
OPTIONAL_VALUE_OPTIONS = frozenset("exclusive export get-user-env nice no-kill propagate".split())
# Options the pipeline writes itself (or that would break how it submits and reads jobs).
PIPELINE_OPTIONS = {
    "time": "use resources.time", "partition": "use resources.partition", "mem": "use resources.mem",
    "mem-per-cpu": "use resources.mem (sbatch refuses --mem together with --mem-per-cpu)",
    "mem-per-gpu": "use resources.mem (sbatch refuses --mem together with --mem-per-gpu)",
    "cpus-per-task": "use resources.cpus_per_task", "gpus": "use resources.gpus",
    "gpus-per-node": "use resources.gpus", "constraint": "use resources.constraint",
    "account": "use resources.account", "qos": "use resources.qos",
    "job-name": "jobs are named <experiment>.<stage>", "dependency": "use the stage's `needs`",
    "signal": "use signal_delay_s", "output": "logs go to paths.logs", "error": "logs go to paths.logs",
    "open-mode": "logs are appended across requeues", "chdir": "jobs cd to the submit directory (setup)",
    "array": "one job per stage: add stages instead", "wrap": "the pipeline writes the job script",
    "parsable": "the pipeline reads sbatch's reply itself", "wait": "submit returns at once (or use --wait)",
}


def _check_extra(key: str, opt: str, value: bool | str) -> None:
    """`resources.extra`: sbatch long options by name, from sbatch(1), and their values."""
    if opt in PIPELINE_OPTIONS:
        raise ConfigError(key, f"the pipeline sets --{opt} itself; {PIPELINE_OPTIONS[opt]}")
    if opt not in SBATCH_OPTIONS:
        close = difflib.get_close_matches(opt.lower().replace("_", "-"), [*SBATCH_OPTIONS, *PIPELINE_OPTIONS], n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(key, f"unknown sbatch option {opt!r}; {hint}(sbatch long option names without '--'; "
                          f"these have their own keys, not extra: {', '.join(PIPELINE_OPTIONS)})")
    if value is False:
        raise ConfigError(key, f"got false; leave --{opt} out instead")
    if value is True and opt not in FLAG_OPTIONS | OPTIONAL_VALUE_OPTIONS:
        raise ConfigError(key, f"--{opt} needs a value, got true")
    if isinstance(value, str) and opt in FLAG_OPTIONS:
        raise ConfigError(key, f"--{opt} is a flag and takes no value, got {value!r}; write `{opt}: true`")
    if isinstance(value, str):
        if not value:
            raise ConfigError(key, f"--{opt} needs a value, got ''")
        _check_text(key, value)


def time_seconds(time: str) -> int:
    """SLURM time limit -> seconds; ValueError says what is wrong with it.

    Forms as sbatch(1) reads --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S. SLURM itself does not
    range-check the fields (99:99 runs as 100:39), so a typo silently changes the limit: every
    field after the first must be in range here. 0 means UNLIMITED to SLURM: refused too.
    """
    if time.strip().lower() in ("unlimited", "infinite"):
        raise ValueError("set a real limit, e.g. 2-00:00:00: the pipeline checkpoints and requeues a job "
                         "when SLURM signals it signal_delay_s before its limit")
    match = TIME_RE.fullmatch(time)
    if not match:
        raise ValueError(f"expected one of the SLURM forms {TIME_FORMS} (e.g. 30, 01:30:00, 2-12)")
    days, clock = match.groups()
    values = [int(v) for v in clock.split(":")]
    names = _TIME_FIELDS[days is not None, len(values)]
    fields = ([("days", int(days))] if days is not None else []) + list(zip(names, values))
    form = ("D-" if days is not None else "") + ":".join(n[0].upper() for n in names)
    for name, value in fields[1:]:          # the leading field may be as large as wanted
        if value > _TIME_MAX[name]:
            raise ValueError(f"{name} must be 0-{_TIME_MAX[name]} in the form {form} "
                             f"(SLURM forms: {TIME_FORMS})")
    total = sum(_TIME_SECONDS[name] * value for name, value in fields)
    if total == 0:
        raise ValueError("a time limit of 0 means UNLIMITED to SLURM; set a real limit, e.g. 00:30:00")
    return total


_TIME_FIELDS = {  # (days given?, number of ':'-separated fields) -> what they are, per sbatch(1)
    (False, 1): ("minutes",), (False, 2): ("minutes", "seconds"), (False, 3): ("hours", "minutes", "seconds"),
    (True, 1): ("hours",), (True, 2): ("hours", "minutes"), (True, 3): ("hours", "minutes", "seconds")}
_TIME_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
_TIME_MAX = {"hours": 23, "minutes": 59, "seconds": 59}


def time_minutes(time: str) -> int:
    """SLURM time string -> whole minutes, rounded up (submitit wants minutes)."""
    return -(-time_seconds(time) // 60)


def mem_mb(mem: str) -> float:
    """sbatch --mem value -> MB (a number without suffix is MB, as sbatch reads it)."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)", mem).groups()
    return int(number) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit or "M"]
