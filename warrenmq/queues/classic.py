"""The classic queue: ready messages in order, round-robin delivery to consumers.

A ready entry is a tuple (seq, message, redelivered). `seq` is the queue's own sequence
number; requeued messages go back to their original position by seq, as in RabbitMQ.
Invariant: `ready` is sorted by seq.

The queue knows its consumers but not the wire: it asks each consumer's channel whether it
can take a message (`can_take`) and hands deliveries to it (`deliver`). It tells the journal
what happens to persistent messages when the queue is durable, and pages message bodies out
of memory once its ready bytes pass `page_bytes` (RabbitMQ's lazy behaviour), so a deep
queue costs an index entry per message, not its body.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..core.journal import Journal, NullJournal

if TYPE_CHECKING:
    from ..core.consumer import Consumer
    from ..core.message import Message
    from ..meta.records import QueueRecord

Entry = tuple  # (seq, Message, redelivered)

PAGE_BYTES_DEFAULT = 64 * 1024 * 1024


class ClassicQueue:
    type_name = "classic"

    def __init__(self, record: QueueRecord, journal: Journal | None = None,
                 page_bytes: int = PAGE_BYTES_DEFAULT) -> None:
        self.record = record
        self.name = record.name
        self.vhost = record.vhost
        self.durable = record.durable
        self.journal = journal or NullJournal()
        self.page_bytes = page_bytes
        self.ready: deque[Entry] = deque()
        self.consumers: deque[Consumer] = deque()
        self.unacked = 0
        self.next_seq = 0
        self.had_consumers = False
        self.prioritised = False  # some consumer has a non-zero x-priority
        self.deleted = False
        # persistent messages of a durable queue that are out (delivered, not settled)
        self.out_persistent: dict[int, Message] = {}
        self.ready_bytes = 0  # bodies of ready messages, resident or paged out
        self.resident_bytes = 0  # bodies of ready messages held in memory
        # counters for rates and listings
        self.published = 0
        self.delivered = 0
        self.acked = 0

    # -- input ----------------------------------------------------------------------------------
    def enqueue(self, message: Message) -> None:
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

    def restore(self, entries: list[Entry]) -> None:
        """Recovery: entries (in seq order) read back from the journal."""
        self.ready.extend(entries)
        for _, msg, _ in entries:
            self.ready_bytes += msg.size
        if entries:
            self.next_seq = max(self.next_seq, entries[-1][0])

    def requeue(self, entries: list[Entry]) -> None:
        """Put delivered entries back, in their original positions, marked redelivered."""
        self.unacked -= len(entries)
        if self.deleted or not entries:
            for e in entries:
                self._release(e[1])
            return
        if self.out_persistent:
            for e in entries:
                self.out_persistent.pop(e[0], None)
        back = sorted((seq, msg, True) for seq, msg, _ in entries)
        for _, msg, _ in back:
            self.ready_bytes += msg.size
            if msg.body is not None:
                self.resident_bytes += msg.size
        ready = self.ready
        if not ready or back[-1][0] < ready[0][0]:
            ready.extendleft(reversed(back))
        else:
            merged = sorted([*back, *ready], key=_seq)
            ready.clear()
            ready.extend(merged)
        self.dispatch()

    def settle(self, entries: list[Entry]) -> None:
        """Delivered entries are done with (acked, or rejected without requeue)."""
        self.unacked -= len(entries)
        self.acked += len(entries)
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
        return entry

    def _release(self, msg: Message) -> None:
        msg.refs -= 1
        if msg.refs <= 0 and msg.pinned:
            self.journal.unpin(msg)

    def purge(self) -> int:
        n = len(self.ready)
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
        self.ready.clear()
        self.ready_bytes = self.resident_bytes = 0

    # -- consumers ------------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self.had_consumers = True
        if consumer.priority:
            self.prioritised = True
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            pass

    def dispatch(self) -> None:
        """Deliver ready messages to consumers that can take them, round-robin (among the
        consumers of the highest priority that can take one, when priorities are in use)."""
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
                    consumer.channel.deliver(consumer, self, self.take())
                    break
            else:
                return

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
            best.channel.deliver(best, self, self.take())

    @property
    def message_count(self) -> int:
        return len(self.ready)


def _seq(entry: Entry) -> int:
    return entry[0]
