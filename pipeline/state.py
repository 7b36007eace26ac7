"""Stage folders on disk: atomic writes, _SUCCESS markers with fingerprints, job records, locks."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from . import registry

SUCCESS = "_SUCCESS"
JOB_RECORD = "job.json"


# ---- atomic writes: temp file in the same folder, fsync, rename (POSIX rename is atomic) ----

@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed onto `path`, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


# ---- fingerprints: what a stage's result depends on ----

def fingerprints(exp) -> dict[str, str]:
    """Fingerprint of every stage: resolved params, seed, data folder, code version, upstream."""
    from .dag import topological_order
    out: dict[str, str] = {}
    for name in topological_order(exp.stages):
        stage = exp.stages[name]
        payload = {
            "kind": stage.kind,
            "code": registry.get(stage.kind).code_version(),
            "params": stage.params_dict(),
            "seed": exp.seed,
            "data": exp.paths.data,
            "upstream": {d: out[d] for d in sorted(stage.needs)},
        }
        out[name] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


def success(stage_dir: Path) -> dict | None:
    return read_json(stage_dir / SUCCESS)


def is_done(stage_dir: Path, fingerprint: str) -> bool:
    marker = success(stage_dir)
    return bool(marker) and marker.get("fingerprint") == fingerprint


def explain(stage_dir: Path, fingerprint: str) -> str:
    """Why a stage will (or will not) run."""
    marker = success(stage_dir)
    if marker is None:
        return "will run: no _SUCCESS marker (never finished)"
    if marker.get("fingerprint") != fingerprint:
        return (f"will run: fingerprint changed ({marker.get('fingerprint')} -> {fingerprint}): "
                "config, code or an upstream stage changed")
    return f"up to date: _SUCCESS fingerprint {fingerprint} matches (finished {marker.get('finished_at')})"


def mark_success(stage_dir: Path, fingerprint: str, status: str, job_id: str | None) -> None:
    atomic_write_json(stage_dir / SUCCESS, {
        "fingerprint": fingerprint, "status": status, "job_id": job_id,
        "finished_at": now_iso()})


def clear_success(stage_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (stage_dir / SUCCESS).unlink()


def write_job_record(stage_dir: Path, record: dict) -> None:
    atomic_write_json(stage_dir / JOB_RECORD, {**record, "recorded_at": now_iso()})


def job_record(stage_dir: Path) -> dict:
    return read_json(stage_dir / JOB_RECORD, {}) or {}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---- locks ----

class LockedError(RuntimeError):
    pass


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Non-blocking flock: a second holder is refused at once with who holds it.

    flock is released by the kernel when the holder dies, so there are no stale locks.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            raise LockedError(f"{what} is already in progress ({holder}); wait for it to finish "
                              f"and try again (lock: {path})") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename} since {now_iso()}")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
