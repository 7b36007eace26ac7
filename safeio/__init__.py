"""Neutral ground shared by the engine (pipeline/) and the stage library (jobs/): files that
survive a crash (atomic writes, tolerant JSON reads, file locks, a heartbeat) and, in
safeio.markdown, the one markdown-table writer. It imports neither side, so the library stands
on its own and the engine lends it no internals."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return default


# ---- locks ----

class LockedError(RuntimeError):
    pass


@contextlib.contextmanager
def heartbeat(path: Path, every_s: float, create: bool = False, remove: bool = False) -> Iterator[None]:
    """Touch `path` every `every_s` seconds from a daemon thread while the block runs, so another
    process can tell from its mtime whether this one still lives. `create`: touch it first;
    `remove`: delete it when the block ends."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    stop = threading.Event()

    def beat():
        while not stop.wait(every_s):
            with contextlib.suppress(OSError):
                os.utime(path)
    threading.Thread(target=beat, daemon=True, name=f"heartbeat-{path.name}").start()
    try:
        yield
    finally:
        stop.set()
        if remove:
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Blocking flock, for short critical sections several processes take in turn (the tasks of
    a job array writing their shared result). Released by the kernel if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


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
