"""Writing to disk: a file is replaced whole or not at all, and it survives a crash once the call returns.

Torch-free, so that data.py (the dataset download) and rundir.py (run records) share it without an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path


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
