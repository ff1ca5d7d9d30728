"""What the broker asks of durable storage, as one small interface.

The core calls these methods; it never waits on them. The node's shell plugs in a journal
backed by the write-ahead log (`store/journal.py`); `NullJournal` keeps nothing and is what
the sans-IO tests use. Ordering guarantee every journal gives: `after_sync` callbacks run in
the order they were registered, each after everything logged before it is on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..queues.classic import ClassicQueue
    from .message import Message


class Journal:
    durable = False

    def log_meta(self, command: dict) -> None:
        """A metadata command was applied."""

    def log_message(self, msg: Message, queues: list[ClassicQueue]) -> None:
        """A persistent message was enqueued on these durable queues."""

    def note_delivered(self, queue: ClassicQueue, seq: int) -> None:
        """A persistent message of a durable queue went out for the first time."""

    def note_settled(self, queue: ClassicQueue, entries: list[tuple]) -> None:
        """Persistent entries of a durable queue are gone (acked, dropped, purged)."""

    def queue_deleted(self, queue: ClassicQueue) -> None:
        """A durable queue and everything in it is gone."""

    def page_out(self, msg: Message) -> None:
        """Free the body's memory; it stays readable through read_body."""

    def unpin(self, msg: Message) -> None:
        """No queue holds this paged-out message any more."""

    def read_body(self, msg: Message) -> bytes:
        raise LookupError("this journal keeps no bodies")

    def after_sync(self, callback: Callable[[], None]) -> None:
        callback()

    def flush(self) -> None:
        """End of a loop turn: write what was batched."""


class NullJournal(Journal):
    pass
