"""The parts of the quorum queue's state: its configuration, messages (references to log
entries, never bodies), the ready queue with its priority levels, consumers and publishers.

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

# Without x-max-priority a quorum queue still has two levels, as RabbitMQ's: priorities
# above this one are served first.
NORMAL_PRIORITY_MAX = 4
PRIORITY_MAX = 255


@dataclass
class QueueConfig:
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
        if config.max_priority is not None and not 1 <= config.max_priority <= PRIORITY_MAX:
            raise ValueError(f"max_priority must be between 1 and {PRIORITY_MAX}")
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

    def levels(self) -> int:
        return 2 if self.max_priority is None else self.max_priority + 1

    def level_of(self, priority: int) -> int:
        if self.max_priority is None:
            return 1 if priority > NORMAL_PRIORITY_MAX else 0
        return min(priority, self.max_priority)


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
    """Ready messages by priority level, highest level first; within a level by Raft index, so
    a returned message goes back to the place it had (as classic queues requeue).

    New messages arrive in index order and are appended to `fresh`; returned ones go to a heap
    keyed by index. The head of a level is the smaller of the two heads, so both operations
    stay O(log n) however many messages come back.
    """

    def __init__(self, levels: int) -> None:
        self.fresh: list[deque[Msg]] = [deque() for _ in range(levels)]
        self.returned: list[list[tuple[int, Msg]]] = [[] for _ in range(levels)]
        self.count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self.count

    def append(self, level: int, msg: Msg) -> None:
        self.fresh[level].append(msg)
        self.count += 1
        self.bytes += msg.size_bytes

    def requeue(self, level: int, msg: Msg) -> None:
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

    @classmethod
    def load(cls, data: list[Any]) -> ReadyQueue:
        ready = cls(len(data))
        for level, (fresh, returned) in enumerate(data):
            for m in fresh:
                ready.append(level, Msg.load(m))
            for m in returned:  # sorted by index, which is a valid heap already
                ready.requeue(level, Msg.load(m))
        return ready


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

    def has_credit(self) -> bool:
        return self.status == UP and (self.prefetch == 0
                                      or len(self.checked_out) < self.prefetch)

    def dump(self) -> list[Any]:
        return [self.id, self.owner, self.prefetch, self.priority, self.exclusive,
                self.timeout_ms, self.order, self.status, self.next_msg_id,
                [[mid, m.dump(), ts] for mid, (m, ts) in self.checked_out.items()]]

    @classmethod
    def load(cls, data: list[Any]) -> Consumer:
        *head, checked = data
        consumer = cls(*head)
        consumer.checked_out = {mid: (Msg.load(m), ts) for mid, m, ts in checked}
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
