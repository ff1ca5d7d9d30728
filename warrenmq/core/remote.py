"""Queues served by another node, as this node uses them; sans I/O.

Theory of operation. A classic queue lives on one node, its home (`QueueRecord.node`). Every
other node keeps a `RemoteQueue` for it in `Node.queues` while the home is reachable, so
routing, channels and listings find it under its name like any queue. While the home is
unreachable the proxy is taken out ("detached"): the queue is then unroutable and using it is
refused as RabbitMQ 3.10 refuses it (404 "home node '...' of durable queue '...' is down or
inaccessible", see `home_down_error`); it is put back when the home returns.

A replicated queue (quorum, or classic under an ha-* policy) with no replica on this node is
used the same way, its home being one of its members (`Remotes.home_for`): that member's
replica takes the calls as it takes its local channels' (its proposals reach the group's
leader wherever it is).

Failover of a replicated queue's home. When the link to the member serving it drops and
another member is reachable, the proxy is *re-homed* there and stays in routing; the client
is told nothing, as RabbitMQ tells a quorum queue's consumer nothing when a member dies:
  - each consumer is registered again at the new home under a new consumer id, same tag on
    the client's channel, same prefetch; one that consumed with `x-cancel-on-ha-failover:
    true` on a classic queue under an ha-* policy gets basic.cancel instead (RabbitMQ's
    opt-in for mirrored queues; it ignores it on quorum queues, and so do we). A refusal of
    the new registration ("in exclusive use" while the group has not yet let go of the dead
    member's consumer) is retried once a tick for CALL_TICKS ticks, then the consumer is
    cancelled; a consume not yet answered by the dead home is simply sent again;
  - what the dead member had checked out to this node's consumers is returned to the queue
    by the replicated state itself (the leader's `down` for that node) and comes again,
    redelivered, through the new registration: at least once;
  - delivery tags the client holds from the dead home stay in its channel's unacked map and
    count against its prefetch until it settles them, as in RabbitMQ's channel; settling
    one is no error, and is dropped here: a settlement names the consumer id it came with,
    and ids issued before the last change of home (`RemoteQueue.fresh_after`; ids only grow)
    never reach the new home, where the same sequence number would name another message.
    The new registration may be sent up to the whole prefetch: deliveries beyond what the
    client may take while it still holds old tags wait here (`held`) until it acks them;
  - deliveries held here from the dead home are dropped (returned by the group), save
    no_ack ones, which the home had already settled and still reach the client;
  - calls waiting for the dead home fail as before: an in-flight publish is nacked, a
    basic.get refused; the next ones go to the new home.
With no other member reachable the proxy is detached as a classic queue's is. A classic
queue's home dying always detaches it (consumers get basic.cancel), as in RabbitMQ 3.10.

The channel makes of a RemoteQueue the calls it makes of any queue (enqueue, add/remove
consumer, settle, requeue, take, purge, dispatch). Each becomes an *item* in the home's
`Outbox`; the shell sends a peer's items as one link message per loop turn, so everything
one node says to another keeps its order (a nack, then a basic.get; the last deliveries for a
consumer, then its cancel's answer). The home's side is `core/home.py`. The items:
  pub -> conf       a message for one or more queues of the home, confirmed once enqueued
                    (after the home's fsync when it journalled it) or refused by a full queue
  consume -> reply  the home adds a proxy consumer, answers, then delivers (`dlv`) while the
                    consumer has credit
  credit            more deliveries this node can take for one consumer
  settle            ack / reject / requeue, by the home's sequence numbers (under the
                    consumer id the deliveries came with)
  cancel -> reply   answered after the consumer's last delivery went out; deliveries that
                    reach this node after its consumer is gone are sent back (requeue)
  get, count, purge, delete -> reply
  forget            consumers (and basic.get sessions) this node dropped while the home was
                    unreachable: the home requeues what they held
Replies name the caller's `ref`. Every call's Pending fails when the home's link drops (a
publish waiting for its confirm is then nacked, as RabbitMQ rejects the in-flight messages of
a queue whose node goes down) or when no answer came within CALL_TICKS shell ticks.

Credit is prefetch enforced at the home. For each consumer this node grants credit so that
credit + deliveries held here + unacknowledged <= prefetch_count: the home never sends more
than the client may have. A channel-wide (global) prefetch is applied the same way against
the channel's count; since several consumers may hold credit at once, a delivery that finds
the channel full waits here (`held`) until the client acks. Without a limit (or with no_ack)
credit is a window of WINDOW deliveries in flight, refilled as they reach the client and not
while its socket is over the high-water mark (RabbitMQ's credit flow).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from ..amqp import codec
from ..amqp.constants import ACCESS_REFUSED, INTERNAL_ERROR, NOT_FOUND
from ..amqp.errors import AMQPError
from ..meta.policies import effective_policy
from .message import Message
from .pending import Pending

if TYPE_CHECKING:
    from ..meta.records import QueueRecord
    from .consumer import Consumer
    from .node import Node

KIND = "fwd"  # the link message kind that carries a batch of items
ACK, REJECT, REQUEUE = 0, 1, 2  # settle operations
WINDOW = 256  # deliveries in flight for a consumer that no prefetch limits
BATCH_BYTES = 1 << 20  # a peer's items are cut into link messages of about this size
CALL_TICKS = 15  # shell ticks (seconds) a call waits for its answer
ITEM_OVERHEAD_BYTES = 32
CANCEL_ON_FAILOVER = "x-cancel-on-ha-failover"  # a consume argument: cancel, do not re-home


def home_down_error(record: QueueRecord) -> AMQPError:
    """RabbitMQ 3.10's refusal for a queue whose node is down (rabbit_amqqueue:absent)."""
    kind = "durable queue" if record.durable else "queue"
    return AMQPError(NOT_FOUND, f"home node '{record.node}' of {kind} '{record.name}' in "
                     f"vhost '{record.vhost}' is down or inaccessible")


def cid_number(cid: str) -> int:
    """The counter part of a consumer id `TOKEN.N` (ids of one incarnation only grow)."""
    return int(cid.rpartition(".")[2])


def is_remote_classic(record: QueueRecord, me: str) -> bool:
    """A classic queue (not replicated) that lives on another node."""
    return (record.type == "classic" and not record.members and bool(record.node)
            and record.node != me)


def is_remote(record: QueueRecord, me: str) -> bool:
    """A queue used from this node through another: a classic queue of another node, or a
    replicated queue with no replica here (its members serve it, see `Remotes.home_for`)."""
    if record.members:
        return me not in record.members
    return is_remote_classic(record, me)


class Outbox:
    """Items for each peer, in order, cut into batches of about BATCH_BYTES. `wake(peer)` is
    called when a peer's outbox stops being empty (the shell then flushes it this turn)."""

    def __init__(self, wake: Callable[[str], None]) -> None:
        self.wake = wake
        self.batches: dict[str, list[list]] = {}
        self._bytes: dict[str, int] = {}

    def post(self, peer: str, item: list, size: int = 0) -> None:
        batches = self.batches.get(peer)
        if batches is None:
            batches = self.batches[peer] = [[]]
            self._bytes[peer] = 0
            self.wake(peer)
        elif self._bytes[peer] + size > BATCH_BYTES and batches[-1]:
            batches.append([])
            self._bytes[peer] = 0
        batches[-1].append(item)
        self._bytes[peer] += size + ITEM_OVERHEAD_BYTES

    def last(self, peer: str) -> list | None:
        batches = self.batches.get(peer)
        return batches[-1][-1] if batches and batches[-1] else None

    def take(self, peer: str) -> list[list]:
        self._bytes.pop(peer, None)
        return self.batches.pop(peer, [])


class _Count:
    """Stands for a remote queue's ready messages where a length is asked for."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Call:
    __slots__ = ("pending", "queue", "tick", "convert")

    def __init__(self, pending: Pending, queue: RemoteQueue, tick: int,
                 convert: Callable[[Any], Any] | None) -> None:
        self.pending = pending
        self.queue = queue
        self.tick = tick
        self.convert = convert


class Sub:
    """One local consumer of a remote queue: its id at the home, credit, held deliveries."""

    __slots__ = ("cid", "consumer", "queue", "credit", "held", "confirmed", "consumed",
                 "retries")

    def __init__(self, cid: str, consumer: Consumer, queue: RemoteQueue) -> None:
        self.cid = cid  # a new one at each (re-)registration
        self.consumer = consumer
        self.queue = queue
        self.credit = 0  # deliveries the home may still send
        self.held: deque[tuple] = deque()  # arrived, waiting for room on the channel
        self.confirmed = False  # the client has its consume-ok
        self.consumed = Pending()  # resolved with the first home's answer (consume-ok)
        self.retries = 0  # refused re-registrations so far

    def limited(self) -> bool:
        c = self.consumer
        return not c.no_ack and bool(c.prefetch or c.channel.global_prefetch)

    def capacity(self) -> int:
        """What a replicated queue's home may hold checked out to this consumer: its prefetch
        (or a window without one). The group's machine enforces it as the consumer's
        prefetch; what the client may not take yet waits in `held`."""
        c = self.consumer
        room = WINDOW
        if self.limited():
            if c.prefetch:
                room = min(room, c.prefetch)
            if c.channel.global_prefetch:
                room = min(room, c.channel.global_prefetch)
        return room

    def want(self) -> int:
        """Credit to grant now so that the home may send what the client may take."""
        c = self.consumer
        ch = c.channel
        if not ch.deliverable:
            return 0
        inflight = self.credit + len(self.held)
        if not self.limited():
            return WINDOW - inflight
        room = WINDOW
        if c.prefetch:
            room = min(room, c.prefetch - c.unacked - inflight)
        if ch.global_prefetch:
            room = min(room, ch.global_prefetch - ch.unacked_count - inflight)
        return room

    def release(self) -> None:
        """Hand held deliveries to the client while it may take them."""
        c = self.consumer
        held = self.held
        while held and c.can_take():
            c.channel.deliver(c, self.queue, held.popleft())  # type: ignore[arg-type]

    def top_up(self, remotes: Remotes) -> None:
        want = self.want()
        # a window is refilled in halves; a prefetch limit at once (its client waits for it)
        if want > 0 and (self.limited() or want >= WINDOW // 2):
            self.credit += want
            remotes.outbox.post(self.queue.home, ["credit", self.cid, want])


class RemoteQueue:
    """A classic queue of another node: what the channel sees (the calls of a ClassicQueue),
    answered by the home. Counts are the home's, from its last answer or stats."""

    type_name = "remote"
    journalled = False  # the home journals
    deferred_consume = True  # consume-ok once the home took the consumer
    counts_deliveries = False  # the home counts its own

    def __init__(self, record: QueueRecord, remotes: Remotes) -> None:
        self.record = record
        self.name = record.name
        self.vhost = record.vhost
        self.durable = record.durable
        self.home = record.node
        self.remotes = remotes
        self.consumers: list[Consumer] = []  # this node's consumers of it
        self.subs: dict[Consumer, Sub] = {}
        self.attached = False  # in Node.queues (its home is reachable)
        self.deleted = False
        self.had_consumers = False  # auto-delete is the home's decision
        self.last_used_ms = 0.0
        self.overflow = "drop-head"
        self.dead_letter_exchange: str | None = None
        self.dead_letter_routing_key: str | None = None
        # the home's figures
        self.message_count = 0
        self.consumer_count = 0
        self.ready_bytes = 0
        self.published = self.delivered = self.acked = 0
        self._unacked = 0
        self._get_cid = ""  # this node's basic.get session at the home
        # consumer ids numbered up to this one were issued for a former home (or before the
        # home was lost): their settlements are dropped, never sent to the current home
        self.fresh_after = 0
        self._when_deleted: list[Callable[[], None]] = []

    # -- what the channel and the listings read --------------------------------------------
    @property
    def target(self) -> list:
        return [self.vhost, self.name, self.record.id]

    @property
    def ready(self) -> _Count:
        return _Count(self.message_count)

    @property
    def unacked(self) -> int:
        return self._unacked

    @unacked.setter
    def unacked(self, value: int) -> None:
        pass  # the channel's bookkeeping for local queues; the home counts its own

    @property
    def resident_bytes(self) -> int:
        return self.ready_bytes

    @property
    def consumer_timeout_ms(self) -> int | None:
        node = self.remotes.node
        values = [self.record.arguments.get("x-consumer-timeout")]
        vhost = node.meta.vhosts.get(self.vhost)
        if vhost is not None and vhost.policies:
            policy = effective_policy(node.meta, self.vhost, "queue", self.name)
            if policy is not None:
                values.append(policy.definition.get("consumer-timeout"))
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        return min(ints) if ints else None

    def rejects(self, message: Message) -> bool:  # noqa: ARG002 - the home decides
        return False

    def down_error(self) -> AMQPError:
        if self.record.members:
            return AMQPError(NOT_FOUND, f"node '{self.home}' serving replicated queue "
                             f"'{self.name}' in vhost '{self.vhost}' from this node is down or "
                             "inaccessible; another member serves it from now on")
        return home_down_error(self.record)

    # -- publishing ---------------------------------------------------------------------------
    def enqueue(self, message: Message) -> Pending:
        p = self.remotes.publish(self, message)
        message.refs -= 1  # the home holds its own copy
        if message.refs <= 0 and message.pinned:
            self.remotes.node.journal.unpin(message)
        return p

    # -- consumers ----------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> Pending:
        """The Pending resolves (consume-ok) once a home took the consumer; the one it was
        sent to may die meanwhile, then another is asked."""
        sub = Sub(self.remotes.new_cid(), consumer, self)
        self.subs[consumer] = sub
        self.remotes.subs[sub.cid] = sub
        self.consumers.append(consumer)
        self._register(sub)
        return sub.consumed

    def _register(self, sub: Sub) -> None:
        """Ask the current home to take the consumer under `sub.cid`."""
        consumer, cid, home = sub.consumer, sub.cid, self.home
        # a replicated queue's machine keeps the first grant as the consumer's prefetch for
        # good: it must be the whole window, never 0 (which the machine reads as no limit)
        sub.credit = sub.capacity() if self.record.members else max(0, sub.want())
        p = self.remotes.request(self, ["consume", 0, self.target, cid, consumer.exclusive,
                                        consumer.priority, consumer.no_ack, sub.credit])

        def answered(p: Pending) -> None:
            if sub.cid != cid:
                # registered again meanwhile: that answer counts; a home that took this
                # registration too lets go of it (else deliveries would go round to nobody)
                if p.error is None and self.remotes.connected(home):
                    self.remotes.outbox.post(home, ["forget", [cid]])
                return
            if p.error is None:
                sub.confirmed = True
                sub.retries = 0
                sub.consumed.resolve(None)
            elif not sub.confirmed:  # the channel still waits: the consume fails
                self._forget(consumer)
                sub.consumed.fail(p.error)
            elif self.subs.get(consumer) is not sub:
                return  # cancelled meanwhile (by the client, or its home was lost)
            elif (isinstance(p.error, AMQPError) and p.error.reply_code == ACCESS_REFUSED
                  and sub.retries < CALL_TICKS and self.attached):
                # the group still has the dead home's registration of an exclusive consumer
                # until its leader applies that node's `down`
                sub.retries += 1
                self.remotes.retry.append((sub, cid))
            else:
                self.cancelled(consumer)  # the new home refused it: the client is told

        p.on_done(answered)

    def _reregister(self, sub: Sub) -> None:
        """A failed-over consumer: a new id at the current home (see `rehome`)."""
        remotes = self.remotes
        remotes.subs.pop(sub.cid, None)
        sub.cid = remotes.new_cid()
        remotes.subs[sub.cid] = sub
        self._register(sub)

    def remove_consumer(self, consumer: Consumer) -> Pending | None:
        """The consumer is cancelled here; the Pending is the home's answer (after its last
        deliveries, and after an auto-delete it caused)."""
        sub = self._forget(consumer)
        if sub is None or not self.attached:
            return None
        self._return_held(sub)
        return self.remotes.request(self, ["cancel", 0, sub.cid])

    def _forget(self, consumer: Consumer) -> Sub | None:
        sub = self.subs.pop(consumer, None)
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        if sub is not None:
            self.remotes.subs.pop(sub.cid, None)
        return sub

    def _return_held(self, sub: Sub) -> None:
        held, sub.held = sub.held, deque()
        if not held:
            return
        consumer = sub.consumer
        if consumer.no_ack:
            # the home settled these when it sent them: they reach the client, before the
            # cancel-ok, as RabbitMQ's in-flight deliveries do
            if consumer.channel.state == "open":
                for entry in held:
                    consumer.channel.deliver(consumer, self, entry)  # type: ignore[arg-type]
            return
        self.remotes.outbox.post(self.home, ["settle", sub.cid, REQUEUE, [e[0] for e in held]])

    def cancelled(self, consumer: Consumer) -> None:
        """The home no longer has this consumer (link lost, the home forgot it): the client
        is told with basic.cancel, as RabbitMQ tells it when a queue's node goes down."""
        sub = self._forget(consumer)
        if sub is not None and self.attached:
            self._return_held(sub)
        ch = consumer.channel
        if ch.consumers.pop(consumer.tag, None) is not None and ch.state == "open":
            if ch.conn.capabilities.get("consumer_cancel_notify"):
                ch.send(codec.make(C.Basic.Cancel, consumer_tag=consumer.tag, nowait=True))

    def dispatch(self) -> None:
        """Room was freed on a channel (acks, qos, a writable socket): deliver what is held,
        then grant the home what may follow."""
        remotes = self.remotes
        for sub in list(self.subs.values()):
            if sub.held:
                sub.release()
            sub.top_up(remotes)

    # -- settling -----------------------------------------------------------------------------
    def settle(self, entries: list[tuple], dead_reason: str | None = None) -> None:
        self._settle(entries, ACK if dead_reason is None else REJECT)

    def requeue(self, entries: list[tuple], asked: bool | None = None) -> None:  # noqa: ARG002
        # the home is not told why: it returns them as after a live consumer's requeue
        self._settle(entries, REQUEUE)

    def _settle(self, entries: list[tuple], op: int) -> None:
        if not self.attached:
            return  # the home requeued them when this node lost it (or forgets them now)
        by_cid: dict[str, list[int]] = {}
        for entry in entries:
            cid = entry[3]
            if cid is not None:  # None: no_ack, settled by the home when it sent it
                by_cid.setdefault(cid, []).append(entry[0])
        post = self.remotes.outbox.post
        for cid, seqs in by_cid.items():
            # a delivery of a home this node lost: that home's group (or the home itself,
            # told to `forget`) returned it already; its seq means nothing to the new home
            if cid_number(cid) > self.fresh_after:
                post(self.home, ["settle", cid, op, seqs])

    # -- requests -----------------------------------------------------------------------------
    def take(self) -> Pending:
        """basic.get: the entry (seq, message, redelivered, session) or None, from the home."""
        if not self._get_cid:
            self._get_cid = self.remotes.new_cid()
        cid = self._get_cid
        return self.remotes.request(self, ["get", 0, self.target, cid],
                                    lambda value: self._got(value, cid))

    def _got(self, value: list, cid: str) -> tuple | None:
        if value[0] is None:
            self.message_count = value[1]
            return None
        seq, redelivered, pair, header, body, count = value
        self.message_count = count
        return (seq, _message(pair, header, body), bool(redelivered), cid)

    def purge(self) -> Pending:
        def purged(count: int) -> int:
            self.message_count = 0
            return count

        return self.remotes.request(self, ["purge", 0, self.target], purged)

    def fetch_counts(self) -> Pending:
        """(message_count, consumer_count) as the home counts them (queue.declare-ok); the
        asking renews the queue's x-expires there, as any declare does."""
        def counted(value: list) -> tuple[int, int]:
            self.message_count, self.consumer_count = value
            return value[0], value[1]

        return self.remotes.request(self, ["count", 0, self.target], counted)

    def delete_at_home(self, if_unused: bool, if_empty: bool) -> Pending:
        """queue.delete: the home checks if_unused / if_empty and deletes it; the Pending
        resolves to the message count once the deletion is applied here too (so a declare
        right after the delete-ok finds no queue)."""
        done = Pending()
        sent = self.remotes.request(self, ["delete", 0, self.target, if_unused, if_empty])

        def answered(p: Pending) -> None:
            if p.error is not None:
                done.fail(p.error)
            elif self.deleted:
                done.resolve(p.value)
            else:
                self._when_deleted.append(lambda: done.resolve(p.value))

        sent.on_done(answered)
        return done

    # -- life ---------------------------------------------------------------------------------
    def attach(self) -> None:
        node = self.remotes.node
        qs = node.queues.setdefault(self.vhost, {})
        if qs.get(self.name) is None:
            qs[self.name] = self  # type: ignore[assignment]  # any queue type lives there
            self.attached = True

    def detach(self) -> None:
        """The home is unreachable: out of routing; consumers told (basic.cancel)."""
        if self.attached:
            qs = self.remotes.node.queues.get(self.vhost, {})
            if qs.get(self.name) is self:
                del qs[self.name]
        self.attached = False
        self.fresh_after = self.remotes.last_cid()
        forgotten = self.remotes.forgotten.setdefault(self.home, [])
        if self._get_cid:
            forgotten.append(self._get_cid)
            self._get_cid = ""
        for consumer, sub in list(self.subs.items()):
            sub.held.clear()
            forgotten.append(sub.cid)
            if sub.confirmed:
                self.cancelled(consumer)
            else:
                self._forget(consumer)  # its consume call fails: the channel says why

    def rehome(self, home: str) -> None:
        """The member serving this replicated queue is lost and `home`, another member, is
        reachable: the proxy stays in routing and its consumers carry on through `home`
        (see the module docstring)."""
        old, self.home = self.home, home
        self.fresh_after = self.remotes.last_cid()
        forgotten = self.remotes.forgotten.setdefault(old, [])
        if self._get_cid:
            forgotten.append(self._get_cid)
            self._get_cid = ""
        for consumer, sub in list(self.subs.items()):
            forgotten.append(sub.cid)
            if not consumer.no_ack:
                sub.held.clear()  # the group returns them to the queue
            # RabbitMQ honours the opt-in for mirrored classic queues only (a quorum queue's
            # consumer is never told)
            if (sub.confirmed and self.record.type == "classic"
                    and consumer.arguments.get(CANCEL_ON_FAILOVER) is True):
                self.cancelled(consumer)
            else:
                self._reregister(sub)

    def delete(self) -> None:
        """The queue is gone from the metadata (Node._queue_gone cancels the consumers)."""
        self.deleted = True
        self.attached = False
        for sub in self.subs.values():
            self.remotes.subs.pop(sub.cid, None)
            sub.held.clear()
        self.subs.clear()
        if self.remotes.queues.get((self.vhost, self.name)) is self:
            del self.remotes.queues[(self.vhost, self.name)]
        waiting, self._when_deleted = self._when_deleted, []
        for fn in waiting:
            fn()

    def set_stats(self, row: list) -> None:
        (self.message_count, self._unacked, self.consumer_count, self.ready_bytes,
         self.published, self.delivered, self.acked) = row[3:10]


def _message(pair: bytes, header: bytes, body: bytes) -> Message:
    exchange, routing_key, ex_ss, rk_ss = codec.names(pair)
    return Message(exchange, routing_key, ex_ss, rk_ss, header, body)


class Remotes:
    """This node's side of forwarding: the RemoteQueues, their consumers, calls waiting for
    a home's answer, and the items homes send here (deliveries, confirms, replies, stats)."""

    def __init__(self, node: Node, outbox: Outbox, connected: Callable[[str], bool],
                 token: str) -> None:
        self.node = node
        self.outbox = outbox
        self.connected = connected  # whether a home's link is up
        self.token = token  # this incarnation: consumer ids never repeat across restarts
        self.queues: dict[tuple[str, str], RemoteQueue] = {}
        self.subs: dict[str, Sub] = {}
        self.calls: dict[str, dict[int, _Call]] = {}
        self.forgotten: dict[str, list[str]] = {}  # home -> ids to `forget` when it is back
        # re-registrations to send again at the next tick, unless registered again meanwhile
        self.retry: list[tuple[Sub, str]] = []
        self.ticks = 0
        self._next_ref = 0
        self._next_cid = 0
        self._last_pub: tuple[str, Message, list, Pending] | None = None

    def new_cid(self) -> str:
        self._next_cid += 1
        return f"{self.token}.{self._next_cid}"

    def last_cid(self) -> int:
        """The number of the last consumer id issued (see `cid_number`)."""
        return self._next_cid

    def request(self, q: RemoteQueue, item: list, convert: Callable[[Any], Any] | None = None,
                size: int = 0) -> Pending:
        """Post `item` (its ref, at index 1, is filled in) to q's home; the Pending gets the
        answer (through `convert`)."""
        self._next_ref += 1
        item[1] = self._next_ref
        p = Pending()
        self.calls.setdefault(q.home, {})[self._next_ref] = _Call(p, q, self.ticks, convert)
        self.outbox.post(q.home, item, size)
        return p

    def publish(self, q: RemoteQueue, msg: Message) -> Pending:
        """One `pub` item per message and home: a message routed to several queues of one
        home travels once (and is journalled once there)."""
        target = q.target
        last = self._last_pub
        if last is not None and last[1] is msg and last[0] == q.home \
                and self.outbox.last(q.home) is last[2]:
            last[2][2].append(target)
            return last[3]
        body = msg.body if msg.body is not None else self.node.journal.read_body(msg)
        item = ["pub", 0, [target], msg.exchange_ss + msg.routing_key_ss, msg.header, body,
                msg.published_ms, msg.ttl_ms]
        p = self.request(q, item, size=msg.size)
        self._last_pub = (q.home, msg, item, p)
        return p

    # -- the queues of other nodes ------------------------------------------------------------
    def home_for(self, record: QueueRecord, current: str = "") -> str:
        """The node that serves this node's use of the queue: a classic queue's own node; for
        a replicated queue, a member whose link is up (the current one while it stays up,
        else the declaring node if it is a member, else the first): its replica proposes to
        the group's leader wherever that is, so any member will do."""
        members = list(record.members)
        if not members:
            return record.node
        if current in members and self.connected(current):
            return current
        if record.node in members:
            members.remove(record.node)
            members.insert(0, record.node)
        return next((m for m in members if self.connected(m)), members[0])

    def declared(self, record: QueueRecord) -> None:
        """A queue served by another node was created: proxy it (usable while it is up)."""
        old = self.queues.get((record.vhost, record.name))
        remote = is_remote(record, self.node.name)
        if old is not None and remote and old.record.id == record.id:
            self._refresh(old, record)  # e.g. its members changed: consumers stay if they can
            return
        if old is not None:
            self._drop(old)
        if not remote:
            return
        q = RemoteQueue(record, self)
        q.home = self.home_for(record)
        self.queues[(record.vhost, record.name)] = q
        if self.connected(q.home):
            q.attach()

    def reconcile(self) -> None:
        """Make the proxies match the metadata and the homes' reachability (after a
        snapshot of the metadata, a link going up or down)."""
        me = self.node.name
        seen = set()
        for vhost in self.node.meta.vhosts.values():
            for record in vhost.queues.values():
                if not is_remote(record, me):
                    continue
                key = (vhost.name, record.name)
                seen.add(key)
                q = self.queues.get(key)
                if q is not None and q.record.id != record.id:
                    self._drop(q)
                    q = None
                if q is None:
                    self.declared(record)
                    continue
                self._refresh(q, record)
        for key in [k for k in self.queues if k not in seen]:
            self._drop(self.queues[key])

    def _refresh(self, q: RemoteQueue, record: QueueRecord) -> None:
        q.record = record
        home = self.home_for(record, q.home)
        if home != q.home:  # a replicated queue's member went away: another one serves
            q.detach()
            q.home = home
        up = self.connected(q.home)
        if up and not q.attached:
            q.attach()
        elif not up and q.attached:
            q.detach()

    def _drop(self, q: RemoteQueue) -> None:
        if q.attached:
            q.detach()
        q.delete()

    # -- links ----------------------------------------------------------------------------------
    def peer_down(self, peer: str) -> None:
        """A home is unreachable: a replicated queue it served moves to another reachable
        member, consumers and all; any other of its queues leaves routing and its consumers
        are cancelled. Every call waiting for it fails (a publish is nacked)."""
        self._last_pub = None
        for q in list(self.queues.values()):
            if q.home != peer:
                continue
            home = self.home_for(q.record) if q.record.members and q.attached else peer
            if home != peer and self.connected(home):
                q.rehome(home)
            else:
                q.detach()
        calls = self.calls.pop(peer, {})
        for call in calls.values():
            call.pending.fail(call.queue.down_error())
        self.reconcile()

    def peer_up(self, peer: str) -> None:
        forgotten = self.forgotten.pop(peer, None)
        if forgotten:
            self.outbox.post(peer, ["forget", forgotten])
        self.reconcile()

    def expire(self) -> None:
        """One shell tick: refused re-registrations are sent again; calls unanswered for
        CALL_TICKS ticks fail."""
        self.ticks += 1
        retry, self.retry = self.retry, []
        for sub, cid in retry:
            q = sub.queue
            if (sub.cid == cid and q.subs.get(sub.consumer) is sub and q.attached
                    and not q.deleted):
                q._reregister(sub)
        for peer, calls in list(self.calls.items()):
            late = [ref for ref, call in calls.items() if self.ticks - call.tick > CALL_TICKS]
            for ref in late:
                call = calls.pop(ref)
                call.pending.fail(AMQPError(
                    INTERNAL_ERROR, f"node {peer} did not answer for queue '{call.queue.name}' "
                    f"in vhost '{call.queue.vhost}' within {CALL_TICKS}s"))

    # -- items from homes -----------------------------------------------------------------------
    def handle(self, peer: str, item: list) -> None:
        kind = item[0]
        if kind == "dlv":
            self._delivered(peer, item)
        elif kind == "conf":
            calls = self.calls.get(peer, {})
            for ok, refs in ((True, item[1]), (False, item[2])):
                for ref in refs:
                    call = calls.pop(ref, None)
                    if call is not None:
                        call.pending.resolve(ok)
        elif kind == "reply":
            call = self.calls.get(peer, {}).pop(item[1], None)
            if call is None:
                return
            if item[2]:
                value = item[3]
                call.pending.resolve(call.convert(value) if call.convert else value)
            else:
                code, text = item[3]
                call.pending.fail(AMQPError(code, text))
        elif kind == "cancelled":
            for cid in item[1]:
                sub = self.subs.get(cid)
                if sub is not None:
                    sub.queue.cancelled(sub.consumer)
        elif kind == "stats":
            for row in item[1]:
                q = self.queues.get((row[0], row[1]))
                if q is not None and q.record.id == row[2]:
                    q.set_stats(row)

    def _delivered(self, peer: str, item: list) -> None:
        _, cid, seq, redelivered, pair, header, body = item
        sub = self.subs.get(cid)
        if sub is None:  # cancelled meanwhile: it goes back, as if never sent
            self.outbox.post(peer, ["settle", cid, REQUEUE, [seq]])
            return
        sub.credit -= 1
        consumer = sub.consumer
        sub.held.append((seq, _message(pair, header, body), bool(redelivered),
                         None if consumer.no_ack else cid))
        sub.release()
        sub.top_up(self)
