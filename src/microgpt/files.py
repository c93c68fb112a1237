"""Writing to disk: a file is replaced whole or not at all and survives a crash once written; a run or sweep
directory is one plain name inside the directory the user chose, or a UsageError says why it cannot be.

Torch-free, so that data.py (the dataset download) and rundir.py (run records) share it without an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import UsageError


def write_atomic(path: str | os.PathLike, payload: bytes | str) -> None:
    """Write to a temporary sibling, fsync it, rename it over path, fsync the directory: readers see the old file or
    the new one, never a part, and a power cut after return cannot lose the new one. A failed write leaves the old file
    as it was and no temporary behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload.encode() if isinstance(payload, str) else payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself lives in the directory: without this a crash can undo it
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_dir_name(name: str, flag: str) -> None:
    """UsageError unless name is one plain path component, so its directory lands inside --out-dir and nowhere else."""
    # a leading dot also rules out '.', '..' and hidden names (our temporaries and lock files start with one)
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise UsageError(f"{flag} must be a plain directory name (no '/', not starting with '.'), got {name!r}: "
                         "the directory is made inside --out-dir")


def make_dir(root: str | os.PathLike, what: str, name: str | None = None) -> Path:
    """mkdir -p root[/name] for `what` (e.g. 'sweep directory'); UsageError naming the file in the way or the
    system's reason (a read-only disk, no permission) instead of an OSError."""
    root = Path(root)
    path = root / name if name else root
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_create(what, root, err) from None
    return path


def cannot_create(what: str, root: Path, err: OSError) -> UsageError:
    """The one-line error for a directory mkdir could not make under root."""
    target = Path(err.filename) if err.filename else root
    blocker = next((p for p in reversed([target, *target.parents]) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return UsageError(f"cannot create {what} under {root}: {blocker} is a file, not a directory; "
                          "pass --out-dir a directory")
    return UsageError(f"cannot create {what} under {root}: {err.strerror or err}; "
                      "pass --out-dir to a writable directory")


def os_error_text(err: OSError) -> str:
    """A failed system call in words: its strerror and the path it was about, e.g. "No space left on device (x.pt)"."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    return f"{err.strerror or err}{where}"
