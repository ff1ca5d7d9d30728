"""What a leader knows about each follower's log, and how hard it may push: `Progress` and
its in-flight window `Inflights`.

A follower is in one of three states:
- PROBE: the leader does not know where the logs match; it sends one append at a time and
  waits for the answer (or the next heartbeat) before sending another, walking next_index
  back on every rejection.
- REPLICATE: the logs match up to match_index; the leader streams appends without waiting
  (pipelining), optimistically moving next_index past what it sent, bounded by the window.
- SNAPSHOT: the entries the follower needs are compacted; the leader has sent a snapshot and
  sends nothing else until it is acknowledged (or presumed lost after a timeout).
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """Last indexes of the appends sent but not yet acknowledged, oldest first; a full
    window pauses a REPLICATE follower so a slow one cannot pile up unbounded messages."""

    __slots__ = ("capacity", "_last_indexes")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._last_indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        assert not self.full(), "adding to a full in-flight window"
        self._last_indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """An acknowledgement of `index` acknowledges every append ending at or before it."""
        q = self._last_indexes
        while q and q[0] <= index:
            q.popleft()

    def free_first(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def reset(self) -> None:
        self._last_indexes.clear()

    def full(self) -> bool:
        return len(self._last_indexes) >= self.capacity

    def __len__(self) -> int:
        return len(self._last_indexes)


class Progress:
    # Invariant: 0 <= match_index < next_index.
    __slots__ = (
        "match_index",
        "next_index",
        "state",
        "probe_sent",
        "pending_snapshot",
        "snapshot_elapsed",
        "recent_active",
        "inflights",
    )

    def __init__(self, next_index: int, inflight_max: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: an append is out, wait for its answer
        self.pending_snapshot = 0  # SNAPSHOT: the index of the snapshot sent
        self.snapshot_elapsed = 0  # SNAPSHOT: ticks since it was sent
        self.recent_active = False  # heard from within this election timeout (check-quorum)
        self.inflights = Inflights(inflight_max)

    def _check(self) -> None:
        assert 0 <= self.match_index < self.next_index, (self.match_index, self.next_index)

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The follower may have installed the snapshot: probe right after it.
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next_index = max(self.match_index + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next_index = self.match_index + 1
        self._check()

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next_index = self.match_index + 1
        self._check()

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged entries up to `index`; False if that is old news."""
        updated = False
        if index > self.match_index:
            self.match_index = index
            updated = True
            self.probe_sent = False
        self.next_index = max(self.next_index, index + 1)
        self._check()
        return updated

    def sent_entries(self, last_index: int) -> None:
        """An append ending at `last_index` went out."""
        if self.state is ProgressState.REPLICATE:
            self.next_index = last_index + 1
            self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
        self._check()

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """The follower refused an append whose prevLogIndex was `rejected`; `hint` is an
        index at or below which the logs might match. False if the refusal is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False  # answers an append sent before a later success
            self.next_index = self.match_index + 1
            return True
        if self.next_index - 1 != rejected:
            return False  # not an answer to the current probe
        self.next_index = max(min(rejected, hint + 1), self.match_index + 1)
        self.probe_sent = False
        self._check()
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value} match={self.match_index} next={self.next_index}"
            f" inflight={len(self.inflights)})"
        )
