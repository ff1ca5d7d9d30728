"""The classic queue: ready messages in order, round-robin delivery to consumers.

A ready entry is a tuple (seq, message, redelivered). `seq` is the queue's own sequence
number; requeued messages go back to their original position by seq, as in RabbitMQ.
Invariant: `ready` is sorted by seq.

The queue knows its consumers but not the wire: it asks each consumer's channel whether it
can take a message (`can_take`) and hands deliveries to it (`deliver`).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.consumer import Consumer
    from ..core.message import Message
    from ..meta.records import QueueRecord

Entry = tuple  # (seq, Message, redelivered)


class ClassicQueue:
    type_name = "classic"

    def __init__(self, record: QueueRecord) -> None:
        self.record = record
        self.name = record.name
        self.vhost = record.vhost
        self.ready: deque[Entry] = deque()
        self.consumers: deque[Consumer] = deque()
        self.unacked = 0
        self.next_seq = 0
        self.had_consumers = False
        self.prioritised = False  # some consumer has a non-zero x-priority
        self.deleted = False
        self.ready_bytes = 0
        # counters for rates and listings
        self.published = 0
        self.delivered = 0
        self.acked = 0

    # -- input ----------------------------------------------------------------------------------
    def enqueue(self, message: Message) -> None:
        self.next_seq += 1
        self.published += 1
        self.ready.append((self.next_seq, message, False))
        self.ready_bytes += len(message.body)
        if self.consumers:
            self.dispatch()

    def requeue(self, entries: list[Entry]) -> None:
        """Put delivered entries back, in their original positions, marked redelivered."""
        if self.deleted or not entries:
            return
        back = sorted((seq, msg, True) for seq, msg, _ in entries)
        for _, msg, _ in back:
            self.ready_bytes += len(msg.body)
        ready = self.ready
        if not ready or back[-1][0] < ready[0][0]:
            ready.extendleft(reversed(back))
        else:
            merged = sorted([*back, *ready], key=_seq)
            ready.clear()
            ready.extend(merged)
        self.unacked -= len(back)
        self.dispatch()

    def settle(self, count: int = 1) -> None:
        self.unacked -= count
        self.acked += count

    def get(self) -> Entry | None:
        if not self.ready:
            return None
        entry = self.ready.popleft()
        self.ready_bytes -= len(entry[1].body)
        self.delivered += 1
        return entry

    def purge(self) -> int:
        n = len(self.ready)
        self.ready.clear()
        self.ready_bytes = 0
        return n

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
                    entry = ready.popleft()
                    self.ready_bytes -= len(entry[1].body)
                    self.delivered += 1
                    consumer.channel.deliver(consumer, self, entry)
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
            entry = ready.popleft()
            self.ready_bytes -= len(entry[1].body)
            self.delivered += 1
            best.channel.deliver(best, self, entry)

    @property
    def message_count(self) -> int:
        return len(self.ready)


def _seq(entry: Entry) -> int:
    return entry[0]
