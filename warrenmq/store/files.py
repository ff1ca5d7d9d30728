"""Durable file operations the store builds on: atomic replacement and directory fsync.

`atomic_write` is how snapshots (and any small state file) reach the disk: after a crash
the path holds either the old content or the new one, never a mix. The steps and why:
write a temporary file in the same directory (so the rename cannot cross filesystems),
fsync it (the data must be on disk before the name points at it), rename it over the
target (atomic on POSIX), then fsync the directory (the rename itself is a directory
change and is lost on power failure until the directory is synced).

These calls block on the disk: from the event loop, run them in a thread.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .records import Buffer


def fsync_directory(directory: Path) -> None:
    """Make creations, renames and deletions of entries in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: Buffer) -> None:
    """os.write until every byte is written (a write may be partial)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: Path, data: Buffer) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content.

    The temporary file is `.NAME.PID.RANDOM.tmp` next to `path`; it is removed if any step
    fails before the rename. Raises OSError (for example FileNotFoundError when the
    directory does not exist) and leaves `path` untouched in that case.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
