"""The parts on their own: majority maths, the in-flight window, follower progress,
MemoryStorage and the unstable log."""

from __future__ import annotations

import random

import pytest

from warrenmq.raft import (
    Compacted,
    ConfChange,
    ConfChangeOp,
    Entry,
    Inflights,
    MemoryStorage,
    Message,
    MessageType,
    Progress,
    ProgressState,
    RaftConfig,
    Ready,
    StorageError,
    Unavailable,
    VoteResult,
    committed_index,
    vote_result,
)
from warrenmq.raft.log import RaftLog
from warrenmq.raft.node import RaftNode


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


def test_raft_log_written_entries_follow_truncation_and_stabilising() -> None:
    """`written` counts the leading unstable entries the host has written: a conflicting
    append pulls it back to what is still there, stabilising moves it along."""
    st = MemoryStorage()
    st.append([Entry(1, 1), Entry(1, 2)])
    log = RaftLog(st)
    log.append([Entry(1, 3), Entry(1, 4), Entry(1, 5)])
    log.written = 3  # all three handed to the host
    log.append([Entry(2, 5)])  # replaces 5 only: 3 and 4 stay written
    assert log.written == 2 and [e.term for e in log.unstable] == [1, 1, 2]
    log.append([Entry(3, 4)])  # replaces 4 and drops 5
    assert log.written == 1 and [(e.index, e.term) for e in log.unstable] == [(3, 1), (4, 3)]
    log.stable_to(3, 1)  # the written one is stable now
    assert log.written == 0 and log.unstable_offset == 4
    log.written = 1
    log.append([Entry(3, 2)])  # at or before the offset: nothing unstable is written
    assert log.written == 0 and log.unstable_offset == 2


def test_a_follower_hands_out_entries_while_a_ready_is_persisted() -> None:
    """`take_unwritten` between Ready and advance: the entries and replies stepped in
    meanwhile may be written and sent early; the next Ready gives the entries back as
    written, to store. Not once the term changed: that needs a Ready of its own first."""
    storage = MemoryStorage({1, 2, 3})
    node = RaftNode(1, storage, random.Random(1), RaftConfig())

    def append(term: int, index: int, entries: list[Entry]) -> Message:
        # from leader 2; the entries before `index` are all of term 1
        return Message(MessageType.APPEND, 2, 1, term, log_term=1 if index else 0,
                       index=index, entries=tuple(entries), commit=0)

    def done(rd: Ready) -> None:  # what the host does once rd is durable
        storage.append(rd.written_entries + rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        node.advance(rd)

    node.step(append(1, 0, [Entry(1, 1)]))
    rd = node.ready()
    assert rd is not None and [e.index for e in rd.entries] == [1]
    assert rd.hard_state is not None and rd.hard_state.term == 1
    node.step(append(1, 1, [Entry(1, 2), Entry(1, 3)]))  # while rd is being persisted
    assert node.may_reply_early()
    assert [e.index for e in node.take_unwritten()] == [2, 3]
    assert node.take_unwritten() == []  # handed once
    replies = node.take_messages(frozenset({MessageType.APPEND_RESP}))
    assert [(m.type, m.index) for m in replies] == [(MessageType.APPEND_RESP, 3)]
    done(rd)
    rd2 = node.ready()
    assert rd2 is not None and rd2.entries == [] and rd2.messages == []
    assert [e.index for e in rd2.written_entries] == [2, 3] and rd2.must_sync
    done(rd2)
    assert node.log.unstable == [] and node.log.written == 0 and storage.last_index() == 3

    node.step(append(1, 3, [Entry(1, 4)]))
    rd3 = node.ready()
    assert rd3 is not None and [e.index for e in rd3.entries] == [4]
    node.step(append(2, 4, [Entry(2, 5)]))  # a new term: not durable yet
    assert not node.may_reply_early() and node.take_unwritten() == []
    done(rd3)
    rd4 = node.ready()
    assert rd4 is not None and rd4.hard_state is not None and rd4.hard_state.term == 2
    assert [e.index for e in rd4.entries] == [5] and rd4.written_entries == []
    assert [m.index for m in rd4.messages] == [5]


def test_conf_change_round_trips() -> None:
    cc = ConfChange(ConfChangeOp.REMOVE, 7, frozenset({1, 2, 300}))
    assert ConfChange.decode(cc.encode()) == cc
