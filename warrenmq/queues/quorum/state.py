"""The parts of the quorum queue's state: its configuration, messages (references to log
entries, never bodies), the ready messages in the order the queue type serves them, consumers
and publishers.

Two orders of ready messages share the machine: a quorum queue's (`FairShareQueue`, RabbitMQ
4.x: returned messages first, then high and normal priorities 2:1) and a classic queue's,
for one replicated by an ha-* policy (`ReadyQueue`: strict priority levels up to
x-max-priority, a returned message back in its place). `QueueConfig.queue_type` chooses.

Every part can turn itself into plain lists and back (`dump` / `load`) for the snapshot, in an
order that depends only on the commands applied, so two replicas that applied the same log
produce the same snapshot byte for byte.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from .commands import DEAD_LETTER_STRATEGIES, OVERFLOWS, MessageRef

# A quorum queue has two priorities, as RabbitMQ 4.x's: a message whose priority property
# is above this one is high, any other (or none) normal.
NORMAL_PRIORITY_MAX = 4
PRIORITY_MAX = 255  # x-max-priority of a classic queue
QUEUE_TYPES = ("quorum", "classic")


@dataclass
class QueueConfig:
    # whose rules order the ready messages: a quorum queue's, or a classic queue's (one
    # replicated by an ha-* policy); fixed for the queue's life
    queue_type: str = "quorum"
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    message_ttl_ms: int | None = None
    delivery_limit: int | None = None
    max_priority: int | None = None
    single_active_consumer: bool = False
    consumer_timeout_ms: int | None = None
    expires_ms: int | None = None  # queue TTL: deleted when unused for this long
    # at-least-once keeps dead letters in the queue until their targets confirmed them
    dead_letter_strategy: str = "at-most-once"
    # where dead letters go: carried here so that every replica learns a policy change in
    # log order; the machine itself never reads them
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueueConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown queue setting(s): {', '.join(unknown)}")
        config = cls(**data)
        for name in ("max_length", "max_length_bytes", "message_ttl_ms", "delivery_limit",
                     "max_priority", "consumer_timeout_ms", "expires_ms"):
            value = getattr(config, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        if config.queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue_type must be one of {', '.join(QUEUE_TYPES)}, "
                             f"not {config.queue_type!r}")
        if config.max_priority is not None:
            if not 1 <= config.max_priority <= PRIORITY_MAX:
                raise ValueError(f"max_priority must be between 1 and {PRIORITY_MAX}")
            if config.queue_type != "classic":
                raise ValueError("max_priority is for classic queues only")
        if config.overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}, "
                             f"not {config.overflow!r}")
        if not isinstance(config.single_active_consumer, bool):
            raise ValueError("single_active_consumer must be a boolean")
        if config.dead_letter_strategy not in DEAD_LETTER_STRATEGIES:
            raise ValueError(f"dead_letter_strategy must be one of "
                             f"{', '.join(DEAD_LETTER_STRATEGIES)}, "
                             f"not {config.dead_letter_strategy!r}")
        for name in ("dead_letter_exchange", "dead_letter_routing_key"):
            value = getattr(config, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string, not {value!r}")
        return config

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Msg:
    raft_index: int  # Raft index of the entry holding the body; unique, so it names the message
    size_bytes: int
    priority: int
    expiry_ms: int | None
    delivery_count: int = 0  # failed deliveries (returns), what x-delivery-limit counts
    acquired_count: int = 0  # times checked out: above 0, a delivery is a redelivery

    def ref(self) -> MessageRef:
        return MessageRef(self.raft_index, self.size_bytes, self.priority, self.expiry_ms)

    def dump(self) -> list[Any]:
        return [self.raft_index, self.size_bytes, self.priority, self.expiry_ms,
                self.delivery_count, self.acquired_count]

    @classmethod
    def load(cls, data: list[Any]) -> Msg:
        return cls(*data)


class ReadyQueue:
    """A classic queue's ready messages (one replicated by an ha-* policy): one level per
    priority up to x-max-priority (one level without it), the highest served first; within
    a level by Raft index, so a returned message goes back to the place it had (as classic
    queues requeue).

    New messages arrive in index order and are appended to `fresh`; returned ones go to a heap
    keyed by index. The head of a level is the smaller of the two heads, so both operations
    stay O(log n) however many messages come back.
    """

    def __init__(self, levels: int, max_priority: int | None = None) -> None:
        self.max_priority = max_priority
        self.fresh: list[deque[Msg]] = [deque() for _ in range(levels)]
        self.returned: list[list[tuple[int, Msg]]] = [[] for _ in range(levels)]
        self.count = 0
        self.bytes = 0

    @classmethod
    def for_config(cls, config: QueueConfig) -> ReadyQueue:
        max_priority = config.max_priority
        return cls(1 if max_priority is None else max_priority + 1, max_priority)

    def __len__(self) -> int:
        return self.count

    def level_of(self, priority: int) -> int:
        return 0 if self.max_priority is None else min(priority, self.max_priority)

    def add(self, msg: Msg) -> None:
        """A new message: it arrives after every other of its level."""
        self._add_at(self.level_of(msg.priority), msg)

    def _add_at(self, level: int, msg: Msg) -> None:
        self.fresh[level].append(msg)
        self.count += 1
        self.bytes += msg.size_bytes

    def requeue(self, msg: Msg) -> None:
        self._push_returned(self.level_of(msg.priority), msg)

    def _push_returned(self, level: int, msg: Msg) -> None:
        heapq.heappush(self.returned[level], (msg.raft_index, msg))
        self.count += 1
        self.bytes += msg.size_bytes

    def level_head(self, level: int) -> Msg | None:
        fresh, returned = self.fresh[level], self.returned[level]
        if returned and (not fresh or returned[0][0] < fresh[0].raft_index):
            return returned[0][1]
        return fresh[0] if fresh else None

    def level_pop(self, level: int) -> Msg:
        fresh, returned = self.fresh[level], self.returned[level]
        if returned and (not fresh or returned[0][0] < fresh[0].raft_index):
            msg = heapq.heappop(returned)[1]
        else:
            msg = fresh.popleft()
        self.count -= 1
        self.bytes -= msg.size_bytes
        return msg

    def top_level(self) -> int | None:
        for level in range(len(self.fresh) - 1, -1, -1):
            if self.fresh[level] or self.returned[level]:
                return level
        return None

    def pop(self) -> Msg | None:
        level = self.top_level()
        return None if level is None else self.level_pop(level)

    def heads(self) -> list[Msg]:
        """The messages TTL expiry looks at: each level's head."""
        return [m for m in map(self.level_head, range(len(self.fresh))) if m is not None]

    def take_expired(self, now_ms: int) -> list[Msg]:
        """Expired messages at the head of each level, which is where expiry looks (a
        message with a shorter TTL waits behind the head, as in RabbitMQ)."""
        expired: list[Msg] = []
        if not self.count:
            return expired
        for level in range(len(self.fresh)):
            head = self.level_head(level)
            while head is not None and head.expiry_ms is not None and head.expiry_ms < now_ms:
                expired.append(self.level_pop(level))
                head = self.level_head(level)
        return expired

    def __iter__(self) -> Iterator[Msg]:
        """Every ready message in delivery order (for snapshots, purges and tests)."""
        for level in range(len(self.fresh) - 1, -1, -1):
            merged = sorted([*self.fresh[level], *(m for _, m in self.returned[level])],
                            key=lambda m: m.raft_index)
            yield from merged

    def clear(self) -> list[Msg]:
        msgs = list(self)
        for level in range(len(self.fresh)):
            self.fresh[level].clear()
            self.returned[level].clear()
        self.count = self.bytes = 0
        return msgs

    def dump(self) -> list[Any]:
        return [[[m.dump() for m in self.fresh[level]],
                 [m.dump() for _, m in sorted(self.returned[level], key=lambda e: e[0])]]
                for level in range(len(self.fresh))]

    def load(self, data: list[Any]) -> None:
        """Fill this empty queue from `dump`'s output. A snapshot taken with more levels than
        this queue has (one from before a queue without x-max-priority had a single level)
        puts the extra levels' messages on the top level, in index order."""
        top = len(self.fresh) - 1
        for level, (fresh, returned) in enumerate(data):
            for m in fresh:
                if level > top:
                    self._push_returned(top, Msg.load(m))
                else:
                    self._add_at(level, Msg.load(m))
            for m in returned:  # sorted by index, which is a valid heap already
                self._push_returned(min(level, top), Msg.load(m))


# RabbitMQ 4.x (rabbit_fifo_q): a quorum queue serves this many high priority messages for
# each normal one, when both wait and the high one is not the older
HIGH_WEIGHT = 2


class FairShareQueue:
    """A quorum queue's ready messages, as RabbitMQ 4.0 to 4.2 order them (rabbit_fifo with
    rabbit_fifo_q): `returns` first, in the order they came back, then two FIFOs, `high`
    (priority above NORMAL_PRIORITY_MAX) and `normal` (the rest, and no priority), served 2:1
    so that normal messages are never starved.

    The weighting is a counter of messages taken from the two FIFOs, 0, 1, 2, 0, ...: at 0
    and 1 the high FIFO is served if it has anything; at 2, when both have messages, the one
    whose head is older (the lower position) is served, so a high message published before a
    normal one still goes first. Every take from the FIFOs moves the counter, whatever took
    it (a delivery, basic.get, an expiry at the head, drop-head); a take from the returns
    does not; a purge resets it. The counter is part of the state (and of the snapshot), so
    every replica takes the same message next.

    A message's position is the Raft index of the entry that put it in its FIFO: its
    enqueue's, or for a message re-appended at the back (`append_back`: RabbitMQ re-appends
    a message requeued by its consumer to the log, as normal priority, when the queue has no
    delivery limit) the index of the command that did it.
    """

    def __init__(self) -> None:
        # (position, message); positions only matter in `high` and `normal`
        self.returns: deque[tuple[int, Msg]] = deque()
        self.high: deque[tuple[int, Msg]] = deque()
        self.normal: deque[tuple[int, Msg]] = deque()
        self.dequeue_counter = 0
        self.count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self.count

    @staticmethod
    def is_high(priority: int) -> bool:
        return priority > NORMAL_PRIORITY_MAX

    def _put(self, fifo: deque[tuple[int, Msg]], position: int, msg: Msg) -> None:
        fifo.append((position, msg))
        self.count += 1
        self.bytes += msg.size_bytes

    def add(self, msg: Msg) -> None:
        self._put(self.high if self.is_high(msg.priority) else self.normal, msg.raft_index, msg)

    def requeue(self, msg: Msg) -> None:
        """A returned message goes before every other ready one, whatever its priority,
        after those returned before it (rabbit_fifo's `returns`)."""
        self._put(self.returns, msg.raft_index, msg)

    def append_back(self, msg: Msg, position: int) -> None:
        """A message re-appended behind every other normal one (rabbit_fifo's `requeue`),
        `position` being the index of the command that re-appends it."""
        self._put(self.normal, position, msg)

    def _next(self) -> deque[tuple[int, Msg]] | None:
        """The FIFO the next message comes from (rabbit_fifo_q's `next`)."""
        if self.returns:
            return self.returns
        high, normal = self.high, self.normal
        if high and normal and self.dequeue_counter == HIGH_WEIGHT:
            return high if high[0][0] < normal[0][0] else normal
        return high or normal or None

    def peek(self) -> Msg | None:
        fifo = self._next()
        return fifo[0][1] if fifo else None

    def pop(self) -> Msg | None:
        fifo = self._next()
        if fifo is None:
            return None
        if fifo is not self.returns:
            self.dequeue_counter = (0 if self.dequeue_counter == HIGH_WEIGHT
                                    else self.dequeue_counter + 1)
        _, msg = fifo.popleft()
        self.count -= 1
        self.bytes -= msg.size_bytes
        return msg

    def heads(self) -> list[Msg]:
        """The message TTL expiry looks at: the next one only, as in rabbit_fifo."""
        head = self.peek()
        return [] if head is None else [head]

    def take_expired(self, now_ms: int) -> list[Msg]:
        expired: list[Msg] = []
        head = self.peek()
        while head is not None and head.expiry_ms is not None and head.expiry_ms < now_ms:
            expired.append(head)
            self.pop()
            head = self.peek()
        return expired

    def __iter__(self) -> Iterator[Msg]:
        """Every ready message in the order it would be taken if nothing else happened."""
        for _, msg in self.returns:
            yield msg
        high, normal = iter(self.high), iter(self.normal)
        h, n = next(high, None), next(normal, None)
        counter = self.dequeue_counter
        while h is not None or n is not None:
            if h is not None and (n is None or counter != HIGH_WEIGHT or h[0] < n[0]):
                yield h[1]
                h = next(high, None)
            else:
                assert n is not None
                yield n[1]
                n = next(normal, None)
            counter = 0 if counter == HIGH_WEIGHT else counter + 1

    def clear(self) -> list[Msg]:
        msgs = list(self)
        for fifo in (self.returns, self.high, self.normal):
            fifo.clear()
        self.dequeue_counter = self.count = self.bytes = 0
        return msgs

    def dump(self) -> dict[str, Any]:
        return {"returns": [m.dump() for _, m in self.returns],
                "high": [[p, m.dump()] for p, m in self.high],
                "normal": [[p, m.dump()] for p, m in self.normal],
                "dequeue_counter": self.dequeue_counter}

    def load(self, data: dict[str, Any] | list[Any]) -> None:
        """Fill this empty queue from `dump`'s output, or from a snapshot taken before the
        two FIFOs (a list of [fresh, returned] per level, as ReadyQueue dumps): level 0 is
        normal, above is high, each in the order it was delivered then (by index)."""
        if isinstance(data, list):
            for level, (fresh, returned) in enumerate(data):
                fifo = self.high if level > 0 else self.normal
                for msg in sorted(map(Msg.load, [*fresh, *returned]),
                                  key=lambda m: m.raft_index):
                    self._put(fifo, msg.raft_index, msg)
            return
        for m in data["returns"]:
            self.requeue(Msg.load(m))
        for name in ("high", "normal"):
            for position, m in data[name]:
                self._put(getattr(self, name), position, Msg.load(m))
        self.dequeue_counter = data["dequeue_counter"]


Ready = ReadyQueue | FairShareQueue


def make_ready(config: QueueConfig) -> Ready:
    """The ready messages' order: a quorum queue's (RabbitMQ 4.x), or a classic queue's."""
    return FairShareQueue() if config.queue_type == "quorum" else ReadyQueue.for_config(config)


UP, WAITING, QUIESCING, CANCELLED = "up", "waiting", "quiescing", "cancelled"


@dataclass(slots=True)
class Consumer:
    id: str
    owner: str
    prefetch: int  # 0: no limit
    priority: int
    exclusive: bool
    timeout_ms: int | None
    order: int  # registration order: ties between equal priorities go to the elder
    status: str = UP  # up | waiting (single active: not yet) | quiescing | cancelled
    next_msg_id: int = 0
    # msg_id -> (message, timestamp of the checkout); insertion order is delivery order
    checked_out: dict[int, tuple[Msg, int]] = field(default_factory=dict)
    window: int = 0  # how many of them its client may hold (0: all; see make_checkout)

    def has_credit(self) -> bool:
        return self.status == UP and (self.prefetch == 0
                                      or len(self.checked_out) < self.prefetch)

    def dump(self) -> list[Any]:
        out = [self.id, self.owner, self.prefetch, self.priority, self.exclusive,
               self.timeout_ms, self.order, self.status, self.next_msg_id,
               [[mid, m.dump(), ts] for mid, (m, ts) in self.checked_out.items()]]
        if self.window:  # only then: without one, the snapshot reads as before windows
            out.append(self.window)
        return out

    @classmethod
    def load(cls, data: list[Any]) -> Consumer:
        window = data[10] if len(data) > 10 else 0
        *head, checked = data[:10]
        consumer = cls(*head)
        consumer.checked_out = {mid: (Msg.load(m), ts) for mid, m, ts in checked}
        consumer.window = window
        return consumer


# How many refused sequence numbers a publisher's record remembers, so that a re-sent
# publish that was refused is refused again rather than taken for a success.
REJECTED_REMEMBERED = 128


@dataclass(slots=True)
class Enqueuer:
    next_seq: int = 1
    rejected: list[int] = field(default_factory=list)

    def dump(self) -> list[Any]:
        return [self.next_seq, list(self.rejected)]

    @classmethod
    def load(cls, data: list[Any]) -> Enqueuer:
        return cls(data[0], list(data[1]))
