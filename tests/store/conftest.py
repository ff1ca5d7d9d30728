"""Fixtures for the store tests: WALs that are always closed, and a WAL with a slow disk.

`SlowDiskWAL` is the real WAL whose fdatasync first sleeps (a disk with a long flush) and
then really syncs; it records, for each completed sync, the file and the size it covered,
so tests can check that a durable callback ran only after its bytes were synced.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from warrenmq.store import WAL, Location

from .helpers import close_quietly


class SlowDiskWAL(WAL):
    fsync_delay_s = 0.02

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.synced: list[tuple[str, int]] = []  # (segment file name, bytes covered)
        self.syncs_started = 0
        self.sync_lock = threading.Lock()

    def _fdatasync(self, fd: int) -> None:
        self.syncs_started += 1
        size = os.fstat(fd).st_size
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        time.sleep(self.fsync_delay_s)
        super()._fdatasync(fd)
        with self.sync_lock:
            self.synced.append((name, size))

    def synced_up_to(self, location: Location, record_bytes: int) -> bool:
        """Whether a completed sync of the segment covered the record at `location`."""
        name = f"{location.segment_id:08d}.wal"
        with self.sync_lock:
            return any(n == name and size >= location.offset + record_bytes
                       for n, size in self.synced)


@pytest.fixture
def wals():
    """Make WALs (`wals(directory, **kwargs)` or `wals(directory, cls=...)`); all are closed
    at the end of the test, so no writer thread outlives it."""
    made: list[WAL] = []

    def make(directory: Path, cls: type[WAL] = WAL, **kwargs) -> WAL:
        wal = cls(directory, **kwargs)
        made.append(wal)
        return wal

    yield make
    for wal in made:
        close_quietly(wal)
