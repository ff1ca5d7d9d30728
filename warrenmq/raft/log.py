"""A node's view of its log: what the host has persisted (`Storage`) plus what it has not
yet been handed or has not yet acknowledged (the unstable tail, and perhaps an incoming
snapshot).

Invariants:
- `applied <= committed <= last_index()`; committed entries are never replaced.
- Unstable entries start at `unstable_offset`; they shadow any stored entry at the same or
  a later index (a follower that truncated its log has not yet told the host).
- While `unstable_snapshot` is set the stored log is stale: every index the node may read
  is then the snapshot's own or an unstable entry after it.
"""

from __future__ import annotations

from .storage import Compacted, Storage, StorageError, limit_size
from .types import Entry, Snapshot


class RaftLog:
    __slots__ = (
        "storage",
        "unstable",
        "unstable_offset",
        "unstable_snapshot",
        "committed",
        "applied",
        "written",
    )

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1
        self.unstable_snapshot: Snapshot | None = None
        # A restart re-applies from the snapshot: the state machine restarts from it too.
        # (The stored log may keep entries before the snapshot; they are never re-applied.)
        self.committed = storage.snapshot().index
        self.applied = self.committed
        # How many leading unstable entries the host was handed already (by a Ready, or by
        # `RaftNode.take_unwritten` while one was being persisted): they are in its WAL, or
        # on their way, but not yet stable.
        self.written = 0

    # -- reading ------------------------------------------------------------------------
    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable[-1].index
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index
        return self.storage.last_index()

    def term(self, index: int) -> int | None:
        """The term of entry `index`, or None when it is compacted away or not there."""
        if index < self.first_index() - 1 or index > self.last_index():
            return None
        snap = self.unstable_snapshot
        if snap is not None and index == snap.index:
            return snap.term
        if index >= self.unstable_offset:
            return self.unstable[index - self.unstable_offset].term
        try:
            return self.storage.term(index)
        except StorageError:
            return None

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None, "the last entry's term is always known"
        return term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The paper's election restriction (5.4.1): is a log ending at (last_index,
        last_term) at least as up-to-date as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi) within `max_bytes` (at least one); raises Compacted."""
        if lo < self.first_index():
            raise Compacted(f"index {lo} is compacted")
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        ents: list[Entry] = []
        off = self.unstable_offset
        if lo < off:
            stable_hi = min(hi, off)
            ents = self.storage.entries(lo, stable_hi, max_bytes)
            if len(ents) < stable_hi - lo:
                return ents
        if hi > off:
            ents.extend(self.unstable[max(lo, off) - off : hi - off])
        return limit_size(ents, max_bytes)

    def next_committed(self, max_bytes: int) -> list[Entry]:
        """Committed entries not yet handed to the state machine."""
        if self.unstable_snapshot is not None or self.committed <= self.applied:
            return []
        return self.slice(self.applied + 1, self.committed + 1, max_bytes)

    # -- changing -----------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        assert first > self.committed, f"rewriting committed entry {first} <= {self.committed}"
        off = self.unstable_offset
        if first == off + len(self.unstable):
            self.unstable.extend(entries)
        elif first <= off:
            # Replaces stored entries too: the host's next append truncates them.
            self.unstable_offset = first
            self.unstable = list(entries)
            self.written = 0
        else:
            self.unstable = self.unstable[: first - off] + list(entries)
            self.written = min(self.written, first - off)

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """The index of the first entry that is new or differs in term from ours, or 0."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """AppendEntries receiver rules 2-5: None when the consistency check fails, else the
        last index known to match the leader's log."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            # Entries the node already has are not rewritten: a delayed, shorter append
            # must not truncate entries that a later append added (receiver rule 3 only
            # deletes on a real conflict).
            self.append(list(entries[conflict - index - 1 :]))
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} past last {self.last_index()}"
            self.committed = index

    def restore(self, snapshot: Snapshot) -> None:
        self.committed = snapshot.index
        self.unstable_snapshot = snapshot
        self.unstable = []
        self.unstable_offset = snapshot.index + 1
        self.written = 0

    def stable_to(self, index: int, term: int) -> None:
        """The host persisted entries up to `index` (of `term`): forget them here, unless
        they were replaced in the meantime."""
        if index < self.unstable_offset or self.term(index) != term:
            return
        n = index + 1 - self.unstable_offset
        del self.unstable[:n]
        self.unstable_offset = index + 1
        self.written = max(0, self.written - n)

    def stable_snapshot_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.index == index:
            self.unstable_snapshot = None

    def applied_to(self, index: int) -> None:
        assert index <= self.committed, f"applied {index} past commit {self.committed}"
        self.applied = max(self.applied, index)
