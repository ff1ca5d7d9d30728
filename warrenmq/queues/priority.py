"""Ready messages of a priority queue (x-max-priority): one FIFO per priority level behind
the small part of the deque interface the classic queue uses. The highest non-empty level
is the head; within a level, order is by seq. A message's priority above the queue's
maximum counts as the maximum; no priority counts as 0, as in RabbitMQ."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from ..core.message import message_priority


class PriorityReady:
    always_merge = True  # requeue must merge by seq: the head alone says nothing of a level

    def __init__(self, max_priority: int) -> None:
        self.max_priority = max_priority
        self.levels: list[deque] = [deque() for _ in range(max_priority + 1)]
        self.length = 0

    def _level(self, entry: tuple) -> deque:
        return self.levels[min(message_priority(entry[1].header), self.max_priority)]

    def append(self, entry: tuple) -> None:
        self._level(entry).append(entry)
        self.length += 1

    def extend(self, entries: Iterable[tuple]) -> None:
        for entry in entries:
            self.append(entry)

    def extendleft(self, entries: Iterable[tuple]) -> None:
        for entry in entries:
            self._level(entry).appendleft(entry)
            self.length += 1

    def _head_level(self) -> deque:
        for level in reversed(self.levels):
            if level:
                return level
        raise IndexError("pop from an empty priority queue")

    def popleft(self) -> tuple:
        entry = self._head_level().popleft()
        self.length -= 1
        return entry

    def __getitem__(self, index: int) -> tuple:
        if index != 0:
            raise IndexError("only the head of a priority queue can be read")
        return self._head_level()[0]

    def __len__(self) -> int:
        return self.length

    def __bool__(self) -> bool:
        return self.length > 0

    def __iter__(self) -> Iterator[tuple]:
        for level in reversed(self.levels):
            yield from level

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self.length = 0
