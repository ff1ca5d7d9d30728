"""What the six tutorials share across clients: their data (log severities, topic
bindings and routing keys with the subscribers each key must reach, straight from the
tutorials' text), tutorial 6's Fibonacci function, and an inbox that consumers write to
and tests wait on with a deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

# Every wait in these tests ends by this deadline; a healthy broker needs milliseconds.
DEADLINE_S = 10.0

# Tutorial 4: one subscriber writes only errors to disk, the other prints every severity.
ROUTING_BINDINGS: dict[str, list[str]] = {
    "disk": ["error"],
    "console": ["info", "warning", "error"],
}
# (severity, message). "debug" has no binding: the direct exchange drops it. The last
# message reaches every subscriber, so once each has it, nothing earlier is in flight.
ROUTING_LOGS: list[tuple[str, str]] = [
    ("info", "Starting up"),
    ("warning", "Disk 80% full"),
    ("debug", "Nobody listens to debug"),
    ("error", "Run. Run. Or it will explode."),
    ("info", "Still running"),
    ("error", "Exploded"),
]

# Tutorial 5: Q1 is interested in orange animals, Q2 in rabbits and lazy animals;
# receive_logs_topic.py "#" receives everything.
TOPIC_BINDINGS: dict[str, list[str]] = {
    "Q1": ["*.orange.*"],
    "Q2": ["*.*.rabbit", "lazy.#"],
    "all": ["#"],
}
# (routing_key, subscribers it reaches besides "all"), as the tutorial's text lists them.
# A message matching two bindings of one queue ("lazy.pink.rabbit") arrives only once;
# "#" matches zero words too ("lazy"). The last key reaches every subscriber.
TOPIC_ROUTES: list[tuple[str, set[str]]] = [
    ("quick.orange.rabbit", {"Q1", "Q2"}),
    ("quick.orange.fox", {"Q1"}),
    ("lazy.brown.fox", {"Q2"}),
    ("lazy.pink.rabbit", {"Q2"}),
    ("quick.brown.fox", set()),
    ("orange", set()),
    ("quick.orange.new.rabbit", set()),
    ("lazy.orange.new.rabbit", {"Q2"}),
    ("lazy", {"Q2"}),
    ("lazy.orange.elephant", {"Q1", "Q2"}),
]


def routing_expected(subscriber: str) -> list[tuple[str, str]]:
    keys = ROUTING_BINDINGS[subscriber]
    return [(severity, text) for severity, text in ROUTING_LOGS if severity in keys]


def topic_expected(subscriber: str) -> list[str]:
    return [key for key, reach in TOPIC_ROUTES if subscriber == "all" or subscriber in reach]


def fib(n: int) -> int:
    """Tutorial 6's deliberately slow recursive Fibonacci."""
    if n == 0:
        return 0
    if n == 1:
        return 1
    return fib(n - 1) + fib(n - 2)


class Inbox:
    """Items recorded by consumer callbacks (any thread, or an event loop)."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._changed = threading.Condition()

    def put(self, item: Any) -> None:
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    @property
    def items(self) -> list[Any]:
        with self._changed:
            return list(self._items)

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout_s: float = DEADLINE_S,
                 what: str = "messages") -> list[Any]:
        """Block the calling thread until `predicate(items)` holds; return the items."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self._items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out waiting for {what}; got {self._items!r}")
                self._changed.wait(remaining)
            return list(self._items)

    def wait_len(self, n: int, timeout_s: float = DEADLINE_S) -> list[Any]:
        return self.wait_for(lambda items: len(items) >= n, timeout_s, f"{n} messages")

    async def async_wait_for(self, predicate: Callable[[list[Any]], bool],
                             timeout_s: float = DEADLINE_S, what: str = "messages") -> list[Any]:
        """Like `wait_for`, for callbacks that run on the waiting coroutine's own loop."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.items):
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; got {self.items!r}")
            await asyncio.sleep(0.01)
        return self.items

    async def async_wait_len(self, n: int, timeout_s: float = DEADLINE_S) -> list[Any]:
        return await self.async_wait_for(lambda items: len(items) >= n, timeout_s,
                                         f"{n} messages")
