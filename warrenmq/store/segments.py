"""The WAL's segment files on disk: naming, listing, and repair at recovery.

Segments are `00000001.wal`, `00000002.wal`, ... in one directory; records run from one
segment into the next in id order. Only a prefix of ids is ever deleted, so the ids that
remain are contiguous; a gap can only come from outside interference and is treated like
a corrupt record (everything after it is dropped).

`repair` is the recovery rule: keep every whole record with a valid checksum, up to the
first torn or corrupt one; truncate that segment there and delete every later segment,
logging at WARNING exactly what was dropped. It never refuses to start because of a torn
tail or a corrupt record: after a crash the unsynced tail is expected to be garbage, and
everything before it was acknowledged as durable only once it was fsynced.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .files import fsync_directory
from .records import iter_records, valid_prefix

log = logging.getLogger("warrenmq.store")

SEGMENT_SUFFIX = ".wal"
_SEGMENT_NAME = re.compile(r"^(\d{8,})\.wal$")


def segment_name(segment_id: int) -> str:
    return f"{segment_id:08d}{SEGMENT_SUFFIX}"


def segment_path(directory: Path, segment_id: int) -> Path:
    return directory / segment_name(segment_id)


def list_segments(directory: Path) -> list[int]:
    """Ids of the segment files in `directory`, ascending (other files are ignored)."""
    ids = []
    for entry in os.scandir(directory):
        match = _SEGMENT_NAME.match(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            ids.append(int(match.group(1)))
    ids.sort()
    return ids


def _valid_end(path: Path) -> tuple[int, int, str | None]:
    """(file size, end of the valid prefix, why the prefix stops early or None)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return 0, 0, None
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                end, reason = valid_prefix(view)
            finally:
                view.release()
    return size, end, reason


def repair(directory: Path, sync: bool) -> dict[int, int]:
    """Make `directory` hold only valid records; return {segment_id: end offset} kept."""
    ids = list_segments(directory)
    kept: dict[int, int] = {}
    changed = False
    for index, segment_id in enumerate(ids):
        path = segment_path(directory, segment_id)
        if kept and segment_id != max(kept) + 1:
            log.warning("WAL %s: segment %s is missing; dropping the segments after it",
                        directory, segment_name(max(kept) + 1))
            _drop(directory, ids[index:])
            changed = True
            break
        size, end, reason = _valid_end(path)
        kept[segment_id] = end
        if reason is None:
            continue
        log.warning("WAL %s: %s at offset %d (%s); truncating it to %d bytes, dropping %d bytes",
                    directory, path.name, end, reason, end, size - end)
        os.truncate(path, end)
        if sync:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _drop(directory, ids[index + 1:])
        changed = True
        break
    if changed and sync:
        fsync_directory(directory)
    return kept


def _drop(directory: Path, segment_ids: list[int]) -> None:
    for segment_id in segment_ids:
        path = segment_path(directory, segment_id)
        size = path.stat().st_size
        log.warning("WAL %s: deleting %s (%d bytes) after the first bad record",
                    directory, path.name, size)
        path.unlink()


def replay(directory: Path, segments: dict[int, int]) -> Iterator[tuple[int, int, int, bytes]]:
    """Yield (segment_id, offset, kind, payload) for every record of `segments`.

    `segments` maps each id to the end of its valid records, as `repair` returned it;
    bytes appended after that end (by a WAL already open for appending) are not read.
    """
    for segment_id, end in sorted(segments.items()):
        if end == 0:
            continue
        with open(segment_path(directory, segment_id), "rb") as f:
            with mmap.mmap(f.fileno(), end, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    for offset, kind, payload in iter_records(view, end):
                        data = bytes(payload)
                        payload.release()
                        yield segment_id, offset, kind, data
                finally:
                    view.release()
