"""Big Raft snapshots over a cluster link: streamed in chunks, reassembled on arrival.

Theory of operation.

A SNAPSHOT message carries a group's whole state (for a replicated queue, every live
message body): it can be larger than a link frame may be, and even when it fits, one
message of hundreds of MB would fill the link's buffer and hold back every other group's
traffic to that peer. So `ClusterTransport` hands such a message to a `SnapshotSender`,
which cuts its data into chunks of `chunk_bytes` and sends them as link messages of their
own kind (`KIND`), each carrying the message's header (`wire.chunk_to_wire`).

Sending (`SnapshotSender`):
- One transfer per (peer, group). The Raft core presumes a snapshot lost after an election
  timeout and sends it again; a resend of the snapshot in flight (same term and index) is
  ignored, and so is one that arrives within `resend_after_s` (plus a second per 50 MB) of
  the last chunk leaving,
  while the peer persists and applies it. A newer one (higher term or index) replaces the
  transfer in flight, from offset 0.
- Pacing. A pump sends chunks only while the link's unsent bytes stay within half its
  high-water mark (or the link is empty), so the stream never makes the link unwritable by
  itself and the other groups' batches keep going between chunks. At most
  `chunks_per_pump` chunks per pump, so one transfer never hogs the loop; the pump runs
  again on the next loop turn while it has budget left to use, else after `retry_s`.
- A transfer whose link drops is abandoned (the chunks queued on the lost link are gone
  with it); Raft's resend starts a new one over the next link.

Receiving (`SnapshotReceiver`):
- Per (sender, group), at most one partial transfer: chunks must come in order (a chunk
  at offset 0 starts a transfer, replacing any partial one; any other must continue the
  partial one exactly, else the partial one is dropped and logged). A transfer is admitted
  at its first chunk by the same checks as a whole batch (`admit`), and refused if it
  announces more than `bytes_max` bytes, before anything is buffered.
- When complete, the snapshot is delivered as a one-message `Batch`, exactly as if it had
  come whole. A partial transfer is dropped when a link with the sender drops (either way:
  a flap of only our outbound link costs a resend, after `resend_after_s`), when a newer one
  from that sender for that group starts, or when nothing came for `stale_after_s` (the
  sender stalled with its link up).

Everything runs on the node's event loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from warrenmq.raft import Message, MessageType
from warrenmq.replication.transport import Batch

from . import wire
from .control import FRAME_MAX
from .links import PeerLinks, same_node

if TYPE_CHECKING:
    from .raft_transport import TransportStats

log = logging.getLogger("warrenmq.links")

KIND = "raft.snap"
CHUNK_BYTES = 1024 * 1024
CHUNK_BYTES_MAX = FRAME_MAX // 2  # room for the header inside one link frame
CHUNKS_PER_PUMP = 4
PUMP_RETRY_S = 0.005
RESEND_AFTER_S = 5.0
# ... plus this per byte: the follower writes and installs a big snapshot for seconds (a
# 400 MB one takes about ten), and a resend meanwhile would stream it all again
RESEND_AFTER_S_PER_BYTE = 1 / (50 * 1024 * 1024)
SNAPSHOT_BYTES_MAX = 8 * 1024**3
STALE_AFTER_S = 60.0

Admit = Callable[[str, Batch], bool]
Deliver = Callable[[Batch], None]


@dataclass(slots=True)
class _Outgoing:
    peer: str
    group_id: str
    from_node: int
    incarnation: int
    term: int
    index: int
    header: list[Any]
    data: memoryview
    chunk_bytes: int
    offset: int = 0

    @property
    def total(self) -> int:
        return len(self.data)


class SnapshotSender:
    def __init__(self, links: PeerLinks, stats: TransportStats, *,
                 chunk_bytes: int = CHUNK_BYTES, chunks_per_pump: int = CHUNKS_PER_PUMP,
                 retry_s: float = PUMP_RETRY_S, resend_after_s: float = RESEND_AFTER_S) -> None:
        self.links = links
        self.stats = stats
        self.chunk_bytes = chunk_bytes
        self.chunks_per_pump = chunks_per_pump
        self.retry_s = retry_s
        self.resend_after_s = resend_after_s
        self._out: dict[tuple[str, str], _Outgoing] = {}
        # (peer, group) -> (term, index, when its last chunk left): resends to ignore
        # (term, index, resends ignored until): snapshots streamed whole, lately
        self._sent: dict[tuple[str, str], tuple[int, int, float]] = {}
        self._pump_handle: asyncio.Handle | None = None

    @property
    def chunk_bytes(self) -> int:
        return self._chunk_bytes

    @chunk_bytes.setter
    def chunk_bytes(self, n: int) -> None:
        if not 0 < n <= CHUNK_BYTES_MAX:
            raise ValueError(f"chunk_bytes {n} is not in 1..{CHUNK_BYTES_MAX}")
        self._chunk_bytes = n

    def takes(self, m: Message) -> bool:
        """Whether `m` is a snapshot to stream rather than send in a batch."""
        return (m.type is MessageType.SNAPSHOT and m.snapshot is not None
                and len(m.snapshot.data) > self.chunk_bytes)

    def in_flight(self) -> list[tuple[str, str, int]]:
        """(peer, group, snapshot index) of every transfer under way."""
        return [(t.peer, t.group_id, t.index) for t in self._out.values()]

    def start(self, peer: str, from_node: int, incarnation: int, group_id: str,
              m: Message) -> None:
        snap = m.snapshot
        assert snap is not None, "a SNAPSHOT message without a snapshot"
        key = (peer, group_id)
        new = (m.term, snap.index)
        old = self._out.get(key)
        if old is not None:
            if new <= (old.term, old.index):  # the core's resend timer, or older news
                self.stats.snapshot_resends_ignored += 1
                return
            self._abandon(key, f"replaced by the snapshot at index {snap.index}")
        now = self._loop().time()
        for k in [k for k, (_, _, until) in self._sent.items() if now >= until]:
            del self._sent[k]
        sent = self._sent.pop(key, None)
        if sent is not None and sent[:2] == new:
            self._sent[key] = sent
            self.stats.snapshot_resends_ignored += 1
            return
        self._out[key] = _Outgoing(peer, group_id, from_node, incarnation, m.term, snap.index,
                                   wire.snapshot_header(m), memoryview(snap.data),
                                   self.chunk_bytes)
        self.stats.snapshot_transfers_started += 1
        log.info("streaming the snapshot of %s at index %d (%d bytes) to %s in chunks of %d",
                 group_id, snap.index, len(snap.data), peer, self.chunk_bytes)
        self._schedule(0.0)

    def peer_down(self, peer: str) -> None:
        for key in [k for k in self._out if same_node(k[0], peer)]:
            self._abandon(key, "its link was lost")
        for key in [k for k in self._sent if same_node(k[0], peer)]:
            del self._sent[key]  # it may never have arrived

    def abandon_all(self, reason: str) -> None:
        for key in list(self._out):
            self._abandon(key, reason)
        self._sent.clear()

    # -- pumping --------------------------------------------------------------------------
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _schedule(self, delay_s: float) -> None:
        if self._pump_handle is not None:
            if delay_s > 0:
                return  # already due, at least as soon
            self._pump_handle.cancel()
        loop = self._loop()
        self._pump_handle = (loop.call_later(delay_s, self._pump) if delay_s > 0
                             else loop.call_soon(self._pump))

    def _pump(self) -> None:
        self._pump_handle = None
        budget = self.chunks_per_pump
        for key in list(self._out):
            t = self._out.get(key)
            if t is None:
                continue
            while budget and t.offset < t.total and self._room_for(t):
                if not self._send_chunk(t):
                    self._abandon(key, "its link was lost")
                    break
                budget -= 1
            if self._out.get(key) is not t:
                continue
            if t.offset >= t.total:
                del self._out[key]
                quiet = self.resend_after_s + t.total * RESEND_AFTER_S_PER_BYTE
                self._sent[key] = (t.term, t.index, self._loop().time() + quiet)
                self.stats.snapshot_transfers_sent += 1
            else:
                self._out[key] = self._out.pop(key)  # to the back: the others go first next
            if not budget:
                break
        if self._out:
            # budget used up: more may go at once; else every link is full for now
            self._schedule(0.0 if not budget else self.retry_s)

    def _room_for(self, t: _Outgoing) -> bool:
        buffered = self.links.buffered(t.peer)
        if buffered is None:
            return True  # no link: the send says so, and the transfer is abandoned
        n = min(t.chunk_bytes, t.total - t.offset)
        return buffered == 0 or buffered + n <= self.links.write_buffer_high_bytes // 2

    def _send_chunk(self, t: _Outgoing) -> bool:
        end = min(t.offset + t.chunk_bytes, t.total)
        payload = wire.chunk_to_wire(t.from_node, t.incarnation, t.group_id, t.header,
                                     t.offset, t.total, t.data[t.offset:end])
        if not self.links.send(t.peer, KIND, payload):
            return False
        t.offset = end
        self.stats.snapshot_chunks_sent += 1
        return True

    def _abandon(self, key: tuple[str, str], reason: str) -> None:
        t = self._out.pop(key)
        self.stats.snapshot_transfers_abandoned += 1
        log.info("abandoned the snapshot of %s at index %d to %s after %d of %d bytes: %s",
                 t.group_id, t.index, t.peer, t.offset, t.total, reason)
        if not self._out and self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None


@dataclass(slots=True)
class _Incoming:
    chunk: wire.SnapshotChunk  # the first one: the header every later one must repeat
    last_s: float
    received: int = 0
    parts: list[bytes] = field(default_factory=list)

    @property
    def index(self) -> int:
        snap = self.chunk.message.snapshot
        assert snap is not None, "wire.chunk_from_wire lets no chunk without a snapshot in"
        return snap.index

    def continues(self, c: wire.SnapshotChunk) -> bool:
        first = self.chunk
        return (c.message == first.message and c.from_node == first.from_node
                and c.incarnation == first.incarnation and c.total == first.total
                and c.offset == self.received)


class SnapshotReceiver:
    def __init__(self, stats: TransportStats, admit: Admit, deliver: Deliver, *,
                 bytes_max: int = SNAPSHOT_BYTES_MAX,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self.stats = stats
        self.admit = admit
        self.deliver = deliver
        self.bytes_max = bytes_max
        self.stale_after_s = stale_after_s
        self._in: dict[tuple[str, str], _Incoming] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None

    def partial(self) -> list[tuple[str, str, int, int]]:
        """(sender, group, bytes received, total) of every transfer under way."""
        return [(k[0], k[1], p.received, p.chunk.total) for k, p in self._in.items()]

    def accept(self, from_name: str, c: wire.SnapshotChunk) -> None:
        key = (from_name, c.group_id)
        part = self._in.get(key)
        now = asyncio.get_running_loop().time()
        if c.offset == 0:
            if part is not None:
                self._drop(key, "a newer transfer started")
            if c.total > self.bytes_max:
                self.stats.dropped_bad += 1
                log.error("refused a snapshot of %d bytes for %s from %s: more than the "
                          "limit of %d bytes", c.total, c.group_id, from_name, self.bytes_max)
                return
            if not self.admit(from_name, Batch(c.from_node, c.incarnation,
                                               ((c.group_id, c.message),))):
                return
            part = self._in[key] = _Incoming(c, now)
            self._schedule_sweep()
        elif part is None:
            # the rest of a transfer already dropped (its start is what would have told us)
            log.debug("a snapshot chunk for %s from %s belongs to no transfer: dropped",
                      c.group_id, from_name)
            return
        elif not part.continues(c):
            log.warning("a snapshot chunk for %s from %s at offset %d does not continue the "
                        "transfer at %d: the transfer is dropped", c.group_id, from_name,
                        c.offset, part.received)
            self._drop(key, "a chunk out of order")
            return
        self.stats.snapshot_chunks_received += 1
        part.parts.append(c.data)
        part.received += len(c.data)
        part.last_s = now
        if part.received < c.total:
            return
        del self._in[key]
        first = part.chunk
        data = b"".join(part.parts)
        part.parts.clear()
        snap = first.message.snapshot
        assert snap is not None
        m = replace(first.message, snapshot=replace(snap, data=data))
        whole = Batch(first.from_node, first.incarnation, ((first.group_id, m),))
        if not self.admit(from_name, whole):  # the checks again: the id map may have changed
            return
        self.stats.snapshot_transfers_received += 1
        log.info("received the snapshot of %s at index %d (%d bytes) from %s",
                 first.group_id, snap.index, len(data), from_name)
        self.deliver(whole)

    def peer_down(self, peer: str) -> None:
        for key in [k for k in self._in if same_node(k[0], peer)]:
            self._drop(key, "the sender's link was lost")

    def drop_all(self, reason: str) -> None:
        for key in list(self._in):
            self._drop(key, reason)

    def _drop(self, key: tuple[str, str], reason: str) -> None:
        part = self._in.pop(key)
        self.stats.snapshot_transfers_dropped += 1
        log.info("dropped the partial snapshot of %s at index %d from %s (%d of %d bytes): "
                 "%s", key[1], part.index, key[0], part.received, part.chunk.total, reason)
        if not self._in and self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None

    def _schedule_sweep(self) -> None:
        if self._sweep_handle is None:
            loop = asyncio.get_running_loop()
            self._sweep_handle = loop.call_later(self.stale_after_s, self._sweep)

    def _sweep(self) -> None:
        self._sweep_handle = None
        now = asyncio.get_running_loop().time()
        for key, part in list(self._in.items()):
            if now - part.last_s >= self.stale_after_s:
                self._drop(key, f"nothing came for {self.stale_after_s:g}s")
        if self._in:
            self._schedule_sweep()
