"""The home node's side of forwarding: its classic queues used from other nodes; sans I/O.

Theory of operation. The items other nodes send about this node's queues (see
`core/remote.py` for the protocol) are carried out here on the live `ClassicQueue`, as a
local channel would: a forwarded publish is routed to the named queues (checked by id, so a
queue deleted and declared again is not mistaken for the old one), journalled once when
persistent and durable, and confirmed after the fsync; a remote consumer is a
`ProxyConsumer` on the queue, so round-robin, consumer priorities, exclusive and
single-active consumers treat it as any other. It may take a message while it has credit
(granted by its node as its client acks) and while the link to its node is writable.

What a node holds of a queue here is a `Session` (one per consumer, one per node for
basic.get): the entries it was sent and has not settled, by seq. Settles name those seqs.
When the node's link drops (or the node says `forget`), its consumers are removed and what
its sessions held is requeued, marked redelivered (RabbitMQ's behaviour when a channel's
node goes down); the node is told with `cancelled` when it is back, in case it still thinks
those consumers exist (a link that dropped in one direction only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..amqp import codec
from ..amqp.constants import ACCESS_REFUSED, INTERNAL_ERROR, NOT_FOUND, PRECONDITION_FAILED
from ..amqp.errors import AMQPError
from .consumer import Consumer
from .message import Message
from .pending import Pending, when_all_true
from .remote import ACK, REJECT, REQUEUE, Outbox

if TYPE_CHECKING:
    from ..queues.classic import ClassicQueue
    from .node import Node



# the queue types other nodes may use through this one: a classic queue homed here, and a
# replicated queue (its type_name is "quorum") of which this node holds a replica
_SERVED = frozenset(("classic", "quorum"))


class Session:
    __slots__ = ("peer", "cid", "queue", "consumer", "proxy", "out")

    def __init__(self, peer: str, cid: str, queue: ClassicQueue) -> None:
        self.peer = peer
        self.cid = cid
        self.queue = queue
        self.consumer: ProxyConsumer | None = None  # while it consumes
        self.proxy: ProxyConsumer | None = None  # the consumer it had, even once cancelled
        self.out: dict[int, tuple] = {}  # seq -> entry sent and not settled


class ProxyConsumer(Consumer):
    """A consumer on another node, as the queue sees it."""

    __slots__ = ("credit", "session")
    credit: int  # deliveries its node still takes
    session: Session

    def can_take(self) -> bool:
        return self.credit > 0 and self.channel.deliverable


class PeerConnection:
    """What listings of this node's queues show for the connections of another node."""

    peer = None
    user = ""
    capabilities: dict = {}

    def __init__(self, peer: str) -> None:
        self.id = f"{peer}/remote"
        self.name = f"consumers on node {peer}"


class ProxyChannel:
    """The channels of one other node, as far as a queue here needs to know them."""

    state = "proxy"  # never "open": the node writes nothing to it (see Node._queue_gone)
    number = 0
    global_prefetch = 0  # applied by the consumer's node, through credit
    unacked_count = 0

    def __init__(self, home: Home, peer: str) -> None:
        self.home = home
        self.peer = peer
        self.conn = PeerConnection(peer)
        self.consumers: dict[str, ProxyConsumer] = {}  # by consumer id ("tag")

    @property
    def deliverable(self) -> bool:
        return self.home.can_send(self.peer)

    @property
    def unacked(self) -> dict:
        """What the node's clients hold, as a channel's `unacked` (a replicated queue's
        cancel leaves these with the consumer; it returns the rest)."""
        return {(s.cid, seq): (s.queue, entry, s.proxy)
                for s in self.home.sessions.get(self.peer, {}).values()
                for seq, entry in s.out.items()}

    tx_ops: tuple = ()  # transactions are the consumer's node's business

    def deliver(self, consumer: ProxyConsumer, queue: ClassicQueue, entry: tuple) -> None:
        self.home.deliver(self.peer, consumer, queue, entry)


class Home:
    def __init__(self, node: Node, outbox: Outbox, writable: Callable[[str], bool],
                 on_full: Callable[[str], None]) -> None:
        self.node = node
        self.outbox = outbox
        self.writable = writable  # whether the link to a peer takes more now
        self.on_full = on_full  # the shell calls `resume(peer)` once it drained
        self.sessions: dict[str, dict[str, Session]] = {}  # peer -> cid -> session
        self.channels: dict[str, ProxyChannel] = {}
        self.dropped: dict[str, list[str]] = {}  # peer -> consumer ids to report as cancelled
        self._sent_stats: dict[str, dict[str, list]] = {}
        self._ok: list[int] = []
        self._refused: list[int] = []
        self._sync = False

    # -- dispatching items --------------------------------------------------------------------
    def handle(self, peer: str, item: list) -> None:
        _HANDLERS[item[0]](self, peer, item)

    def end_batch(self, peer: str) -> None:
        """Confirm the batch's publishes: after the fsync if one was journalled."""
        if not self._ok and not self._refused:
            return
        conf = ["conf", self._ok, self._refused]
        self._ok, self._refused = [], []
        if self._sync:
            self._sync = False
            self.node.journal.after_sync(lambda: self.outbox.post(peer, conf))
        else:
            self.outbox.post(peer, conf)

    def _reply(self, peer: str, ref: int, value: Any) -> None:
        self.outbox.post(peer, ["reply", ref, True, value])

    def _refuse(self, peer: str, ref: int, error: BaseException) -> None:
        if not isinstance(error, AMQPError):  # a failure of the queue itself, not a refusal
            error = AMQPError(INTERNAL_ERROR, str(error))
        self.outbox.post(peer, ["reply", ref, False, [error.reply_code, error.text]])

    def _queue(self, target: list) -> ClassicQueue | None:
        vhost, name, qid = target
        q = self.node.live_queue(vhost, name)
        if q is None or q.type_name not in _SERVED or q.record.id != qid or q.deleted:
            return None
        return q

    @staticmethod
    def _missing(target: list) -> AMQPError:
        return AMQPError(NOT_FOUND, f"no queue '{target[1]}' in vhost '{target[0]}'")

    def _session(self, peer: str, cid: str, q: ClassicQueue) -> Session:
        sessions = self.sessions.setdefault(peer, {})
        s = sessions.get(cid)
        if s is None or s.queue is not q:
            s = sessions[cid] = Session(peer, cid, q)
        return s

    # -- publishing ---------------------------------------------------------------------------
    def _pub(self, peer: str, item: list) -> None:
        _, ref, targets, pair, header, body, published_ms, ttl_ms = item
        queues = [q for q in map(self._queue, targets) if q is not None]
        exchange, routing_key, ex_ss, rk_ss = codec.names(pair)
        msg = Message(exchange, routing_key, ex_ss, rk_ss, header, body)
        msg.published_ms = published_ms
        msg.ttl_ms = ttl_ms
        refused, needs_sync, waits, _taken = self.node.enqueue(msg, queues)
        if needs_sync:
            self._sync = True
        if refused or not waits:
            (self._refused if refused else self._ok).append(ref)
            return
        # a replicated queue's copy is confirmed once committed (each wait resolves True)
        when_all_true(waits, lambda ok: self.outbox.post(
            peer, ["conf", [ref], []] if ok else ["conf", [], [ref]]))

    # -- consumers ----------------------------------------------------------------------------
    def _consume(self, peer: str, item: list) -> None:
        _, ref, target, cid, exclusive, priority, no_ack, credit = item
        q = self._queue(target)
        if q is None:
            self._refuse(peer, ref, self._missing(target))
            return
        if q.consumers and (exclusive or any(c.exclusive for c in q.consumers)):
            self._refuse(peer, ref, AMQPError(
                ACCESS_REFUSED, f"queue '{q.name}' in vhost '{q.vhost}' in exclusive use"))
            return
        ch = self.channels.get(peer)
        if ch is None:
            ch = self.channels[peer] = ProxyChannel(self, peer)
        consumer = ProxyConsumer(ch, cid, b"", q, bool(no_ack),  # type: ignore[arg-type]
                                 bool(exclusive), 0, {"x-priority": priority} if priority else {})
        consumer.credit = credit
        s = self._session(peer, cid, q)
        s.consumer = s.proxy = consumer
        consumer.session = s
        ch.consumers[cid] = consumer
        q.last_used_ms = self.node.now_ms
        if q.type_name == "classic":
            self._reply(peer, ref, None)  # before the first delivery
            q.add_consumer(consumer)
            return
        # A replicated queue's machine enforces the prefetch itself: the consumer may hold
        # what its node grants at first (its prefetch, or a window without one); the answer
        # goes once the checkout is committed, before any delivery it causes is applied.
        consumer.prefetch = credit

        def added(p: Pending) -> None:
            if p.error is None:
                self._reply(peer, ref, None)
                return
            self._drop(peer, cid)
            self._refuse(peer, ref, p.error)

        try:
            q.add_consumer(consumer).on_done(added)
        except AMQPError as e:
            self._drop(peer, cid)
            self._refuse(peer, ref, e)

    def _credit(self, peer: str, item: list) -> None:
        _, cid, n = item
        s = self.sessions.get(peer, {}).get(cid)
        if s is not None and s.consumer is not None:
            s.consumer.credit += n
            if not s.queue.deleted:
                s.queue.dispatch()

    def deliver(self, peer: str, consumer: ProxyConsumer, queue: ClassicQueue,
                entry: tuple) -> None:
        consumer.credit -= 1
        if queue.counts_deliveries:
            queue.unacked += 1
        seq, msg, redelivered = entry[0], entry[1], entry[2]
        if consumer.no_ack:
            queue.settle([entry])
        else:
            consumer.session.out[seq] = entry
        self.outbox.post(peer, ["dlv", consumer.tag, seq, redelivered,
                                msg.exchange_ss + msg.routing_key_ss, msg.header, msg.body],
                         msg.size)

    def can_send(self, peer: str) -> bool:
        if self.writable(peer):
            return True
        self.on_full(peer)
        return False

    def resume(self, peer: str) -> None:
        """The link to `peer` drained: its consumers may take messages again."""
        ch = self.channels.get(peer)
        if ch is not None:
            for q in {c.queue for c in ch.consumers.values()}:
                if not q.deleted:
                    q.dispatch()

    def _settle(self, peer: str, item: list) -> None:
        _, cid, op, seqs = item
        sessions = self.sessions.get(peer, {})
        s = sessions.get(cid)
        if s is None:
            return  # already requeued (its node was lost meanwhile) or its queue is gone
        out = s.out
        entries = [e for e in (out.pop(seq, None) for seq in seqs) if e is not None]
        if entries:
            q = s.queue
            if op == ACK:
                q.settle(entries)
            elif op == REJECT:
                q.settle(entries, "rejected")
            elif op == REQUEUE:
                q.requeue(entries)
        if s.consumer is None and not out:
            del sessions[cid]

    def _cancel(self, peer: str, item: list) -> None:
        _, ref, cid = item
        sessions = self.sessions.get(peer, {})
        s = sessions.get(cid)
        consumer = s.consumer if s is not None else None
        if s is None or consumer is None:
            self._reply(peer, ref, None)
            return
        s.consumer = None
        ch = self.channels.get(peer)
        if ch is not None:
            ch.consumers.pop(cid, None)
        if not s.out:
            del sessions[cid]
        gone = self.node.remove_consumer(consumer)  # an auto-delete queue may go with it
        if gone is None:
            self._reply(peer, ref, None)
        else:
            gone.on_done(lambda _: self._reply(peer, ref, None))

    def _forget(self, peer: str, item: list) -> None:
        for cid in item[1]:
            self._drop(peer, cid)

    def _drop(self, peer: str, cid: str) -> bool:
        """The session is over: its consumer leaves the queue, its entries go back."""
        s = self.sessions.get(peer, {}).pop(cid, None)
        if s is None:
            return False
        had_consumer = s.consumer is not None
        if s.consumer is not None:
            ch = self.channels.get(peer)
            if ch is not None:
                ch.consumers.pop(cid, None)
            self.node.remove_consumer(s.consumer)
            s.consumer = None
        if s.out:
            entries = list(s.out.values())
            s.out.clear()
            s.queue.requeue(entries)
        return had_consumer

    # -- requests -----------------------------------------------------------------------------
    def _get(self, peer: str, item: list) -> None:
        _, ref, target, cid = item
        q = self._queue(target)
        if q is None:
            self._refuse(peer, ref, self._missing(target))
            return
        q.last_used_ms = self.node.now_ms
        if q.type_name == "classic":
            self._got(peer, ref, cid, q, q.take())
            return

        def taken(p: Pending) -> None:  # a replicated queue's dequeue, once committed
            if p.error is None:
                self._got(peer, ref, cid, q, p.value)
            else:
                self._refuse(peer, ref, p.error)

        q.take().on_done(taken)

    def _got(self, peer: str, ref: int, cid: str, q: ClassicQueue, entry: tuple | None) -> None:
        if entry is None:
            self._reply(peer, ref, [None, q.message_count])
            return
        if q.counts_deliveries:
            q.unacked += 1
        self._session(peer, cid, q).out[entry[0]] = entry
        msg: Message = entry[1]
        self._reply(peer, ref, [entry[0], entry[2], msg.exchange_ss + msg.routing_key_ss,
                                msg.header, msg.body, q.message_count])

    def _count(self, peer: str, item: list) -> None:
        _, ref, target = item
        q = self._queue(target)
        if q is None:
            self._refuse(peer, ref, self._missing(target))
            return
        q.last_used_ms = self.node.now_ms
        self._reply(peer, ref, [q.message_count, len(q.consumers)])

    def _purge(self, peer: str, item: list) -> None:
        _, ref, target = item
        q = self._queue(target)
        if q is None:
            self._refuse(peer, ref, self._missing(target))
            return
        purged = q.purge()
        if not isinstance(purged, Pending):
            self._reply(peer, ref, purged)
            return

        def done(p: Pending) -> None:  # a replicated queue's purge, once committed
            if p.error is None:
                reply = p.value
                self._reply(peer, ref, reply[1] if isinstance(reply, list | tuple) else reply)
            else:
                self._refuse(peer, ref, p.error)

        purged.on_done(done)

    def _delete(self, peer: str, item: list) -> None:
        _, ref, target, if_unused, if_empty = item
        q = self._queue(target)
        if q is None:
            self._reply(peer, ref, 0)  # gone already: delete-ok, as for a missing queue
            return
        if if_unused and q.consumers:
            self._refuse(peer, ref, AMQPError(
                PRECONDITION_FAILED, f"queue '{q.name}' in vhost '{q.vhost}' in use"))
            return
        if if_empty and q.message_count:
            self._refuse(peer, ref, AMQPError(
                PRECONDITION_FAILED, f"queue '{q.name}' in vhost '{q.vhost}' not empty"))
            return
        count = q.message_count

        def deleted(p: Pending) -> None:
            if p.error is None:
                self._reply(peer, ref, count)
            else:
                self._refuse(peer, ref, p.error)

        self.node.delete_queue(q).on_done(deleted)

    # -- links and queues -----------------------------------------------------------------------
    def peer_down(self, peer: str) -> None:
        """The node is unreachable: its consumers leave, what they held is requeued."""
        for cid in list(self.sessions.get(peer, {})):
            if self._drop(peer, cid):
                self.dropped.setdefault(peer, []).append(cid)
        self.sessions.pop(peer, None)
        self.channels.pop(peer, None)
        self._sent_stats.pop(peer, None)

    def peer_up(self, peer: str) -> None:
        dropped = self.dropped.pop(peer, None)
        if dropped:
            self.outbox.post(peer, ["cancelled", dropped])

    def queue_gone(self, q: Any) -> None:
        """A queue of this node was deleted: what other nodes held of it is gone with it
        (they apply the deletion themselves and cancel their consumers)."""
        for sessions in self.sessions.values():
            for cid in [cid for cid, s in sessions.items() if s.queue is q]:
                s = sessions.pop(cid)
                ch = self.channels.get(s.peer)
                if ch is not None:
                    ch.consumers.pop(cid, None)

    def stats(self, peers: list[str]) -> None:
        """Post each peer the figures of this node's classic queues that changed since it
        was last told (all of them after its link came up)."""
        current: dict[str, list] = {}
        for vhost, queues in self.node.queues.items():
            for q in queues.values():
                if q.type_name in _SERVED:
                    current[q.record.id] = [vhost, q.name, q.record.id, q.message_count,
                                            q.unacked, len(q.consumers), q.ready_bytes,
                                            q.published, q.delivered, q.acked]
        for peer in peers:
            sent = self._sent_stats.setdefault(peer, {})
            rows = [row for qid, row in current.items() if sent.get(qid) != row]
            for qid in [qid for qid in sent if qid not in current]:
                del sent[qid]
            if rows:
                for row in rows:
                    sent[row[2]] = row
                self.outbox.post(peer, ["stats", rows], 64 * len(rows))


# the items a home handles; every other kind is for core/remote.py
_HANDLERS: dict[str, Callable[[Home, str, list], None]] = {
    "pub": Home._pub, "consume": Home._consume, "credit": Home._credit,
    "settle": Home._settle, "cancel": Home._cancel, "get": Home._get, "count": Home._count,
    "purge": Home._purge, "delete": Home._delete, "forget": Home._forget,
}
HOME_KINDS = frozenset(_HANDLERS)
