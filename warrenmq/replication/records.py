"""The replication records in the node's shared WAL: how a group's Raft state is encoded,
and how a replay of those records rebuilds every group's storage.

Record kinds (the store's journal owns 1-5; these must stay distinct from them):
  RAFT_ENTRIES     [group][count u32] then per entry [term u64][index u64][kind u8]
                   [length u32][data]; a later record starting at an index already held
                   replaces the suffix from there (a follower's log overwritten by a leader)
  RAFT_HARD_STATE  [group][term u64][vote u64][commit u64]
  RAFT_SNAPSHOT    [group][index u64][term u64][voter count u32][voter u64...][data]
  RAFT_REMOVED     [group]: the group left this node; replay forgets everything before
where [group] is [length u16][group id, UTF-8].

A compaction writes, in one WAL batch, a snapshot, the hard state and every entry after the
snapshot: a snapshot record replaces the group's whole log on replay, so from that batch on
the group needs no earlier record.

Replay order is log order, so the last record of each kind wins, exactly as the host wrote
them. This module is pure: bytes in, bytes out, no files.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from warrenmq.raft import ENTRY_KINDS, Entry, HardState, MemoryStorage, Snapshot

RAFT_ENTRIES = 16
RAFT_HARD_STATE = 17
RAFT_SNAPSHOT = 18
RAFT_REMOVED = 19
RECORD_KINDS = frozenset({RAFT_ENTRIES, RAFT_HARD_STATE, RAFT_SNAPSHOT, RAFT_REMOVED})

_GID = struct.Struct(">H")
_COUNT = struct.Struct(">I")
_ENTRY = struct.Struct(">QQBI")
_HARD = struct.Struct(">QQQ")
_SNAP = struct.Struct(">QQI")
_VOTER = struct.Struct(">Q")


class ReplicationRecordError(ValueError):
    """A replication record that does not decode (the WAL's CRC passed, so a bug or a
    record written by an incompatible version)."""


def _gid(group_id: str) -> bytes:
    raw = group_id.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"group id longer than 65535 bytes: {group_id[:40]!r}...")
    return _GID.pack(len(raw)) + raw


def _read_gid(buf: memoryview) -> tuple[str, int]:
    (n,) = _GID.unpack_from(buf, 0)
    end = _GID.size + n
    if end > len(buf):
        raise ReplicationRecordError("group id runs past the record")
    return bytes(buf[_GID.size : end]).decode(), end


def encode_entries(group_id: str, entries: Iterable[Entry]) -> bytes:
    ents = list(entries)
    parts = [_gid(group_id), _COUNT.pack(len(ents))]
    for e in ents:
        parts.append(_ENTRY.pack(e.term, e.index, e.kind, len(e.data)))
        parts.append(e.data)
    return b"".join(parts)


def encode_hard_state(group_id: str, hs: HardState) -> bytes:
    return _gid(group_id) + _HARD.pack(hs.term, hs.vote, hs.commit)


def encode_snapshot(group_id: str, snap: Snapshot) -> bytes:
    voters = sorted(snap.voters)
    return b"".join(
        [_gid(group_id), _SNAP.pack(snap.index, snap.term, len(voters))]
        + [_VOTER.pack(v) for v in voters]
        + [snap.data]
    )


def encode_removed(group_id: str) -> bytes:
    return _gid(group_id)


def decode(kind: int, payload: bytes) -> tuple[str, list[Entry] | HardState | Snapshot | None]:
    """(group id, value); the value of a RAFT_REMOVED record is None."""
    buf = memoryview(payload)
    try:
        group_id, off = _read_gid(buf)
        if kind == RAFT_REMOVED:
            return group_id, None
        if kind == RAFT_ENTRIES:
            (count,) = _COUNT.unpack_from(buf, off)
            off += _COUNT.size
            entries = []
            for _ in range(count):
                term, index, ekind, n = _ENTRY.unpack_from(buf, off)
                off += _ENTRY.size
                if off + n > len(buf):
                    raise ReplicationRecordError("entry data runs past the record")
                entry_kind = ENTRY_KINDS.get(ekind)
                if entry_kind is None:
                    raise ReplicationRecordError(f"unknown entry kind {ekind}")
                entries.append(Entry(term, index, entry_kind, bytes(buf[off : off + n])))
                off += n
            return group_id, entries
        if kind == RAFT_HARD_STATE:
            return group_id, HardState(*_HARD.unpack_from(buf, off))
        if kind == RAFT_SNAPSHOT:
            index, term, nvoters = _SNAP.unpack_from(buf, off)
            off += _SNAP.size
            voters = frozenset(
                _VOTER.unpack_from(buf, off + i * _VOTER.size)[0] for i in range(nvoters)
            )
            off += nvoters * _VOTER.size
            return group_id, Snapshot(index, term, voters, bytes(buf[off:]))
    except (struct.error, ValueError) as exc:
        if isinstance(exc, ReplicationRecordError):
            raise
        raise ReplicationRecordError(f"bad replication record of kind {kind}: {exc}") from exc
    raise ReplicationRecordError(f"record kind {kind} is not a replication record")


@dataclass(slots=True)
class RecoveredGroup:
    """What the WAL held for one group, replayed into a scratch log (`log`)."""

    log: MemoryStorage = field(default_factory=MemoryStorage)
    snapshot: Snapshot | None = None
    records: int = 0
    skipped: int = 0  # entry records before the group's first snapshot in the kept log

    def storage(self, voters: frozenset[int]) -> MemoryStorage:
        """The group's storage for a RaftNode. Without a snapshot the configuration is the
        group's initial `voters` (later changes replay from the log's conf-change entries)."""
        snap = self.snapshot
        if snap is None:
            out = MemoryStorage(voters)
        else:
            out = MemoryStorage()
            out.apply_snapshot(snap)
        last = self.log.last_index()
        first = self.log.first_index()
        if last >= first:
            out.append(self.log.entries(first, last + 1, 1 << 62))
        out.set_hard_state(self.log.hard_state)
        return out


def replay(records: Iterable[tuple[int, bytes]]) -> dict[str, RecoveredGroup]:
    """Rebuild each group's log from (kind, payload) records in log order; records of
    other kinds (the journal's) are skipped, so the whole WAL replay can be passed in."""
    groups: dict[str, RecoveredGroup] = {}
    for kind, payload in records:
        if kind not in RECORD_KINDS:
            continue
        group_id, value = decode(kind, payload)
        if value is None:
            groups.pop(group_id, None)
            continue
        g = groups.get(group_id)
        if g is None:
            g = groups[group_id] = RecoveredGroup()
        g.records += 1
        if isinstance(value, HardState):
            g.log.set_hard_state(value)
        elif isinstance(value, Snapshot):
            if value.index > g.log.snapshot().index:
                g.log.apply_snapshot(value)
                g.snapshot = value
        else:
            if value and value[0].index > g.log.last_index() + 1:
                # Entries that do not attach: records of the group written earlier in the
                # segment a checkpoint kept, before its compaction batch, which rewrites
                # them after its snapshot further on. Skipped; that batch restores them.
                g.skipped += 1
                continue
            g.log.append(value)
    return groups
