"""The broker's journal on the write-ahead log: what is recorded, and how it is replayed.

Records (kind byte, then payload; kind 1 was the metadata command of an earlier format):
  MSG       a persistent message enqueued on durable queues: the (queue id, seq) pairs, the
            exchange and routing key, the raw content header and the body
  DELIVERED (queue id, seqs) that went out once: they come back redelivered after a crash
  SETTLED   (queue id, seqs) that are gone (acked, rejected, purged)
  PAGE      a transient body paged out of memory; never replayed

Queues are named in records by their incarnation id, so messages of a deleted queue never
reappear in a new queue of the same name. Segments are deleted oldest first once nothing
live is left in them (then acks in a deleted segment can only refer to messages in deleted
segments). Metadata is not the journal's: it is the "meta" Raft group's, whose records share
this log (server/metalog.py); a segment is deleted only once every group has written a
checkpoint after it (see `maintain`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pamqp import decode as amqp_decode
from pamqp import encode as amqp_encode

from ..amqp.codec import names
from ..core.journal import Journal
from ..core.message import FLAG_EXPIRATION, Message
from .wal import WAL, WALError

if TYPE_CHECKING:
    from ..core.node import Node
    from ..queues.classic import ClassicQueue

log = logging.getLogger("warrenmq.journal")

MSG, DELIVERED, SETTLED, PAGE = 2, 3, 4, 5

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SEGMENT = 0  # index of the segment id in a Location


def encode_table(value: dict) -> bytes:
    return amqp_encode.field_table(value)


def decode_table(data: bytes) -> dict:
    return amqp_decode.field_table(data)[1]


def _sstr(b: bytes) -> bytes:
    return bytes((len(b),)) + b


class WalJournal(Journal):
    durable = True

    def __init__(self, directory: Path, loop: asyncio.AbstractEventLoop,
                 wake: Callable[[], None] = lambda: None, sync: bool = True,
                 segment_bytes_max: int = 64 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.wal = WAL(self.directory / "wal", segment_bytes_max=segment_bytes_max, loop=loop,
                       sync=sync)
        self.wake = wake  # the shell flushes output after durable callbacks ran
        self.failed: WALError | None = None
        # segments before this one hold no Raft state any more (see maintain)
        self.checkpoint_segment = 0
        self.request_checkpoint: Callable[[], None] | None = None
        self.found = False
        self.node: Node | None = None
        self.live: dict[int, int] = defaultdict(int)  # segment -> live (queue, msg) refs
        self._delivered: dict[str, list[int]] = {}
        self._settled: dict[str, list[int]] = {}
        self._recovering = False
        self._pending: dict[str, dict[int, list]] = {}

    # -- logging ---------------------------------------------------------------------------------
    def log_message(self, msg: Message, queues: list[ClassicQueue]) -> None:
        parts = [_U16.pack(len(queues))]
        for q in queues:
            parts.append(_sstr(q.record.id.encode()))
            parts.append(_U64.pack(q.next_seq + 1))  # the seq enqueue() is about to give
        body = msg.body if msg.body is not None else self.read_body(msg)
        parts += (_U64.pack(int(msg.published_ms)), msg.exchange_ss, msg.routing_key_ss,
                  _U32.pack(len(msg.header)), msg.header, body)
        loc = self.wal.append(MSG, b"".join(parts))
        msg.loc = loc
        self.live[loc[_SEGMENT]] += len(queues)

    def note_delivered(self, queue: ClassicQueue, seq: int) -> None:
        self._delivered.setdefault(queue.record.id, []).append(seq)

    def note_settled(self, queue: ClassicQueue, entries: list[tuple]) -> None:
        seqs = self._settled.setdefault(queue.record.id, [])
        live = self.live
        for seq, msg, _ in entries:
            seqs.append(seq)
            if msg.loc is not None:
                live[msg.loc[_SEGMENT]] -= 1

    def queue_deleted(self, queue: ClassicQueue) -> None:
        qid = queue.record.id
        live = self.live
        pending = self._pending.pop(qid, None)
        if pending:
            for msg, _ in pending.values():
                live[msg.loc[_SEGMENT]] -= 1
        for _, msg, _ in queue.ready:
            if msg.persistent and msg.loc is not None:
                live[msg.loc[_SEGMENT]] -= 1
        for msg in queue.out_persistent.values():
            if msg.loc is not None:
                live[msg.loc[_SEGMENT]] -= 1
        queue.out_persistent.clear()
        self._delivered.pop(qid, None)
        self._settled.pop(qid, None)

    def page_out(self, msg: Message) -> None:
        if msg.body is None:
            return
        if msg.loc is None:
            msg.loc = self.wal.append(PAGE, msg.body)
        if not msg.pinned:  # the record must outlive the queues' references to it
            msg.pinned = True
            self.live[msg.loc[_SEGMENT]] += 1
        msg.body = None

    def unpin(self, msg: Message) -> None:
        if msg.pinned:
            msg.pinned = False
            self.live[msg.loc[_SEGMENT]] -= 1

    def read_body(self, msg: Message) -> bytes:
        kind, payload = self.wal.read(msg.loc)
        if kind == PAGE:
            return payload
        return _message_body(payload)

    def after_sync(self, callback: Callable[[], None]) -> None:
        # what is batched for the end of the turn is part of "everything logged so far"
        self.flush()

        def done(error: WALError | None) -> None:
            if error is not None:
                # nothing that waits for the disk is confirmed once the log has failed
                if self.failed is None:
                    self.failed = error
                    log.critical("the write-ahead log failed: %s; nothing more will be "
                                 "confirmed", error)
                return
            callback()
            self.wake()

        self.wal.on_durable(done)

    def flush(self) -> None:
        if self._delivered:
            batch, self._delivered = self._delivered, {}
            for qid, seqs in batch.items():
                self.wal.append(DELIVERED, _seqs_payload(qid, seqs))
        if self._settled:
            batch, self._settled = self._settled, {}
            for qid, seqs in batch.items():
                self.wal.append(SETTLED, _seqs_payload(qid, seqs))

    # -- recovery ---------------------------------------------------------------------------------
    def scan(self, other_kinds: frozenset[int] = frozenset()) -> list[tuple]:
        """First pass over the log: gather the messages (by queue id) and return the records
        of `other_kinds` (the Raft groups', metadata included) for their owner. The
        metadata is rebuilt from those before `restore` hands the messages to the queues."""
        self._recovering = True
        self.found = False
        pending = self._pending
        live = self.live
        others: list[tuple] = []
        for loc, kind, payload in self.wal.open():
            self.found = True
            if kind == MSG:
                pairs, msg = _decode_message(payload)
                msg.loc = loc
                for qid, seq in pairs:
                    pending.setdefault(qid, {})[seq] = [msg, False]
                    live[loc[_SEGMENT]] += 1
            elif kind in (DELIVERED, SETTLED):
                qid, seqs = _decode_seqs(payload)
                entries = pending.get(qid)
                if not entries:
                    continue
                for seq in seqs:
                    entry = entries.get(seq)
                    if entry is None:
                        continue
                    if kind == DELIVERED:
                        entry[1] = True
                    else:
                        del entries[seq]
                        live[entry[0].loc[_SEGMENT]] -= 1
            elif kind in other_kinds:
                others.append((loc, kind, payload))
        return others

    def restore(self, node: Node) -> None:
        """Second pass: the metadata is back; give each live queue its messages. Messages of
        queues that no longer exist (or live on another node) are dropped."""
        self.node = node
        pending, self._pending = self._pending, {}
        live = self.live
        queues_by_id = {q.record.id: q for qs in node.queues.values() for q in qs.values()}
        for entries in pending.values():
            for msg, _ in entries.values():
                msg.refs = 0
        for qid, entries in pending.items():
            q = queues_by_id.get(qid)
            if q is None or q.deleted:
                for msg, _ in entries.values():
                    live[msg.loc[_SEGMENT]] -= 1
                entries.clear()
                continue
            for msg, _ in entries.values():
                msg.refs += 1
        restored = 0
        for qid, entries in pending.items():
            if not entries:
                continue
            q = queues_by_id[qid]
            q.restore([(seq, msg, redelivered) for seq, (msg, redelivered)
                       in sorted(entries.items())])
            restored += len(entries)
        self._recovering = False
        if restored:
            log.info("recovered %d persistent messages in %d queues", restored,
                     sum(1 for e in pending.values() if e))

    # -- housekeeping -------------------------------------------------------------------------------
    def maintain(self) -> None:
        """Delete the oldest segments once nothing live is left in them: no message, and no
        Raft state (the groups' state lives in records after `checkpoint_segment`; when a
        deletable segment is older, `request_checkpoint` asks the owner for fresh ones)."""
        current = self.wal.current_segment()
        deletable = []
        for seg in self.wal.segment_ids():
            if seg >= current or self.live.get(seg, 0) > 0:
                break
            deletable.append(seg)
        if not deletable:
            return
        limit = deletable[-1] + 1
        if self.checkpoint_segment < limit and self.request_checkpoint is not None:
            self.request_checkpoint()
        limit = min(limit, self.checkpoint_segment)
        first = self.wal.segment_ids()[0] if self.wal.segment_ids() else limit
        if limit <= first:
            return
        self.wal.delete_segments_before(limit)
        for seg in deletable:
            if seg < limit:
                self.live.pop(seg, None)

    def close(self) -> None:
        self.flush()
        self.wal.close()


def snapshot_commands(node: Node) -> list[dict]:
    """The metadata commands that rebuild the node's current metadata."""
    meta = node.meta
    out: list[dict] = []
    for u in meta.users.values():
        out.append({"op": "user.add", "name": u.name, "password_hash": u.password_hash,
                    "tags": list(u.tags)})
    for v in meta.vhosts.values():
        out.append({"op": "vhost.add", "name": v.name, "description": v.description,
                    "tags": list(v.tags)})
    for (user, vhost), p in meta.permissions.items():
        out.append({"op": "permission.set", "user": user, "vhost": vhost,
                    "configure": p.configure, "write": p.write, "read": p.read})
    for v in meta.vhosts.values():
        for x in v.exchanges.values():
            out.append({"op": "exchange.declare", "vhost": v.name, "name": x.name,
                        "type": x.type, "durable": x.durable, "auto_delete": x.auto_delete,
                        "internal": x.internal, "arguments": x.arguments})
        for q in v.queues.values():
            out.append({"op": "queue.declare", "vhost": v.name, "name": q.name,
                        "durable": q.durable, "exclusive_owner": q.exclusive_owner,
                        "auto_delete": q.auto_delete, "arguments": q.arguments,
                        "type": q.type, "id": q.id, "node": q.node,
                        "members": list(q.members)})
        for x in v.exchanges.values():
            for b in x.router.bindings:
                out.append({"op": "binding.add", "vhost": v.name, "source": x.name,
                            "dest_kind": b.dest.kind, "dest": b.dest.name,
                            "routing_key": b.routing_key, "arguments": b.arguments})
    extra = getattr(meta, "snapshot_extra", None)
    if extra is not None:
        out += extra()
    return out


def _seqs_payload(qid: str, seqs: list[int]) -> bytes:
    return b"".join((_sstr(qid.encode()), _U32.pack(len(seqs)),
                     struct.pack(f">{len(seqs)}Q", *seqs)))


def _decode_seqs(payload: bytes) -> tuple[str, tuple[int, ...]]:
    n = payload[0]
    qid = payload[1:1 + n].decode()
    (count,) = _U32.unpack_from(payload, 1 + n)
    return qid, struct.unpack_from(f">{count}Q", payload, 5 + n)


def _decode_message(payload: bytes) -> tuple[list[tuple[str, int]], Message]:
    (n,) = _U16.unpack_from(payload, 0)
    o = 2
    pairs = []
    for _ in range(n):
        ln = payload[o]
        qid = payload[o + 1:o + 1 + ln].decode()
        o += 1 + ln
        pairs.append((qid, _U64.unpack_from(payload, o)[0]))
        o += 8
    (published_ms,) = _U64.unpack_from(payload, o)
    o += 8
    ex_end = o + 1 + payload[o]
    rk_end = ex_end + 1 + payload[ex_end]
    exchange, routing_key, ex_ss, rk_ss = names(payload[o:rk_end])
    (hlen,) = _U32.unpack_from(payload, rk_end)
    header = payload[rk_end + 4:rk_end + 4 + hlen]
    body_size = _U64.unpack_from(header, 4)[0]
    msg = Message(exchange, routing_key, ex_ss, rk_ss, header, None, body_size)
    msg.published_ms = float(published_ms)
    if msg.flags & FLAG_EXPIRATION:
        expiration = msg.properties.expiration
        if expiration is not None and str(expiration).isdigit():
            msg.ttl_ms = int(expiration)
    return pairs, msg


def _message_body(payload: bytes) -> bytes:
    (n,) = _U16.unpack_from(payload, 0)
    o = 2
    for _ in range(n):
        o += 1 + payload[o] + 8
    o += 8  # published_ms
    o += 1 + payload[o]
    o += 1 + payload[o]
    (hlen,) = _U32.unpack_from(payload, o)
    return payload[o + 4 + hlen:]
