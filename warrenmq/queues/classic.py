"""The classic queue: ready messages in order, round-robin delivery to consumers.

A ready entry is a tuple (seq, message, redelivered). `seq` is the queue's own sequence
number; requeued messages go back to their original position by seq, as in RabbitMQ.
Invariant: `ready` is sorted by seq.

The queue knows its consumers but not the wire: it asks each consumer's channel whether it
can take a message (`can_take`) and hands deliveries to it (`deliver`). It tells the journal
what happens to persistent messages when the queue is durable, and pages message bodies out
of memory once its ready bytes pass `page_bytes` (RabbitMQ's lazy behaviour), so a deep
queue costs an index entry per message, not its body.

Poison messages (x-delivery-limit, policy key delivery-limit), as quorum queues handle them
and deliberately unlike RabbitMQ 3.10, whose classic queues ignore the limit. Under a limit
the queue counts each message's failed deliveries (`delivery_counts`, by seq): every entry
that comes back through `requeue` (nack or reject with requeue, basic.recover, a channel or
connection closed, a consumer timed out) counts one; one whose count exceeds the limit is
discarded with reason `delivery_limit` (dead-lettered, or dropped without a dead-letter
exchange) instead of going back. A message with a count goes out as a copy whose header
adds `x-delivery-count` (the stored header stays as published, so a dead-lettered copy
carries none); the copy is `lent` against its seq, and every entry that comes back is traded
for the stored message before the queue looks at it. Without a limit nothing is counted and
the queue behaves as RabbitMQ's classic queue. The counts live in memory only: the journal
does not record them, so a durable queue's messages start again from 0 after a restart.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..core.journal import Journal, NullJournal
from ..core.message import with_delivery_count
from .priority import PriorityReady

if TYPE_CHECKING:
    from ..core.consumer import Consumer
    from ..core.message import Message
    from ..meta.records import QueueRecord

Entry = tuple  # (seq, Message, redelivered)

PAGE_BYTES_DEFAULT = 64 * 1024 * 1024


class ClassicQueue:
    type_name = "classic"
    deferred_consume = False  # consume-ok at once; the queue dispatches right after
    # a channel (or a home) adds each delivery to `unacked`; a quorum queue's machine counts
    # its own, and its `unacked` is a sum over consumers not worth computing per delivery
    counts_deliveries = True

    def __init__(self, record: QueueRecord, journal: Journal | None = None,
                 page_bytes: int = PAGE_BYTES_DEFAULT) -> None:
        self.record = record
        self.name = record.name
        self.vhost = record.vhost
        self.durable = record.durable
        self.journalled = record.durable  # persistent messages go to the node's journal
        self.journal = journal or NullJournal()
        self.page_bytes = page_bytes
        self.ready: deque[Entry] | PriorityReady = deque()
        self.consumers: deque[Consumer] = deque()
        self.unacked = 0
        self.next_seq = 0
        self.had_consumers = False
        self.prioritised = False  # some consumer has a non-zero x-priority
        self.single_active = bool(record.arguments.get("x-single-active-consumer"))
        self.sac_order: list[Consumer] = []  # consumers in the order they came
        self.deleted = False
        # persistent messages of a durable queue that are out (delivered, not settled)
        self.out_persistent: dict[int, Message] = {}
        self.ready_bytes = 0  # bodies of ready messages, resident or paged out
        self.resident_bytes = 0  # bodies of ready messages held in memory
        # counters for rates and listings
        self.published = 0
        self.delivered = 0
        self.acked = 0
        # limits from arguments and policy (see core/queue_settings.py); None = no limit
        self.ttl_ms: int | None = None
        self.expires_ms: int | None = None
        self.max_length: int | None = None
        self.max_length_bytes: int | None = None
        self.overflow = "drop-head"
        self.dead_letter_exchange: str | None = None
        self.dead_letter_routing_key: str | None = None
        self.has_expiring = False  # a ready message may expire: the node's timer looks here
        self.consumer_timeout_ms: int | None = None  # overrides the node's consumer_timeout
        self.delivery_limit: int | None = None  # failed deliveries a message may have
        self.delivery_counts: dict[int, int] = {}  # seq -> failed deliveries, if any
        self.lent: dict[int, Message] = {}  # seq -> stored message of an entry out as a copy
        self.last_used_ms = 0.0
        # (queue, messages, reason): where dead or dropped messages go (the node sets it)
        self.on_dead = _drop
        self.clock = _no_clock  # wall-clock milliseconds, given by the node
        self.on_timed = _drop_timed  # the queue now has a timer to run (TTL, expiry)

    # -- input ----------------------------------------------------------------------------------
    def rejects(self, message: Message) -> bool:
        """With overflow reject-publish(-dlx), a full queue refuses new messages."""
        if self.overflow == "drop-head":
            return False
        if self.max_length is not None and len(self.ready) >= self.max_length:
            return True
        limit = self.max_length_bytes
        return limit is not None and self.ready_bytes + message.size > limit

    def enqueue(self, message: Message) -> None:
        if not self.has_expiring and (self.ttl_ms is not None or message.ttl_ms is not None):
            self.has_expiring = True
            self.on_timed(self)
        self.next_seq += 1
        self.published += 1
        self.ready.append((self.next_seq, message, False))
        self.ready_bytes += message.size
        if message.body is not None:
            if self.resident_bytes >= self.page_bytes and self.ready:
                self.journal.page_out(message)
            else:
                self.resident_bytes += message.size
        if self.consumers:
            self.dispatch()
        if self.max_length is not None or self.max_length_bytes is not None:
            self._drop_overflow()

    def _drop_overflow(self) -> None:
        """drop-head: the oldest ready messages go (dead-lettered as maxlen) until it fits."""
        dropped = []
        ready = self.ready
        while ready and ((self.max_length is not None and len(ready) > self.max_length) or
                         (self.max_length_bytes is not None
                          and self.ready_bytes > self.max_length_bytes)):
            dropped.append(self._pop_ready())
        if dropped:
            self.discard(dropped, "maxlen")

    def _pop_ready(self) -> Entry:
        entry = self.ready.popleft()
        msg = entry[1]
        self.ready_bytes -= msg.size
        if msg.body is not None:
            self.resident_bytes -= msg.size
        if not self.ready:
            self.resident_bytes = 0
        return entry

    def discard(self, entries: list[Entry], reason: str) -> None:
        """Entries leave the queue for good without a consumer: dead-lettered or dropped."""
        if self.delivery_counts:
            self._forget_counts(entries)
        if self.durable and not self.deleted:
            persistent = [e for e in entries if e[1].persistent]
            if persistent:
                self.journal.note_settled(self, persistent)
        dead = [e[1] for e in entries]
        self.on_dead(self, dead, reason)
        for e in entries:
            self._release(e[1])

    def expire(self, now_ms: float) -> int:
        """Drop expired messages from the head (RabbitMQ expires at the head only)."""
        if not self.has_expiring:
            return 0
        ready = self.ready
        ttl = self.ttl_ms
        dead = []
        while ready:
            msg = ready[0][1]
            life = ttl if msg.ttl_ms is None else (msg.ttl_ms if ttl is None else
                                                   min(ttl, msg.ttl_ms))
            # strictly later than publication: a TTL of 0 still lets a consumer that is
            # waiting take the message in the same turn, as in RabbitMQ
            if life is None or msg.published_ms + life > now_ms or msg.published_ms >= now_ms:
                break
            dead.append(self._pop_ready())
        if not ready:
            self.has_expiring = self.ttl_ms is not None
        if dead:
            self.discard(dead, "expired")
        return len(dead)

    def restore(self, entries: list[Entry]) -> None:
        """Recovery: entries (in seq order) read back from the journal."""
        self.ready.extend(entries)
        for _, msg, _ in entries:
            self.ready_bytes += msg.size
        if entries:
            self.next_seq = max(self.next_seq, entries[-1][0])

    def requeue(self, entries: list[Entry], asked: bool | None = None) -> None:  # noqa: ARG002
        """Put delivered entries back, in their original positions, marked redelivered;
        under a delivery limit, those that failed once too often are dead-lettered instead
        (whether the client `asked` or its channel closed)."""
        if self.lent:
            entries = self._stored(entries)
        self.unacked -= len(entries)
        if self.deleted or not entries:
            for e in entries:
                self._release(e[1])
            return
        if self.out_persistent:
            for e in entries:
                self.out_persistent.pop(e[0], None)
        poison: list[Entry] = []
        if self.delivery_limit is not None:
            entries, poison = self._count_failures(entries, self.delivery_limit)
        if entries:
            self._put_back(entries)
        if poison:
            self.discard(poison, "delivery_limit")
        self.dispatch()

    def _put_back(self, entries: list[Entry]) -> None:
        back = sorted((seq, msg, True) for seq, msg, _ in entries)
        for _, msg, _ in back:
            self.ready_bytes += msg.size
            if msg.body is not None:
                self.resident_bytes += msg.size
        ready = self.ready
        if not ready or (not getattr(ready, "always_merge", False)
                         and back[-1][0] < ready[0][0]):
            ready.extendleft(reversed(back))
        else:
            merged = sorted([*back, *ready], key=_seq)
            ready.clear()
            ready.extend(merged)

    def _count_failures(self, entries: list[Entry],
                        limit: int) -> tuple[list[Entry], list[Entry]]:
        """One more failed delivery for each entry: (those to put back, those over the
        limit)."""
        counts = self.delivery_counts
        back, poison = [], []
        for e in entries:
            count = counts.get(e[0], 0) + 1
            if count > limit:
                counts.pop(e[0], None)
                poison.append(e)
            else:
                counts[e[0]] = count
                back.append(e)
        return back, poison

    def _stored(self, entries: list[Entry]) -> list[Entry]:
        """Entries as the queue stores them: a copy made for x-delivery-count is traded back
        for the stored message (refs, journal location and paging are the stored one's)."""
        lent = self.lent
        return [(e[0], lent.pop(e[0]), e[2]) if e[0] in lent else e for e in entries]

    def _forget_counts(self, entries: list[Entry]) -> None:
        counts = self.delivery_counts
        for e in entries:
            counts.pop(e[0], None)

    def settle(self, entries: list[Entry], dead_reason: str | None = None) -> None:
        """Delivered entries are done with: acked, or (with a reason) rejected without
        requeue, which dead-letters them."""
        if self.lent:
            entries = self._stored(entries)
        if self.delivery_counts:
            self._forget_counts(entries)
        self.unacked -= len(entries)
        self.acked += len(entries)
        if dead_reason is not None and not self.deleted:
            self.on_dead(self, [e[1] for e in entries], dead_reason)
        for e in entries:
            self._release(e[1])
        if self.durable and not self.deleted:
            persistent = [e for e in entries if e[1].persistent]
            if persistent:
                for e in persistent:
                    self.out_persistent.pop(e[0], None)
                self.journal.note_settled(self, persistent)

    def take(self) -> Entry | None:
        """The next ready entry, leaving the queue (basic.get or a delivery)."""
        if self.has_expiring:
            self.expire(self.clock())
        if not self.ready:
            return None
        entry = self.ready.popleft()
        msg = entry[1]
        self.ready_bytes -= msg.size
        if msg.body is None:
            msg.body = self.journal.read_body(msg)
        else:
            self.resident_bytes -= msg.size
        if not self.ready:  # a body shared with another queue may have been paged by it
            self.resident_bytes = 0
        self.delivered += 1
        if self.durable and msg.persistent:
            self.out_persistent[entry[0]] = msg
            if not entry[2]:
                self.journal.note_delivered(self, entry[0])
        if self.delivery_counts:
            count = self.delivery_counts.get(entry[0])
            if count:
                self.lent[entry[0]] = msg
                entry = (entry[0], with_delivery_count(msg, count), entry[2])
        return entry

    def _release(self, msg: Message) -> None:
        msg.refs -= 1
        if msg.refs <= 0 and msg.pinned:
            self.journal.unpin(msg)

    def purge(self) -> int:
        n = len(self.ready)
        if self.delivery_counts:
            self._forget_counts(list(self.ready))
        for e in self.ready:
            self._release(e[1])
        if self.durable:
            persistent = [e for e in self.ready if e[1].persistent]
            if persistent:
                self.journal.note_settled(self, persistent)
        self.ready.clear()
        self.ready_bytes = self.resident_bytes = 0
        return n

    def delete(self) -> None:
        for e in self.ready:
            self._release(e[1])
        if self.durable:
            self.journal.queue_deleted(self)
        self.deleted = True
        self.delivery_counts.clear()
        self.ready.clear()
        self.ready_bytes = self.resident_bytes = 0

    # -- consumers ------------------------------------------------------------------------------
    def set_max_priority(self, max_priority: int) -> None:
        """Declared with x-max-priority: ready messages are ordered by priority first."""
        if max_priority > 0 and not isinstance(self.ready, PriorityReady):
            old = list(self.ready)
            self.ready = PriorityReady(max_priority)
            self.ready.extend(old)

    @property
    def active_consumer(self) -> Consumer | None:
        """With x-single-active-consumer: the one consumer that gets messages (the oldest)."""
        return self.sac_order[0] if self.single_active and self.sac_order else None

    def add_consumer(self, consumer: Consumer) -> None:
        self.sac_order.append(consumer)
        self.consumers.append(consumer)
        self.had_consumers = True
        if consumer.priority:
            self.prioritised = True
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
            self.sac_order.remove(consumer)
        except ValueError:
            pass
        if self.single_active and self.sac_order:
            self.dispatch()  # the next consumer in line takes over

    def dispatch(self) -> None:
        """Deliver ready messages to consumers that can take them, round-robin (among the
        consumers of the highest priority that can take one, when priorities are in use)."""
        if self.single_active:
            self._dispatch_single()
            return
        if self.prioritised:
            self._dispatch_by_priority()
            return
        ready = self.ready
        consumers = self.consumers
        while ready and consumers:
            for _ in range(len(consumers)):
                consumer = consumers[0]
                consumers.rotate(-1)
                if consumer.can_take():
                    entry = self.take()
                    if entry is None:  # everything left had expired
                        return
                    consumer.channel.deliver(consumer, self, entry)
                    break
            else:
                return

    def _dispatch_single(self) -> None:
        active = self.active_consumer
        while active is not None and self.ready and active.can_take():
            entry = self.take()
            if entry is None:
                return
            active.channel.deliver(active, self, entry)

    def _dispatch_by_priority(self) -> None:
        ready = self.ready
        consumers = self.consumers
        while ready and consumers:
            best = None
            for consumer in consumers:  # the first able one of the highest priority
                if (best is None or consumer.priority > best.priority) and consumer.can_take():
                    best = consumer
            if best is None:
                return
            consumers.remove(best)  # to the back: round-robin within a priority
            consumers.append(best)
            entry = self.take()
            if entry is None:
                return
            best.channel.deliver(best, self, entry)

    @property
    def message_count(self) -> int:
        return len(self.ready)


def _seq(entry: Entry) -> int:
    return entry[0]


def _drop(queue: ClassicQueue, messages: list, reason: str) -> None:
    pass


def _drop_timed(queue: ClassicQueue) -> None:
    pass


def _no_clock() -> float:
    return 0.0
