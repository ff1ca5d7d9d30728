"""The replication records: encoding round trips, and replay rebuilding a group's log the
way the host wrote it (later entries replace a suffix, the last hard state wins, a
snapshot resets the log), through a real WAL."""

from __future__ import annotations

import pytest

from warrenmq.raft import Entry, EntryKind, HardState, Snapshot
from warrenmq.replication import records
from warrenmq.store.wal import WAL


def test_records_round_trip() -> None:
    ents = [Entry(1, 1, EntryKind.NORMAL, b""), Entry(2, 2, EntryKind.CONF_CHANGE, b"\x01x")]
    assert records.decode(records.RAFT_ENTRIES, records.encode_entries("q", ents)) == ("q", ents)
    hs = HardState(5, 2, 9)
    assert records.decode(records.RAFT_HARD_STATE, records.encode_hard_state("é", hs)) == (
        "é",
        hs,
    )
    snap = Snapshot(7, 3, frozenset({1, 2, 3}), b"state")
    assert records.decode(records.RAFT_SNAPSHOT, records.encode_snapshot("q", snap)) == (
        "q",
        snap,
    )
    with pytest.raises(records.ReplicationRecordError):
        records.decode(records.RAFT_ENTRIES, records.encode_entries("q", ents)[:-1])
    with pytest.raises(records.ReplicationRecordError):
        records.decode(1, b"\x00\x01q")


async def test_replay_from_a_real_wal(tmp_path) -> None:
    wal = WAL(tmp_path / "wal")
    list(wal.open())
    e = records.encode_entries
    wal.append(2, b"a journal record, not ours")
    wal.append(records.RAFT_ENTRIES, e("a", [Entry(1, 1), Entry(1, 2, data=b"x")]))
    wal.append(records.RAFT_ENTRIES, e("a", [Entry(1, 3, data=b"old")]))
    wal.append(records.RAFT_ENTRIES, e("a", [Entry(2, 3, data=b"new"), Entry(2, 4)]))
    wal.append(records.RAFT_HARD_STATE, records.encode_hard_state("a", HardState(1, 1, 2)))
    wal.append(records.RAFT_HARD_STATE, records.encode_hard_state("a", HardState(2, 3, 3)))
    wal.append(records.RAFT_ENTRIES, e("b", [Entry(1, 1), Entry(1, 2)]))
    wal.append(records.RAFT_SNAPSHOT, records.encode_snapshot("b", Snapshot(2, 1, frozenset({4}))))
    wal.append(records.RAFT_ENTRIES, e("b", [Entry(1, 3, data=b"after")]))
    await wal.wait_durable()
    wal.close()

    wal = WAL(tmp_path / "wal")
    groups = records.replay((kind, payload) for _, kind, payload in wal.open())
    wal.close()
    assert sorted(groups) == ["a", "b"]
    a = groups["a"].storage(frozenset({1, 2, 3}))
    assert a.initial_state() == (HardState(2, 3, 3), Snapshot(voters=frozenset({1, 2, 3})))
    assert [(x.term, x.index, x.data) for x in a.entries(1, 5, 1 << 20)] == [
        (1, 1, b""),
        (1, 2, b"x"),
        (2, 3, b"new"),
        (2, 4, b""),
    ]
    b = groups["b"].storage(frozenset({1, 2, 3}))
    assert b.snapshot() == Snapshot(2, 1, frozenset({4}))  # the snapshot's voters win
    assert b.first_index() == 3 and b.entries(3, 4, 1 << 20)[0].data == b"after"
