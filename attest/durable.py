"""Durable file writes: what "acknowledged means durable" rests on for local files.

Three operations, each returning only after the data is on disk: replacing a whole file
atomically (write a temporary, fsync it, rename it over the target, fsync the folder so the
rename survives a crash), appending to a file, and cutting a torn tail off a file.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["append_synced", "truncate_synced", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def append_synced(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) and fsync it."""
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def truncate_synced(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes (a torn tail that was never acknowledged) and fsync it."""
    with open(path, "r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())
