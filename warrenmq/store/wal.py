"""The node's write-ahead log: one per node, shared by everything durable, with group commit.

Theory of operation (ra's `ra_log_wal`):

- Callers live on the asyncio event-loop thread. `append` never touches the disk: it
  assigns the record its final location (segment id, offset), puts it on the pending list
  and returns at once.
- One writer thread takes *everything* pending, writes it with `os.writev` and makes it
  durable with one `os.fdatasync`, then wakes the loop with ONE `call_soon_threadsafe` for
  the whole batch. While an fsync is in flight, new appends pile up into the next batch, so
  batches grow with load and throughput follows concurrency, not fsync latency. There is
  no timer and no artificial delay: an idle WAL writes a lone record at once.
- "Call me when what I appended is durable" is `on_durable(callback)` (or
  `await wait_durable()`): the callback fires, on the loop thread, once every record
  appended before the call is fsynced. Callbacks fire in registration order. They get
  `None`, or the `WALError` that stopped the log; a failed log never reports durability.
- The loop thread decides segment rotation (it assigns locations), the writer thread
  creates the files. Deleting old segments is also done by the writer, in order with the
  writes, so the loop thread never waits for the disk except in `read` (a pread) and in
  `open`/`close`, which run at boot and shutdown.

Invariants: records reach the disk in append order; locations are strictly increasing;
`stats.records` counts records written, and a callback registered after the N-th append
fires only after a completed fdatasync covering record N (or with an error).

Lock: `_lock` guards only the hand-off between the two threads (the pending list, the
in-flight batch, the written watermark, the writer's idle flag); it is held for a list
append or swap, never across I/O.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .files import fsync_directory
from .records import (
    HEADER,
    HEADER_BYTES,
    KIND_CRC,
    KIND_MAX,
    PAYLOAD_BYTES_MAX,
    Buffer,
    RecordError,
    decode_at,
)
from .segments import list_segments, repair, replay, segment_path

log = logging.getLogger("warrenmq.store")

SEGMENT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024
CLOSE_TIMEOUT_S = 30.0
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16
_DELETE = -1  # segment id of a pending "delete segments before N" command


class Location(NamedTuple):
    """Where a record starts: its segment and its byte offset in that segment."""

    segment_id: int
    offset: int


class WALError(Exception):
    """The log cannot do what was asked: not open, closed, failed on I/O, or a bad read."""


@dataclass(slots=True)
class WALStats:
    """Counters kept by the writer thread (read them from anywhere; they only grow)."""

    records: int = 0  # records written
    batches: int = 0  # writer batches (each ends with at most one fdatasync per segment)
    fsyncs: int = 0  # fdatasync calls on segment files
    dir_fsyncs: int = 0  # fsyncs of the directory (segment created or deleted)
    bytes: int = 0  # bytes written, headers included


DurableCallback = Callable[[WALError | None], None]
# A pending item: (segment_id, offset, kind, payload), or (_DELETE, before_id, 0, b"").
_Item = tuple[int, int, int, Buffer]


class WAL:
    """A write-ahead log in `directory`, appended from one asyncio loop thread.

    Lifecycle: `WAL(...)`, then `open()` (recovers, repairs a torn or corrupt tail, starts
    the writer and returns an iterator over the recovered records), then `append` /
    `on_durable` / `read` from the loop thread, then `close()`.

    Segments: a segment is sealed when the next record would take it past
    `segment_bytes_max`; a record larger than that gets a segment of its own.

    `sync=False` skips every fdatasync/fsync (for transient data and tests); everything
    else, including the durable callbacks (which then mean "written"), works the same.
    """

    def __init__(self, directory: Path, segment_bytes_max: int = SEGMENT_BYTES_MAX_DEFAULT,
                 loop: asyncio.AbstractEventLoop | None = None, sync: bool = True) -> None:
        if segment_bytes_max < HEADER_BYTES:
            raise ValueError(f"segment_bytes_max must be at least {HEADER_BYTES}, "
                             f"got {segment_bytes_max}")
        self.directory = Path(directory)
        self.segment_bytes_max = segment_bytes_max
        self.sync = sync
        self.stats = WALStats()
        self._loop = loop
        self._state = "new"  # new -> open -> closed
        # Loop-thread state.
        self._segments: dict[int, int] = {}  # segment id -> end offset, for sealed segments
        self._tail_segment = 0
        self._tail_offset = 0
        self._appended = 0  # records appended so far (the sequence number of the last one)
        self._durable = 0  # records known durable on the loop thread
        self._waiters: deque[tuple[int, DurableCallback]] = deque()
        self._failure_seen = False
        self._read_fds: dict[int, int] = {}
        # Shared between the threads, under _lock.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._pending: list[_Item] = []
        self._inflight: list[_Item] = []
        self._written = Location(0, 0)  # end of what the writer has written (not synced)
        self._writer_idle = False
        self._closing = False
        # Set by the writer thread once, read by the loop thread.
        self._failure: WALError | None = None
        # Writer-thread state.
        self._thread: threading.Thread | None = None
        self._w_fd = -1
        self._w_segment = 0
        self._w_offset = 0
        self._w_records = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> Iterator[tuple[Location, int, bytes]]:
        """Recover the log and start the writer; return the recovered records, in order.

        Recovery (done here, before returning) keeps every whole record with a valid
        checksum up to the first torn or corrupt one, truncates that segment there, deletes
        every later segment and logs what it dropped at WARNING. Appends may start as soon
        as this returns; the returned iterator lazily re-reads only the recovered records
        (it is not disturbed by new appends) and yields (location, kind, payload).
        Iterate it before deleting segments.
        """
        if self._state != "new":
            raise WALError(f"WAL {self.directory} is already {self._state}")
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                raise WALError("WAL.open() needs loop=... or a running event loop") from None
        self.directory.mkdir(parents=True, exist_ok=True)
        recovered = repair(self.directory, self.sync)
        if not recovered:
            recovered = {1: 0}
        tail = max(recovered)
        fd = os.open(segment_path(self.directory, tail), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
        os.lseek(fd, recovered[tail], os.SEEK_SET)
        if self.sync:
            fsync_directory(self.directory)  # a segment created here must survive a crash
        self._segments = {sid: end for sid, end in recovered.items() if sid != tail}
        self._tail_segment, self._tail_offset = tail, recovered[tail]
        self._written = Location(tail, recovered[tail])
        self._w_fd, self._w_segment, self._w_offset = fd, tail, recovered[tail]
        self._state = "open"
        self._thread = threading.Thread(target=self._run, name=f"wal-writer {self.directory}",
                                        daemon=True)
        self._thread.start()
        return self._recovered(recovered)

    def _recovered(self, segments: dict[int, int]) -> Iterator[tuple[Location, int, bytes]]:
        for segment_id, offset, kind, payload in replay(self.directory, segments):
            yield Location(segment_id, offset), kind, payload

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write and fsync everything pending, stop the writer thread, release the files.

        Call it from the loop thread: durable callbacks still waiting run inside this call.
        Raises WALError if the writer failed (after cleaning up) or does not stop within
        `timeout_s`.
        """
        if self._state != "open":
            self._state = "closed"
            return
        with self._lock:
            self._closing = True
            self._wakeup.notify()
        assert self._thread is not None
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise WALError(f"WAL {self.directory}: writer did not stop within {timeout_s}s")
        self._state = "closed"
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        self._on_batch_durable(self._w_records)
        if self._failure is not None:
            self._on_failure()
            raise WALError(f"WAL {self.directory} failed: {self._failure}") from self._failure

    # -- appending ---------------------------------------------------------------------------

    def append(self, kind: int, payload: Buffer) -> Location:
        """Queue one record and return the location it will have. Never blocks.

        `payload` is not copied: it must stay unchanged until the record is durable (bytes
        are; a memoryview over a buffer the caller reuses is not).
        """
        item = self._assign(kind, self._normalize(kind, payload))
        with self._lock:
            self._pending.append(item)
            if self._writer_idle:
                self._writer_idle = False
                self._wakeup.notify()
        return Location(item[0], item[1])

    def append_many(self, records: Iterable[tuple[int, Buffer]]) -> list[Location]:
        """Queue several (kind, payload) records in order; all or none (bad input raises)."""
        checked = [(kind, self._normalize(kind, payload)) for kind, payload in records]
        items = [self._assign(kind, payload) for kind, payload in checked]
        with self._lock:
            self._pending.extend(items)
            if self._writer_idle and items:
                self._writer_idle = False
                self._wakeup.notify()
        return [Location(item[0], item[1]) for item in items]

    def _normalize(self, kind: int, payload: Buffer) -> Buffer:
        """Refuse what cannot be appended; return the payload as bytes or a flat byte view."""
        if self._state != "open":
            raise WALError(f"WAL {self.directory} is {self._state}, cannot append")
        if self._failure is not None:
            raise WALError(f"WAL {self.directory} failed: {self._failure}") from self._failure
        if type(kind) is not int or not 0 <= kind <= KIND_MAX:
            raise ValueError(f"record kind must be an int 0-{KIND_MAX}, got {kind!r}")
        if type(payload) is not bytes:
            if not isinstance(payload, bytes | bytearray | memoryview):
                raise TypeError(f"payload must be bytes or a memoryview, "
                                f"got {type(payload).__name__}")
            view = memoryview(payload)
            payload = view if view.ndim == 1 and view.itemsize == 1 else view.cast("B")
        if len(payload) > PAYLOAD_BYTES_MAX:
            raise ValueError(f"payload larger than {PAYLOAD_BYTES_MAX} bytes")
        return payload

    def _assign(self, kind: int, payload: Buffer) -> _Item:
        """Give a checked record its location, rotating to a new segment if it does not fit."""
        size = HEADER_BYTES + len(payload)
        offset = self._tail_offset
        if offset and offset + size > self.segment_bytes_max:
            self._segments[self._tail_segment] = offset
            self._tail_segment += 1
            offset = 0
        self._tail_offset = offset + size
        self._appended += 1
        return (self._tail_segment, offset, kind, payload)

    # -- durability --------------------------------------------------------------------------

    def on_durable(self, callback: DurableCallback) -> None:
        """Call `callback(None)` on the loop thread once every record appended so far is
        durable (fsynced; written, with sync=False), or `callback(error)` if the log fails
        first. Callbacks fire in the order they were registered, never from inside this
        call. The one durability primitive: register after the appends you care about.
        """
        if self._state == "new" or self._loop is None:
            raise WALError(f"WAL {self.directory} is not open")
        target = self._appended
        if target <= self._durable:
            self._loop.call_soon(self._call, callback, None)
        elif self._failure_seen:
            self._loop.call_soon(self._call, callback, self._failure)
        else:
            self._waiters.append((target, callback))

    async def wait_durable(self) -> None:
        """Return once every record appended before this call is durable (on_durable as a
        coroutine); raises WALError if the log fails first."""
        assert self._loop is not None, "WAL is not open"
        future: asyncio.Future[None] = self._loop.create_future()

        def done(error: WALError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.on_durable(done)
        await future

    def _on_batch_durable(self, records: int) -> None:
        """Loop thread: records 1..`records` are durable; fire the waiters they cover."""
        if records <= self._durable:
            return
        self._durable = records
        waiters = self._waiters
        while waiters and waiters[0][0] <= records:
            self._call(waiters.popleft()[1], None)

    def _on_failure(self) -> None:
        """Loop thread: the writer failed; fail every waiter it had not yet satisfied."""
        self._failure_seen = True
        waiters = self._waiters
        while waiters:
            self._call(waiters.popleft()[1], self._failure)

    def _call(self, callback: DurableCallback, error: WALError | None) -> None:
        try:
            callback(error)
        except Exception as exc:  # one bad callback must not starve the others
            assert self._loop is not None
            self._loop.call_exception_handler(
                {"message": "exception in a WAL durable callback", "exception": exc}
            )

    # -- reading and housekeeping ------------------------------------------------------------

    def read(self, location: Location) -> tuple[int, bytes]:
        """Return (kind, payload) of the record at `location`, verifying its checksum.

        Works for any appended record: one not yet written comes from memory, others from a
        pread on the segment (a blocking disk read if the page is not cached). Raises
        WALError for a location that holds no record or a record that fails its checksum.
        """
        if self._state != "open":
            raise WALError(f"WAL {self.directory} is {self._state}, cannot read")
        segment_id, offset = location
        end = self._tail_offset if segment_id == self._tail_segment else \
            self._segments.get(segment_id)
        if end is None:
            raise WALError(f"no segment {segment_id} in WAL {self.directory}")
        if not 0 <= offset <= end - HEADER_BYTES:
            raise WALError(f"no record at {location} (segment {segment_id} ends at {end})")
        with self._lock:
            if location >= self._written:
                for item in (*self._inflight, *self._pending):
                    if item[0] == segment_id and item[1] == offset:
                        return item[2], bytes(item[3])
                raise WALError(f"no record starts at {location}")
        fd = self._read_fds.get(segment_id)
        if fd is None:
            fd = os.open(segment_path(self.directory, segment_id), os.O_RDONLY | os.O_CLOEXEC)
            self._read_fds[segment_id] = fd
        header = os.pread(fd, HEADER_BYTES, offset)
        length = HEADER.unpack(header)[0] if len(header) == HEADER_BYTES else 0
        if offset + HEADER_BYTES + length > end:
            raise WALError(f"no record at {location}: a record there would end past {end}")
        data = header + os.pread(fd, length, offset + HEADER_BYTES)
        try:
            kind, payload, _ = decode_at(memoryview(data), 0)
        except RecordError as exc:
            raise WALError(f"bad record at {location} in {self.directory}: {exc}") from None
        return kind, bytes(payload)

    def delete_segments_before(self, segment_id: int) -> None:
        """Drop every segment older than `segment_id` (the caller knows nothing in them is
        live). They disappear from `segment_ids()` and `read` at once; the files are
        unlinked by the writer thread, in order with the writes."""
        if self._state != "open":
            raise WALError(f"WAL {self.directory} is {self._state}")
        if segment_id > self._tail_segment:
            raise ValueError(f"cannot delete the current segment {self._tail_segment} "
                             f"(asked to delete everything before {segment_id})")
        doomed = [sid for sid in self._segments if sid < segment_id]
        if not doomed:
            return
        for sid in doomed:
            del self._segments[sid]
            fd = self._read_fds.pop(sid, None)
            if fd is not None:
                os.close(fd)
        with self._lock:
            self._pending.append((_DELETE, segment_id, 0, b""))
            if self._writer_idle:
                self._writer_idle = False
                self._wakeup.notify()

    def segment_ids(self) -> list[int]:
        """Ids of the live segments, oldest first (the current one last)."""
        return [*sorted(self._segments), self._tail_segment]

    @property
    def appended(self) -> int:
        """Records appended so far (the sequence number of the last one)."""
        return self._appended

    def current_segment(self) -> int:
        """The segment the next append goes to (unless it rotates)."""
        return self._tail_segment

    # -- the writer thread -------------------------------------------------------------------

    def _fdatasync(self, fd: int) -> None:
        """One data sync of a segment file (a seam: tests subclass it to model a slow disk)."""
        os.fdatasync(fd)

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while True:
                with self._lock:
                    while not self._pending and not self._closing:
                        self._writer_idle = True
                        self._wakeup.wait()
                    self._writer_idle = False
                    batch = self._pending
                    if not batch:
                        break  # closing, and everything is written
                    self._pending = []
                    self._inflight = batch
                records = self._write_batch(batch)
                if records:
                    try:
                        loop.call_soon_threadsafe(self._on_batch_durable, self._w_records)
                    except RuntimeError:  # the loop is closed: nobody is left to tell
                        pass
        except BaseException as exc:
            log.exception("WAL %s: writer failed; the log is stopped", self.directory)
            self._failure = WALError(f"{type(exc).__name__}: {exc}")
            self._failure.__cause__ = exc
            try:
                loop.call_soon_threadsafe(self._on_failure)
            except RuntimeError:
                pass
        finally:
            if self._w_fd >= 0:
                os.close(self._w_fd)
                self._w_fd = -1

    def _write_batch(self, batch: list[_Item]) -> int:
        """Write and sync one batch; return how many records it held."""
        buffers: list[Buffer] = []
        created = False
        deletes: list[int] = []
        records = 0
        nbytes = 0
        position = self._w_offset  # where the next record of this batch starts
        pack = HEADER.pack
        crc32 = zlib.crc32
        for segment_id, offset, kind, payload in batch:
            if segment_id != self._w_segment:
                if segment_id == _DELETE:
                    deletes.append(offset)
                    continue
                self._write(buffers)
                buffers = []
                self._rotate(segment_id)
                position = 0
                created = True
            if offset != position:
                raise AssertionError(f"WAL writer at {segment_id}:{position} got a record "
                                     f"placed at {offset}")
            length = len(payload)
            buffers.append(pack(length, crc32(payload, KIND_CRC[kind]), kind))
            buffers.append(payload)
            records += 1
            nbytes += HEADER_BYTES + length
            position += HEADER_BYTES + length
        self._write(buffers)
        with self._lock:
            self._written = Location(self._w_segment, self._w_offset)
            self._inflight = []
        self.stats.records += records
        self.stats.batches += 1
        self.stats.bytes += nbytes
        if self.sync and records:
            self._fdatasync(self._w_fd)
            self.stats.fsyncs += 1
        if created and self.sync:
            fsync_directory(self.directory)
            self.stats.dir_fsyncs += 1
        for before in deletes:
            self._delete_before(before)
        self._w_records += records
        return records

    def _write(self, buffers: list[Buffer]) -> None:
        """writev every buffer at the writer's offset, in IOV_MAX chunks, retrying short
        writes."""
        for start in range(0, len(buffers), _IOV_MAX):
            chunk = buffers[start:start + _IOV_MAX]
            want = sum(len(b) for b in chunk)
            done = os.writev(self._w_fd, chunk)
            if done < want:  # rare (signal, nearly full disk): finish with plain writes
                rest = memoryview(b"".join(chunk))[done:]
                while rest:
                    rest = rest[os.write(self._w_fd, rest):]
            self._w_offset += want

    def _rotate(self, segment_id: int) -> None:
        """Seal the current segment (sync and close it) and create `segment_id`."""
        if segment_id != self._w_segment + 1:
            raise AssertionError(f"WAL writer at segment {self._w_segment} got {segment_id}")
        if self.sync:
            self._fdatasync(self._w_fd)
            self.stats.fsyncs += 1
        os.close(self._w_fd)
        self._w_fd = -1
        self._w_fd = os.open(segment_path(self.directory, segment_id),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._w_segment, self._w_offset = segment_id, 0

    def _delete_before(self, before: int) -> None:
        deleted = False
        for segment_id in list_segments(self.directory):
            if segment_id < before and segment_id != self._w_segment:
                segment_path(self.directory, segment_id).unlink(missing_ok=True)
                deleted = True
        if deleted and self.sync:
            fsync_directory(self.directory)
            self.stats.dir_fsyncs += 1
