"""Stage folders on disk: atomic writes, _SUCCESS markers with fingerprints, job records, locks."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import shutil
from pathlib import Path

from safeio import atomic_write_json, now_iso, read_json

from pipeline.core.paths import (ATTEMPTS, CHECKPOINT, CORRUPT, JOB_RECORD, KEPT_ON_CLEAN, NOT_ARTIFACTS, SUCCESS,
                                 VARIANT_INDEX, variants_dir)


def success(stage_dir: Path) -> dict | None:
    return read_json(stage_dir / SUCCESS)


def is_done(stage_dir: Path, fingerprint: str) -> bool:
    """Finished with this fingerprint, and every artifact still matches its recorded checksum."""
    marker = success(stage_dir)
    return bool(marker) and marker.get("fingerprint") == fingerprint and not artifact_problems(stage_dir, marker)


def explain(stage_dir: Path, fingerprint: str) -> str:
    """Why a stage will (or will not) run."""
    marker = success(stage_dir)
    if marker is None:
        corrupt = read_json(stage_dir / CORRUPT)
        if corrupt:
            return f"will run: marked corrupt ({corrupt.get('reason')})"
        return "will run: no _SUCCESS marker (never finished)"
    if marker.get("fingerprint") != fingerprint:
        return (f"will run: fingerprint changed ({marker.get('fingerprint')} -> {fingerprint}): "
                "config, code or an upstream stage changed")
    problems = artifact_problems(stage_dir, marker)
    if problems:
        return f"will run: corrupt output: {problems[0]}"
    return f"up to date: _SUCCESS fingerprint {fingerprint} matches (finished {marker.get('finished_at')})"


def mark_success(stage_dir: Path, fingerprint: str, status: str, job_id: str | None) -> None:
    """The last write of a stage: its fingerprint and a sha256 of every artifact it wrote."""
    with contextlib.suppress(FileNotFoundError):
        (stage_dir / CORRUPT).unlink()
    atomic_write_json(stage_dir / SUCCESS, {
        "fingerprint": fingerprint, "status": status, "job_id": job_id,
        "finished_at": now_iso(), "artifacts": artifact_manifest(stage_dir)})


def clear_success(stage_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (stage_dir / SUCCESS).unlink()


def mark_corrupt(stage_dir: Path, reason: str) -> None:
    """A done stage whose output cannot be used: it is no longer done, and says why."""
    atomic_write_json(stage_dir / CORRUPT, {"reason": reason, "marked_at": now_iso()})
    clear_success(stage_dir)


# ---- artifacts: checksums of what a stage wrote, verified before anyone reads them ----



def _artifact_files(stage_dir: Path) -> list[Path]:
    return sorted(p for p in stage_dir.rglob("*") if p.is_file() and not _bookkeeping(p.relative_to(stage_dir)))


def _bookkeeping(rel: Path) -> bool:
    # dotfiles: temp files of atomic writes and locks; checkpoint.pt*: set-aside resume files
    return rel.parts[0] in NOT_ARTIFACTS or rel.name.startswith((".", CHECKPOINT))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_manifest(stage_dir: Path) -> dict[str, dict]:
    """relative path -> sha256, size and mtime (the last two make `status` cheap)."""
    out = {}
    for path in _artifact_files(stage_dir):
        st = path.stat()
        out[str(path.relative_to(stage_dir))] = {"sha256": sha256_file(path), "size": st.st_size,
                                                 "mtime_ns": st.st_mtime_ns}
    return out


def artifact_problems(stage_dir: Path, marker: dict | None = None, full: bool = False) -> list[str]:
    """What differs from the checksums in _SUCCESS, one message per file ([] when intact).

    Without `full`, a file whose size and mtime are unchanged is trusted (status stays fast);
    anything touched since is hashed. A marker without a manifest predates checksums: rerun.
    """
    marker = marker if marker is not None else success(stage_dir)
    if not marker:
        return []
    manifest = marker.get("artifacts")
    if manifest is None:
        return [f"{stage_dir}: finished before output checksums were recorded"]
    problems = []
    for rel, want in manifest.items():
        path = stage_dir / rel
        try:
            st = path.stat()
        except OSError:
            problems.append(f"{path} is missing")
            continue
        unchanged = st.st_size == want["size"] and st.st_mtime_ns == want["mtime_ns"]
        if (full or not unchanged) and (st.st_size != want["size"] or sha256_file(path) != want["sha256"]):
            problems.append(f"{path} is corrupted (sha256 differs from {stage_dir / SUCCESS})")
    return problems


# ---- attempts: every try at producing the current result, for resume decisions and honest cost ----

def read_attempts(stage_dir: Path) -> dict:
    return read_json(stage_dir / ATTEMPTS, {}) or {}


def write_attempts(stage_dir: Path, attempts: dict) -> None:
    atomic_write_json(stage_dir / ATTEMPTS, attempts)


def discard_attempts(stage_dir: Path) -> None:
    """Forget earlier tries: the next run of this stage starts clean."""
    with contextlib.suppress(FileNotFoundError):
        (stage_dir / ATTEMPTS).unlink()


def clean_stage_dir(stage_dir: Path) -> list[str]:
    """Remove every output of an earlier run (keeps job records, attempts and locks)."""
    removed = []
    for path in sorted(stage_dir.iterdir()) if stage_dir.is_dir() else []:
        if path.name in KEPT_ON_CLEAN or path.name.endswith(".lock"):
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        removed.append(path.name)
    return removed


# ---- job records: every job a stage ever had, newest last ----

def write_job_record(stage_dir: Path, record: dict) -> None:
    """Record the stage's newest job; earlier job ids stay in `history` (status and reconcile
    look at all of them, so a superseded job that is still queued is never lost)."""
    old = job_record(stage_dir)
    history = old.get("history") or ([_history_entry(old)] if old.get("job_id") else [])
    history = [h for h in history if h.get("job_id") != record.get("job_id")]
    record = {**record, "recorded_at": now_iso()}
    atomic_write_json(stage_dir / JOB_RECORD, {**record, "history": history + [_history_entry(record)]})


def _history_entry(record: dict) -> dict:
    return {k: record.get(k) for k in ("job_id", "executor", "fingerprint", "log", "recorded_at")}


def job_record(stage_dir: Path) -> dict:
    record = read_json(stage_dir / JOB_RECORD, {})
    return record if isinstance(record, dict) else {}


def job_executors(stage_dir: Path) -> dict[str, str | None]:
    """Every job id this stage was ever submitted as (oldest first) -> the backend that ran it
    (None where none was recorded)."""
    rec = job_record(stage_dir)
    out = {str(h["job_id"]): h.get("executor") for h in rec.get("history", []) if h.get("job_id")}
    if rec.get("job_id"):
        out[str(rec["job_id"])] = rec.get("executor")
    return out


def recorded_executor(stage_dir: Path) -> str | None:
    """The backend of every job the stage had; None when they differ (a stage run by hand after a
    batch job) or none was recorded: then every backend is asked about its jobs."""
    names = set(job_executors(stage_dir).values())
    return names.pop() if len(names) == 1 else None


def all_job_ids(stage_dir: Path) -> list[str]:
    """Every job id this stage was ever submitted as, oldest first."""
    rec = job_record(stage_dir)
    ids = [str(h["job_id"]) for h in rec.get("history", []) if h.get("job_id")]
    if rec.get("job_id") and str(rec["job_id"]) not in ids:
        ids.append(str(rec["job_id"]))
    return ids


# ---- file-system faults, said in one line ----

_FS_HINTS = {
    errno.ENOSPC: "the disk is full: free space (old results/, logs/, .cache/) or point paths.results "
                  "and paths.logs at a disk with room",
    errno.EDQUOT: "your disk quota is used up: free space or point paths.results and paths.logs elsewhere",
    errno.EROFS: "the file system is read-only: point paths.results and paths.logs at a writable folder",
    errno.EACCES: "no permission to write there: fix its permissions or point paths.results at a writable folder",
    errno.EPERM: "no permission to write there: fix its permissions or point paths.results at a writable folder",
    errno.EEXIST: "a file is in the way where a folder is expected: move or remove it",
    errno.ENOTDIR: "a file is in the way where a folder is expected: move or remove it",
    errno.EISDIR: "a folder is in the way where a file is expected: move or remove it",
}


def describe_os_error(err: OSError) -> str:
    """`cannot use PATH: REASON; WHAT TO DO` for the file-system faults a user can fix."""
    where = err.filename or "a file"
    hint = _FS_HINTS.get(err.errno, "check the path and the disk")
    return f"cannot use {where}: {err.strerror or err}; {hint}"




def recorded_variants(results: Path, experiment: str) -> list[dict]:
    """The index (variant.json) of every variant of `experiment` run so far, by name."""
    folder = variants_dir(results, experiment)
    found = [read_json(p) for p in sorted(folder.glob(f"*/{VARIANT_INDEX}"))] if folder.is_dir() else []
    return [f for f in found if isinstance(f, dict) and f.get("name")]
