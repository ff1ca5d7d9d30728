"""The log a Raft node reads back from its host: the `Storage` protocol and `MemoryStorage`.

The node never writes storage itself: the host writes what a `Ready` tells it to, then
calls `advance`, and only then does the node read those entries from here. Reads beyond
what the host has made durable never happen, so an implementation may serve them from the
same place it writes to.

Indexes: entries start at 1. After compaction the log begins after a snapshot; index
`first_index() - 1` is the snapshot's index, whose term stays readable (`term`) because
the AppendEntries consistency check needs it.
"""

from __future__ import annotations

from typing import Protocol

from .types import Entry, HardState, Snapshot


class StorageError(Exception):
    pass


class Compacted(StorageError):
    """The requested index lies inside the snapshot: only the snapshot can serve it."""


class Unavailable(StorageError):
    """The requested index is past the last entry."""


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, Snapshot]: ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi); always at least one if any, then up to `max_bytes` of data."""
        ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


class MemoryStorage:
    """Storage held in memory: the reference implementation and the tests' disk.

    `_entries[0]` is a dummy entry standing for the snapshot point (index, term), so
    `_entries[i - offset]` is entry i and the snapshot's term is always at hand.
    """

    def __init__(self, voters: frozenset[int] | set[int] = frozenset()) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot(voters=frozenset(voters))
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    # -- reads (the node's side) --------------------------------------------------------
    def initial_state(self) -> tuple[HardState, Snapshot]:
        return self.hard_state, self._snapshot

    def _offset(self) -> int:
        return self._entries[0].index

    def first_index(self) -> int:
        return self._offset() + 1

    def last_index(self) -> int:
        return self._entries[-1].index

    def term(self, index: int) -> int:
        offset = self._offset()
        if index < offset:
            raise Compacted(f"index {index} is compacted (first is {offset + 1})")
        if index > self.last_index():
            raise Unavailable(f"index {index} is past the last index {self.last_index()}")
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        offset = self._offset()
        if lo <= offset:
            raise Compacted(f"index {lo} is compacted (first is {offset + 1})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"index {hi - 1} is past the last index {self.last_index()}")
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (the host's side) -------------------------------------------------------
    def set_hard_state(self, hard_state: HardState) -> None:
        self.hard_state = hard_state

    def append(self, entries: list[Entry]) -> None:
        """Append, replacing any existing suffix from the first new index on."""
        if not entries:
            return
        first = entries[0].index
        offset = self._offset()
        if first <= offset:
            # Entries already covered by the snapshot are dropped, not re-added.
            entries = [e for e in entries if e.index > offset]
            if not entries:
                return
            first = entries[0].index
        if first > self.last_index() + 1:
            raise StorageError(f"gap: appending index {first} after last index {self.last_index()}")
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by `snapshot` (a follower receiving one from its leader)."""
        if snapshot.index <= self._snapshot.index:
            raise StorageError(
                f"snapshot {snapshot.index} is not newer than {self._snapshot.index}"
            )
        self._snapshot = snapshot
        self._entries = [Entry(term=snapshot.term, index=snapshot.index)]

    def create_snapshot(self, index: int, voters: frozenset[int], data: bytes) -> Snapshot:
        """Record the state machine at applied `index`; follow with `compact` to free log."""
        if index <= self._snapshot.index:
            raise StorageError(f"snapshot {index} is not newer than {self._snapshot.index}")
        if index > self.last_index():
            raise Unavailable(f"snapshot {index} is past the last index {self.last_index()}")
        snap = Snapshot(index=index, term=self.term(index), voters=voters, data=data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index`; it must be covered by the snapshot."""
        offset = self._offset()
        if index <= offset:
            return
        if index > self._snapshot.index:
            raise StorageError(f"compacting to {index} beyond snapshot {self._snapshot.index}")
        i = index - offset
        self._entries = [Entry(term=self._entries[i].term, index=index), *self._entries[i + 1 :]]


def limit_size(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix within `max_bytes` of data, but never less than one entry (so a
    single oversized entry still makes progress)."""
    total = 0
    for n, e in enumerate(entries):
        total += len(e.data)
        if total > max_bytes and n > 0:
            return entries[:n]
    return list(entries)
