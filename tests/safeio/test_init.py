"""safeio: a file is replaced whole or not at all; a lock has one holder."""
from __future__ import annotations

import pytest

import safeio
from safeio import LockedError


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    safeio.atomic_write_json(target, {"acc": 1})
    with pytest.raises(RuntimeError):
        with safeio.atomic_path(target) as tmp:
            tmp.write_text('{"acc": 0, "half')
            raise RuntimeError("killed half-way")
    assert safeio.read_json(target) == {"acc": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_lock_refuses_second_holder(tmp_path):
    lock = tmp_path / ".submit.lock"
    with safeio.exclusive_lock(lock, "a submit of experiment 'x'"):
        with pytest.raises(LockedError, match=r"a submit of experiment 'x' is already in progress \(pid"):
            with safeio.exclusive_lock(lock, "a submit of experiment 'x'"):
                pass
    with safeio.exclusive_lock(lock, "again"):  # released: free again
        pass
