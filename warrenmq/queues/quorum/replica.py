"""A quorum queue as one node sees it: a replica of the queue's Raft group, and the queue
object the channel talks to (the same calls as a ClassicQueue).

Theory of operation. Every command (enqueue with its message, checkout, settle, return,
discard, cancel, purge, down) is an entry of the queue's Raft group; `apply` runs on every
replica, in log order, the deterministic `QuorumMachine`. Replies go back only on the node
that proposed the command (the entry names its origin), which is how a publisher's confirm
and a consumer's consume-ok are released: after a majority of replicas have the entry on
disk. Deliveries are effects of the machine naming a consumer; the replica on the node where
that consumer's channel lives carries them out, so a delivery needs no extra hop when every
node is a replica (ha-all). Dead-lettering is done by the leader's replica only: at most once
by default; at least once under `dead-letter-strategy: at-least-once` (with a dead-letter
exchange and `overflow: reject-publish`, as RabbitMQ 3.10 requires), where the machine holds
each dead letter until the leader has had every target queue confirm its copy
(`dead_letter_settle`); what is unroutable meanwhile (its exchange or queue missing) is
forwarded again when the machine names it again (see machine.py).

What a quorum queue does as RabbitMQ 3.10 does (a classic queue replicated by an ha-* policy
keeps classic behaviour): `x-delivery-count` on redeliveries (the number of failed
deliveries: returns, requeues, consumers gone) and on every basic.get; no global
(channel-wide) QoS, refused at consume with 540 NOT_IMPLEMENTED; the leader deletes the
queue once unused for its x-expires; a message its client requeues goes to the back
without a delivery limit, first with one. One deliberate exception, message priorities,
follows RabbitMQ 4.x instead of 3.10 (which ignores them): priorities above 4 are served
first, 2:1 with the others (x-max-priority stays refused at declare, as in 4.x; see
machine.py's "Order"). A classic queue declared with x-max-priority keeps a classic priority
queue's order when an ha-* policy replicates it. Every enqueue carries the message's
priority property; the machine's config (`queue_type`, `max_priority`) decides what it
means.

Bodies stay in the log entries (the machine holds references); this replica keeps the
bodies of live messages in memory (`bodies`, by Raft index) and drops them as the machine's
release cursor moves. A snapshot carries the machine's state and the live bodies.

Read-ahead. A consumer gets new deliveries only as its settlements are applied, a round
through Raft after its client's ack; with prefetch N it would wait for that round whenever
its client has N unacknowledged, so a consumer that keeps up with a busy queue would be
bound by commit latency rather than by its own speed. A consumer with a prefetch of
`READ_AHEAD_MIN_PREFETCH` or more (per consumer; not no-ack, not channel-wide) therefore
checks out twice its prefetch: its node hands the client at most N unacknowledged and holds
the rest back (`_ahead`), delivering from there as the client acks, with no round to wait
for. The machine knows the client's share (the checkout's `window`), so the listings count
held-back messages as ready, as RabbitMQ would; a cancel returns them as they were, neither
redelivered nor counted as a failed delivery. A consumer with a smaller prefetch (one
dispatching long tasks fairly among workers, as Celery does) is left exact: read-ahead
would keep messages at a busy worker that an idle one could take.

Pure: proposing is `propose(data) -> Pending`, given by the shell, which also tells whether
this replica leads (`is_leader`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import msgpack

from ...amqp.codec import encode_header_payload, names
from ...amqp.constants import ACCESS_REFUSED, NOT_IMPLEMENTED, PRECONDITION_FAILED
from ...amqp.errors import AMQPError
from ...core.message import FLAG_PRIORITY, Message
from ...core.pending import Pending, when_all_true
from .commands import (
    Meta,
    make_cancel,
    make_cancel_unread,
    make_checkout,
    make_dead_letter_settle,
    make_dequeue,
    make_discard,
    make_down,
    make_enqueue,
    make_purge,
    make_return,
    make_settle,
    make_tick,
    make_update_config,
)
from .dedup import Applied
from .machine import QuorumMachine
from .settings import config_from
from .state import QueueConfig

if TYPE_CHECKING:
    from ...core.consumer import Consumer
    from ...meta.records import QueueRecord

# propose(data, still_waiting) -> a Pending that fails if the entry could not be submitted;
# still_waiting() turns False once the entry was applied here (then no retry is needed)
Propose = Callable[[bytes, Callable[[], bool]], Pending]
# the node's dead-lettering: per message, None when it went nowhere (no exchange, no route),
# else what its copies wait for (target queues' confirms, the journal's fsync)
DeadLetter = Callable[[Any, list[Message], str], list[list[Pending] | None] | None]

__all__ = ["QuorumQueue", "config_from"]

# consumers with at least this prefetch read ahead as much again (see "Read-ahead" above)
READ_AHEAD_MIN_PREFETCH = 50
READ_AHEAD_MAX = 1000  # messages held back per consumer, at most


class QuorumQueue:
    type_name = "quorum"
    journalled = False  # its log is the Raft group's, not the node's journal
    deferred_consume = True  # consume-ok once the checkout is committed
    counts_deliveries = False  # `unacked` is the machine's count (see ClassicQueue)

    def __init__(self, record: QueueRecord, origin: str, owner: str, propose: Propose,
                 is_leader: Callable[[], bool], config: QueueConfig) -> None:
        self.record = record
        self.name = record.name
        self.vhost = record.vhost
        self.durable = record.durable
        self.origin = origin  # this node's incarnation, as the entries name it
        # consumers here are owned by this node's incarnation, so a restarted node's former
        # consumers can be told from its new ones (see down_node)
        self.owner = origin
        self.node_name = owner
        self.propose = propose
        self.is_leader = is_leader
        self.machine = QuorumMachine(config)
        self.bodies: dict[int, list] = {}  # raft index -> [pair, header, body, published_ms]
        # the indexes of `bodies` in increasing order, so that the release cursor drops the
        # old ones without a scan of every live body
        self._body_order: deque[int] = deque()
        # the sizes of `bodies`, kept as they change: the listings read them every second
        self._body_bytes = 0  # bodies
        self._header_bytes = 0  # encoded headers
        self.consumers: list[Consumer] = []  # the consumers on this node
        self.local: dict[str, Consumer] = {}  # consumer id -> consumer on this node
        self.cid_of: dict[Consumer, str] = {}
        # read-ahead consumers here: consumer id -> [its window, unacknowledged at its
        # client, the deliveries held back (msg_id, ref, redelivered, delivery count)]
        self._ahead: dict[str, list] = {}
        self.waiting: dict[int, Pending] = {}
        self.applied = Applied()  # replicated: which (origin, ref) were applied
        self._next_ref = 0
        self._low_ref = 1
        self._next_cid = 0
        self.deleted = False
        self.had_consumers = False
        self.last_used_ms = 0.0
        self.consumer_timeout_ms: int | None = None
        self.overflow = config.overflow
        self.published = self.delivered = self.acked = 0
        self.is_quorum = record.type == "quorum"  # else a classic queue under an ha-* policy
        self.on_dead: DeadLetter = lambda q, m, r: None
        self.on_cancelled: Callable[[Consumer], None] = lambda c: None
        # the leader's replica deletes the queue when its x-expires runs out; None: the
        # node that owns `on_dead` is asked (its delete_queue)
        self.on_expired: Callable[[QuorumQueue], object] | None = None
        self.clock: Callable[[], float] = lambda: 0.0
        self._forwarding: set[int] = set()  # at-least-once dead letters awaiting confirms
        self._settled_now: list[int] | None = None  # gathered while forwarding, see there

    # -- settings ------------------------------------------------------------------------------
    # The dead-letter exchange and routing key live in the machine's config, so a policy
    # change reaches every replica in log order; the shell's assignment at creation (the
    # same values, arguments first) is accepted and ignored.
    @property
    def dead_letter_exchange(self) -> str | None:
        return self.machine.config.dead_letter_exchange

    @dead_letter_exchange.setter
    def dead_letter_exchange(self, value: str | None) -> None:
        pass

    @property
    def dead_letter_routing_key(self) -> str | None:
        return self.machine.config.dead_letter_routing_key

    @dead_letter_routing_key.setter
    def dead_letter_routing_key(self, value: str | None) -> None:
        pass

    # -- what the channel sees -------------------------------------------------------------
    @property
    def ready(self) -> Any:
        return self.machine.ready

    @property
    def message_count(self) -> int:
        """Ready, counting those held back for read-ahead consumers (not yet delivered)."""
        return self.machine.messages_ready() + self.machine.messages_read_ahead()

    def live_bytes(self) -> int:
        """About what a snapshot of this replica weighs: its live bodies."""
        return self._body_bytes + self._header_bytes + 64 * len(self.bodies)

    @property
    def ready_bytes(self) -> int:
        return self.machine.ready.bytes + self.machine.bytes_read_ahead()

    @property
    def resident_bytes(self) -> int:
        """Bodies held in memory here: every live one (they also stay in the log)."""
        return self._body_bytes

    @property
    def unacked(self) -> int:
        """Checked out to consumers on any node (the channels count their own), but for
        those held back for read-ahead consumers."""
        machine = self.machine
        return machine.messages_checked_out() - machine.messages_read_ahead()

    @unacked.setter
    def unacked(self, value: int) -> None:
        pass  # the machine knows better

    def rejects(self, message: Message) -> bool:  # noqa: ARG002 - the machine decides
        return False

    def dispatch(self) -> None:
        """Deliveries are the machine's to make (on settle, credit, enqueue)."""

    def enqueue(self, message: Message) -> Pending:
        self.published += 1
        cmd = make_enqueue(None, None, message.size, _priority(message), message.ttl_ms)
        body = message.body if message.body is not None else b""
        pair = message.exchange_ss + message.routing_key_ss
        return self._submit(cmd, [pair, message.header, bytes(body), message.published_ms])

    def add_consumer(self, consumer: Consumer) -> Pending:
        if self.is_quorum and consumer.channel.global_prefetch:
            raise AMQPError(NOT_IMPLEMENTED, f"queue '{self.name}' in vhost '{self.vhost}' does "
                            "not support global qos")
        self._next_cid += 1
        cid = f"{self.origin}#{self._next_cid}"
        self.local[cid] = consumer
        self.cid_of[consumer] = cid
        self.consumers.append(consumer)
        self.had_consumers = True
        prefetch = consumer.prefetch or consumer.channel.global_prefetch
        priority = consumer.priority
        window = None
        if (consumer.prefetch >= READ_AHEAD_MIN_PREFETCH and not consumer.no_ack
                and not consumer.channel.global_prefetch):
            window = prefetch
            prefetch += min(prefetch, READ_AHEAD_MAX)
            self._ahead[cid] = [window, 0, deque()]
        p = self._submit(make_checkout(cid, self.owner, prefetch, priority,
                                       consumer.exclusive, None, window))
        p.on_done(lambda p: p.error is None or self._forget(consumer))
        return p

    def remove_consumer(self, consumer: Consumer) -> None:
        cid = self.cid_of.get(consumer)
        if cid is None:
            return
        ahead = self._ahead.get(cid)
        self._forget(consumer)
        if not self.deleted:
            # the consumer's unacknowledged deliveries stay with its channel, which settles
            # or returns them later (RabbitMQ's behaviour for quorum queues); deliveries the
            # machine makes before the cancel is applied never reach the client, so the
            # cancel returns whatever the channel does not hold, in the same command, those
            # held back here (read-ahead) as never delivered
            if ahead is not None and ahead[2]:
                self._submit(make_cancel_unread(cid, _held_by(consumer, self),
                                                [entry[0] for entry in ahead[2]]))
            else:
                self._submit(make_cancel(cid, _held_by(consumer, self)))

    def _forget(self, consumer: Consumer) -> None:
        cid = self.cid_of.pop(consumer, "")
        self._ahead.pop(cid, None)
        self.local.pop(cid, None)
        if consumer in self.consumers:
            self.consumers.remove(consumer)

    def settle(self, entries: list[tuple], dead_reason: str | None = None) -> None:
        self.acked += len(entries)
        make = make_settle if dead_reason is None else make_discard
        for cid, msg_ids in _by_consumer(entries).items():
            self._submit(make(cid, msg_ids))
            if cid in self._ahead:
                self._read_on(cid, len(msg_ids))

    def requeue(self, entries: list[tuple], asked: bool | None = None) -> None:
        """Return deliveries: `asked` by the client (nack, reject, recover), or not (its
        channel closing), or None when the caller does not know (see make_return)."""
        for cid, msg_ids in _by_consumer(entries).items():
            self._submit(make_return(cid, msg_ids, asked))
            if cid in self._ahead:
                self._read_on(cid, len(msg_ids))

    def _read_on(self, cid: str, done: int) -> None:
        """`done` of a read-ahead consumer's deliveries left its client: deliver as many
        of those held back."""
        ahead = self._ahead[cid]
        ahead[1] = max(0, ahead[1] - done)
        held = ahead[2]
        consumer = self.local.get(cid)
        if held and consumer is not None:
            batch = [held.popleft() for _ in range(min(ahead[0] - ahead[1], len(held)))]
            ahead[1] += len(batch)
            self._hand(consumer, cid, batch)

    def take(self) -> Pending:
        """basic.get: a Pending of the entry (or None when empty), once committed."""
        cid = f"{self.origin}#get"
        p = Pending()
        sent = self._submit(make_dequeue(cid, self.owner))

        def got(s: Pending) -> None:
            if s.error is not None:
                p.fail(s.error)
                return
            reply = s.value
            if reply[0] != "dequeued":
                p.resolve(None)
                return
            # RabbitMQ 3.10 counts failed deliveries on every basic.get of a quorum queue
            if self.is_quorum:
                count = reply[4]
            else:  # a classic queue under a policy: a count once one failed, under a limit
                limited = self.machine.config.delivery_limit is not None
                count = (reply[4] or None) if limited else None
            msg = self._message(reply[2][0], count)
            if msg is None:  # cannot happen while the replica holds every live body
                p.fail(AMQPError(PRECONDITION_FAILED, "message body not found"))
                return
            self.delivered += 1
            p.resolve((reply[1], msg, bool(reply[3]), cid))

        sent.on_done(got)
        return p

    def purge(self) -> Pending:
        return self._submit(make_purge())

    def tick(self, now_ms: int) -> Pending:
        return self._submit(make_tick(), ts_ms=now_ms)

    def update_config(self, config: QueueConfig) -> Pending:
        return self._submit(make_update_config(config.to_dict()))

    def down_node(self, name: str, keep: str | None = None) -> None:
        """Every consumer of node `name` (of its every incarnation but `keep`) is gone: their
        deliveries return to the queue."""
        owners = sorted({c.owner for c in self.machine.consumers.values()
                         if c.owner.rsplit("/", 1)[0] == name and c.owner != keep})
        for owner in owners:
            self.down(owner)

    def down(self, owner: str) -> Pending:
        """Every consumer of `owner` (a node that went away) is gone: its deliveries return."""
        return self._submit(make_down(owner))

    def delete(self) -> None:
        self.deleted = True
        for p in self.waiting.values():
            p.fail(AMQPError(404, f"queue '{self.name}' in vhost '{self.vhost}' was deleted"))
        self.waiting.clear()

    # -- proposing -------------------------------------------------------------------------
    def _submit(self, cmd: Any, extra: list | None = None, ts_ms: float | None = None
                ) -> Pending:
        self._next_ref += 1
        ref = self._next_ref
        p = Pending()
        self.waiting[ref] = p
        ts = int(self.clock() if ts_ms is None else ts_ms)
        # the lowest ref still waiting: refs are consecutive, so it only moves up (amortised
        # O(1) on this per-message path, where min() over the window would not be)
        low = self._low_ref
        while low < ref and low not in self.waiting:
            low += 1
        self._low_ref = low
        data = msgpack.packb([self.origin, ref, ts, list(cmd), extra, low], use_bin_type=True)
        sent = self.propose(data, lambda: ref in self.waiting)
        sent.on_done(lambda s: s.error is None or self._refused(ref, s.error))
        return p

    def _refused(self, ref: int, error: BaseException) -> None:
        p = self.waiting.pop(ref, None)
        if p is not None:
            p.fail(error)

    # -- the replicated state machine ---------------------------------------------------------
    def apply(self, index: int, data: bytes) -> Any:
        origin, ref, ts, cmd, extra, *rest = msgpack.unpackb(data, raw=False)
        if not self.applied.first(origin, ref, rest[0] if rest else None):
            return None  # a copy proposed again after a change of leader: applied already
        if cmd[0] == "enqueue" and extra is not None:
            self.bodies[index] = extra
            self._body_order.append(index)
            self._body_bytes += len(extra[2])
            self._header_bytes += len(extra[1])
        reply, effects = self.machine.apply(Meta(index, ts), cmd)
        if origin == self.origin:
            p = self.waiting.pop(ref, None)
            if p is not None:
                self._answer(p, cmd[0], reply)
        for effect in effects:
            kind = effect[0]
            if kind == "deliver":
                self._deliver(effect[1], effect[2])
            elif kind == "dead_letter":
                self._dead_letter(effect[1], effect[2])
            elif kind == "dead_letter_pending":
                self._forward_dead(effect[1], effect[2])
            elif kind == "queue_expired":
                self._expired()
            elif kind == "release_cursor":
                cursor = effect[1]
                order, bodies = self._body_order, self.bodies
                while order and order[0] < cursor:
                    gone = bodies.pop(order.popleft(), None)
                    if gone is not None:
                        self._body_bytes -= len(gone[2])
                        self._header_bytes -= len(gone[1])
            elif kind == "consumer_cancelled":
                consumer = self.local.get(effect[1])
                if consumer is not None:
                    self._forget(consumer)
                    self.on_cancelled(consumer)
        return reply

    @staticmethod
    def _answer(p: Pending, op: str, reply: Any) -> None:
        word = reply[0] if reply else None
        if word == "error":
            code, text = reply[1], reply[2]
            if code == ACCESS_REFUSED and text == "in exclusive use":
                p.fail(AMQPError(ACCESS_REFUSED, "in exclusive use"))
            else:
                p.fail(AMQPError(code if isinstance(code, int) else PRECONDITION_FAILED,
                                 str(text)))
        elif op == "enqueue":
            p.resolve(word in ("enqueued", "duplicate"))
        elif op == "purge":
            p.resolve(reply[1])
        elif op == "dequeue":
            p.resolve(reply)
        else:
            p.resolve(reply)

    def _message(self, raft_index: int, delivery_count: int | None = None) -> Message | None:
        """The message at `raft_index`, with an x-delivery-count header when a count is given
        (the stored header, as published, is never changed)."""
        stored = self.bodies.get(raft_index)
        if stored is None:
            return None
        pair, header, body, published_ms = stored
        exchange, routing_key, ex_ss, rk_ss = names(pair)
        msg = Message(exchange, routing_key, ex_ss, rk_ss, header, body)
        if delivery_count is not None:
            props = msg.properties
            props.headers = {**(props.headers or {}), "x-delivery-count": delivery_count}
            msg = Message(exchange, routing_key, ex_ss, rk_ss,
                          encode_header_payload(msg.size, props), body)
        msg.published_ms = published_ms
        return msg

    def _deliver(self, cid: str, batch: list) -> None:
        consumer = self.local.get(cid)
        if consumer is None:
            if cid.startswith(self.origin + "#"):
                # ours, but gone (cancelled, its channel closed) before this delivery was
                # applied: the messages go back rather than stay checked out to nobody
                self._submit(make_return(cid, [entry[0] for entry in batch]))
            return  # else a consumer on another node: its replica delivers
        ahead = self._ahead.get(cid)
        if ahead is not None:
            held = ahead[2]
            room = ahead[0] - ahead[1]
            if held or room < len(batch):  # in order: behind those held back already
                held.extend(batch)
                batch = [held.popleft() for _ in range(min(room, len(held)))]
            ahead[1] += len(batch)
        self._hand(consumer, cid, batch)

    def _hand(self, consumer: Consumer, cid: str, batch: list) -> None:
        """Deliver `batch` to the consumer's client."""
        channel = consumer.channel
        # a consumer sees the count once a delivery failed (RabbitMQ 3.10); a classic queue
        # replicated by a policy, only under a delivery limit (as an unreplicated one)
        counted = self.is_quorum or self.machine.config.delivery_limit is not None
        for msg_id, ref, redelivered, count in batch:
            msg = self._message(ref[0], count if counted and count else None)
            if msg is None:
                continue
            self.delivered += 1
            channel.deliver(consumer, self, (msg_id, msg, bool(redelivered), cid))

    def _dead_letter(self, reason: str, refs: list) -> None:
        if not self.is_leader():
            return
        messages = [m for m in (self._message(ref[0]) for ref in refs) if m is not None]
        if messages:
            self.on_dead(self, messages, reason)

    def _forward_dead(self, reason: str, refs: list) -> None:
        """At least once: republish the held dead letters not already on their way; each
        leaves the queue once every copy is confirmed. One that went nowhere, or whose copies
        were not all confirmed, stays held and is named again by a later tick."""
        if not self.is_leader() or self.deleted:
            return
        indexes: list[int] = []
        messages: list[Message] = []
        for ref in refs:
            msg = None if ref[0] in self._forwarding else self._message(ref[0])
            if msg is not None:
                indexes.append(ref[0])
                messages.append(msg)
        if not messages:
            return
        outcomes = self.on_dead(self, messages, reason)
        if not isinstance(outcomes, list):
            return  # a hook that cannot tell: the messages stay held
        # copies confirmed at once (classic targets, nothing to fsync) settle in one command
        self._settled_now = []
        for index, waits in zip(indexes, outcomes, strict=False):
            if waits is not None:
                self._forwarding.add(index)
                when_all_true(waits, partial(self._forwarded, index))
        settled, self._settled_now = self._settled_now, None
        if settled:
            self._submit(make_dead_letter_settle(settled))

    def _forwarded(self, index: int, confirmed: bool) -> None:
        self._forwarding.discard(index)
        if not confirmed or self.deleted or index not in self.machine.discards:
            return
        if self._settled_now is not None:
            self._settled_now.append(index)
        else:
            self._submit(make_dead_letter_settle([index]))

    def _expired(self) -> None:
        """x-expires ran out: the leader's replica asks for the queue's deletion."""
        if not self.is_leader() or self.deleted:
            return
        delete = self.on_expired
        if delete is None:
            delete = getattr(getattr(self.on_dead, "__self__", None), "delete_queue", None)
        if delete is not None:
            delete(self)

    # -- snapshots ------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        live = set(self.machine.live_indexes())
        return msgpack.packb([self.machine.snapshot(),
                              [[i, b] for i, b in self.bodies.items() if i in live],
                              self.applied.snapshot()],
                             use_bin_type=True)

    def restore(self, index: int, data: bytes) -> None:  # noqa: ARG002
        state, bodies, *rest = msgpack.unpackb(data, raw=False, strict_map_key=False)
        self.applied = Applied.from_snapshot(rest[0] if rest else [])
        # a snapshot older than a setting (x-expires, dead-lettering in the config) keeps the
        # value this replica was built with, from the queue's arguments and policy
        state["config"] = {**self.machine.config.to_dict(), **state["config"]}
        self.machine = QuorumMachine.from_snapshot(state)
        self.bodies = {i: b for i, b in sorted(bodies, key=lambda pair: pair[0])}
        self._body_order = deque(self.bodies)
        self._body_bytes = sum(len(b[2]) for b in self.bodies.values())
        self._header_bytes = sum(len(b[1]) for b in self.bodies.values())


def _held_by(consumer: Consumer, queue: QuorumQueue) -> list[int]:
    """The msg_ids of `queue` that the consumer's channel holds: unacknowledged, or settled
    inside a transaction not yet committed (a rollback gives them back)."""
    channel = consumer.channel
    held = list(channel.unacked.values())
    for op in channel.tx_ops:
        if op[0] == "settle":
            held += [v for _, v in op[1]]
    return sorted(entry[0] for q, entry, c in held if c is consumer and q is queue)


def _by_consumer(entries: list[tuple]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for entry in entries:
        out.setdefault(entry[3], []).append(entry[0])
    return out


def _priority(message: Message) -> int:
    if not message.flags & FLAG_PRIORITY:
        return 0
    value = message.properties.priority
    return value if isinstance(value, int) else 0
