"""Faults from input and from the disk: every one is a single line on stderr with exit 2 (bad input) or 1 (the
system failed), never a traceback, never a half-written file or run directory, never an unbounded allocation."""

import os

import pytest

from microgpt import files


# ------------------------------------------------------------------------------------------------- atomic writes

@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, failing):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def broken(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, failing, broken)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_atomic_write_syncs_the_file_and_then_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    files.write_atomic(tmp_path / "a.txt", b"payload")
    assert (tmp_path / "a.txt").read_bytes() == b"payload"
    assert synced == [False, True]  # the file's bytes before the rename, the directory entry after it
