"""Data files on disk: sha256 manifests, verification with actionable errors, array bundles."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from safeio import atomic_path, atomic_write_json, atomic_write_text

MANIFEST = "MANIFEST.json"

# (upstream stage, file name, reader of the file's path) -> what the reader returns. A stage passes
# its ctx.load_upstream: a missing or unreadable file then names the stage that must run again.
UpstreamReader = Callable[[str, str, Callable[[Path], Any]], Any]


class DataError(RuntimeError):
    """A data file is missing or differs from its manifest; the message says how to fix it."""


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, files: list[Path], source: str) -> dict:
    """Record sha256 and size of every file (paths relative to `folder`)."""
    entries = {str(p.relative_to(folder)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}
    manifest = {"source": source, "files": entries}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def verify_manifest(folder: Path, producer: str) -> dict:
    """Check every file of the manifest; `producer` names the stage that makes them."""
    manifest_path = folder / MANIFEST
    fix = f"run the `{producer}` stage again (python -m pipeline submit {producer} --force)"
    if not manifest_path.exists():
        raise DataError(f"no data manifest at {manifest_path}: the data has not been downloaded; {fix}")
    manifest = json.loads(manifest_path.read_text())
    for rel, meta in manifest["files"].items():
        path = folder / rel
        if not path.exists():
            raise DataError(f"data file missing: {path}; {fix}")
        if path.stat().st_size != meta["bytes"] or sha256(path) != meta["sha256"]:
            raise DataError(f"data file corrupted (sha256 differs from {manifest_path}): {path}; {fix}")
    return manifest


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Atomic .npz (uncompressed: loads in milliseconds)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


SPLIT_FILE = "split.npz"      # what a `prepare` stage writes: uint8 images, labels, class names
PROBS_FILE = "probs.npz"      # class probabilities (N, K) per split of a stage that scores itself (numpy_mlp);
                              # evaluate's `scored_stages` read it


def load_split(load_upstream: UpstreamReader, stage: str) -> dict[str, np.ndarray]:
    """The arrays of upstream data stage `stage` (its split.npz)."""
    return load_upstream(stage, SPLIT_FILE, read_arrays)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, read now: a damaged member (zip, CRC, header) fails here, inside the
    upstream reader, not later in the middle of a run."""
    with np.load(path, allow_pickle=False) as bundle:
        return {k: bundle[k] for k in bundle.files}


def write_class_counts(path: Path, class_names: list[str], splits: dict[str, np.ndarray]) -> None:
    """CSV: class, name, then one count column per split."""
    lines = ["class,name," + ",".join(splits)]
    for c, name in enumerate(class_names):
        lines.append(f"{c},{name}," + ",".join(str(int((y == c).sum())) for y in splits.values()))
    atomic_write_text(path, "\n".join(lines) + "\n")


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Indices per split, stratified by class and seeded; the splits are disjoint and cover all."""
    rng = np.random.default_rng(seed)
    names = list(fractions)
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum([fractions[n] for n in names]) * len(idx)).astype(int)
        for name, part in zip(names, np.split(idx, cuts[:-1])):
            out[name].append(part)
    return {n: np.sort(np.concatenate(parts)) for n, parts in out.items()}
