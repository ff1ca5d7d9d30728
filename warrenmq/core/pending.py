"""`Pending`: the outcome of a metadata command that is not known yet.

Metadata changes go through the node's metadata log (a Raft group; a cluster of one on a
lone node), so their reply exists only once the command is committed and applied, possibly
after a network round trip to the leader. The core stays free of asyncio: a `Pending` is a
tiny callback cell the shell can wrap into an awaitable, and the channel resumes the
handler that yielded it (see `Connection.drive`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Pending:
    __slots__ = ("done", "value", "error", "_callbacks")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[Pending], None]] = []

    def resolve(self, value: Any) -> None:
        if self.done:
            return
        self.done, self.value = True, value
        self._fire()

    def fail(self, error: BaseException) -> None:
        if self.done:
            return
        self.done, self.error = True, error
        self._fire()

    def on_done(self, callback: Callable[[Pending], None]) -> None:
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def result(self) -> Any:
        if not self.done:
            raise RuntimeError("the outcome is not known yet")
        if self.error is not None:
            raise self.error
        return self.value

    def _fire(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)


def resolved(value: Any) -> Pending:
    p = Pending()
    p.resolve(value)
    return p


def when_all_true(waits: list[Pending], done: Callable[[bool], None]) -> None:
    """done(True) once every wait resolved truthy; done(False) as soon as one did not (a
    message confirmed only once every queue it went to has it)."""
    if not waits:
        done(True)
        return
    left = [len(waits)]

    def one(p: Pending) -> None:
        if left[0] <= 0:
            return
        if p.error is not None or not p.value:
            left[0] = 0
            done(False)
            return
        left[0] -= 1
        if left[0] == 0:
            done(True)

    for p in waits:
        p.on_done(one)
