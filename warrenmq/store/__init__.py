"""The node's durable store: the shared write-ahead log and atomic file writes.

`WAL` (wal.py) is the one write-ahead log per node with group commit; records.py owns the
on-disk record format, segments.py the segment files and their repair at recovery, and
files.py the durable file primitives (`atomic_write`, `fsync_directory`).
"""

from .files import atomic_write, fsync_directory
from .records import KIND_MAX, PAYLOAD_BYTES_MAX, RecordError
from .wal import WAL, Location, WALError, WALStats

__all__ = [
    "KIND_MAX",
    "PAYLOAD_BYTES_MAX",
    "WAL",
    "Location",
    "RecordError",
    "WALError",
    "WALStats",
    "atomic_write",
    "fsync_directory",
]
