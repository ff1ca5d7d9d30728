"""The parts on their own: majority maths, the in-flight window, follower progress,
MemoryStorage and the unstable log."""

from __future__ import annotations

import pytest

from warrenmq.raft import (
    Compacted,
    ConfChange,
    ConfChangeOp,
    Entry,
    Inflights,
    MemoryStorage,
    Progress,
    ProgressState,
    StorageError,
    Unavailable,
    VoteResult,
    committed_index,
    vote_result,
)
from warrenmq.raft.log import RaftLog


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        ({1: 5}, 5),
        ({1: 5, 2: 3}, 3),
        ({1: 5, 2: 3, 3: 4}, 4),
        ({1: 9, 2: 1, 3: 1, 4: 9}, 1),
        ({1: 9, 2: 8, 3: 7, 4: 2, 5: 1}, 7),
    ],
)
def test_committed_index_is_the_highest_index_on_a_majority(matches, expected) -> None:
    assert committed_index(matches.keys(), matches) == expected


def test_committed_index_counts_missing_voters_as_zero() -> None:
    assert committed_index({1, 2, 3}, {1: 4}) == 0
    assert committed_index(set(), {}) == 0


def test_vote_result() -> None:
    voters = {1, 2, 3, 4, 5}
    assert vote_result(voters, {1: True, 2: True}) is VoteResult.PENDING
    assert vote_result(voters, {1: True, 2: True, 3: True}) is VoteResult.WON
    assert vote_result(voters, {1: True, 2: False, 3: False, 4: False}) is VoteResult.LOST
    assert vote_result({1}, {1: True}) is VoteResult.WON


def test_inflights_window() -> None:
    inf = Inflights(3)
    for i in (5, 7, 9):
        inf.add(i)
    assert inf.full()
    inf.free_le(7)
    assert len(inf) == 1 and not inf.full()
    inf.free_first()
    assert len(inf) == 0


def test_progress_probe_then_replicate() -> None:
    pr = Progress(next_index=11, inflight_max=2)
    pr.sent_entries(10)
    assert pr.is_paused()  # probing: one append at a time
    assert not pr.maybe_decrease_to(rejected=4, hint=2)  # not the current probe
    assert pr.maybe_decrease_to(rejected=10, hint=6)
    assert pr.next_index == 7 and not pr.is_paused()
    assert pr.maybe_update(6)
    pr.become_replicate()
    pr.sent_entries(8)
    pr.sent_entries(10)
    assert pr.state is ProgressState.REPLICATE and pr.next_index == 11 and pr.is_paused()
    pr.maybe_update(8)
    pr.inflights.free_le(8)
    assert not pr.is_paused()
    assert 0 <= pr.match_index < pr.next_index


def test_progress_snapshot_pauses_until_acknowledged() -> None:
    pr = Progress(next_index=3, inflight_max=4)
    pr.become_snapshot(20)
    assert pr.is_paused()
    pr.maybe_update(20)
    pr.become_probe()
    assert pr.next_index == 21


def test_memory_storage_append_compact_snapshot() -> None:
    st = MemoryStorage({1})
    st.append([Entry(1, i) for i in range(1, 6)])
    st.append([Entry(2, 4), Entry(2, 5), Entry(2, 6)])  # replaces 4 and 5
    assert [st.term(i) for i in range(1, 7)] == [1, 1, 1, 2, 2, 2]
    with pytest.raises(StorageError):
        st.append([Entry(2, 9)])  # a gap
    snap = st.create_snapshot(4, frozenset({1}), b"s")
    assert (snap.index, snap.term) == (4, 2)
    st.compact(3)
    assert st.first_index() == 4 and st.term(3) == 1
    with pytest.raises(Compacted):
        st.entries(3, 5, 100)
    with pytest.raises(Unavailable):
        st.entries(5, 8, 100)
    with pytest.raises(StorageError):
        st.compact(5)  # beyond the snapshot
    st.apply_snapshot(snap.__class__(index=10, term=3, voters=frozenset({1})))
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 3)


def test_entries_are_batched_by_size_but_never_empty() -> None:
    st = MemoryStorage()
    st.append([Entry(1, i, data=b"x" * 10) for i in range(1, 6)])
    assert len(st.entries(1, 6, 25)) == 2
    assert len(st.entries(1, 6, 1)) == 1


def test_raft_log_unstable_tail_shadows_storage() -> None:
    st = MemoryStorage()
    st.append([Entry(1, 1), Entry(1, 2), Entry(1, 3)])
    log = RaftLog(st)
    log.append([Entry(2, 3), Entry(2, 4)])  # replaces stored 3
    assert [log.term(i) for i in range(1, 5)] == [1, 1, 2, 2]
    assert [e.term for e in log.slice(1, 5, 1 << 20)] == [1, 1, 2, 2]
    log.stable_to(4, 1)  # a stale acknowledgement (wrong term) is ignored
    assert log.unstable_offset == 3
    st.append(list(log.unstable))
    log.stable_to(4, 2)
    assert log.unstable == [] and log.unstable_offset == 5


def test_conf_change_round_trips() -> None:
    cc = ConfChange(ConfChangeOp.REMOVE, 7, frozenset({1, 2, 300}))
    assert ConfChange.decode(cc.encode()) == cc
