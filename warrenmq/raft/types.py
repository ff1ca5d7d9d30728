"""The values a Raft group exchanges with its host: entries, messages, hard state, snapshots,
configuration and the `Ready` batch.

Everything here is plain data (frozen where it travels) so a host can encode it for the wire
or the disk however it likes; nothing here knows about either. Node ids are positive ints;
0 means "nobody" (no vote cast, no known leader), as in the paper's null.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

NONE = 0  # the null node id: no vote, no leader


class RaftError(Exception):
    """A request the node cannot take in its current state (the caller decides what next)."""


class NotLeader(RaftError):
    """Only the leader accepts proposals; `leader_id` is the node believed to lead (or 0)."""

    def __init__(self, leader_id: int) -> None:
        super().__init__(f"not the leader (leader is {leader_id or 'unknown'})")
        self.leader_id = leader_id


class ProposalDropped(RaftError):
    """The leader refuses the proposal for now (transfer in progress, change pending...)."""


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


# value -> kind, for decoders: a dict lookup, where EntryKind(value) costs an Enum call (about
# a microsecond) per entry; None for a kind this version does not know
ENTRY_KINDS: dict[int, EntryKind] = {k.value: k for k in EntryKind}


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


class ConfChangeOp(enum.IntEnum):
    ADD = 1
    REMOVE = 2


_CC_HEAD = struct.Struct(">BQ")
_CC_ID = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One server added or removed, carrying the resulting voter set.

    The resulting set travels in the entry so a node replaying the log from any point (a
    new member replaying from index 1, a restart replaying from its snapshot) reaches the
    same configuration without knowing the one before it.
    """

    op: ConfChangeOp
    node_id: int
    voters: frozenset[int]

    def encode(self) -> bytes:
        ids = sorted(self.voters)
        return _CC_HEAD.pack(self.op, self.node_id) + b"".join(_CC_ID.pack(i) for i in ids)

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        op, node_id = _CC_HEAD.unpack_from(data, 0)
        off = _CC_HEAD.size
        voters = frozenset(
            _CC_ID.unpack_from(data, o)[0] for o in range(off, len(data), _CC_ID.size)
        )
        return cls(ConfChangeOp(op), node_id, voters)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it leaves the node."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine up to `index` (opaque `data`), and the voters in force there."""

    index: int = 0
    term: int = 0
    voters: frozenset[int] = frozenset()
    data: bytes = b""


class MessageType(enum.IntEnum):
    VOTE = 1
    VOTE_RESP = 2
    PRE_VOTE = 3
    PRE_VOTE_RESP = 4
    APPEND = 5
    APPEND_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft RPC. Field meaning depends on `type`, as in the paper's RPC tables:

    APPEND: `index`/`log_term` are prevLogIndex/prevLogTerm, `commit` is leaderCommit.
    APPEND_RESP: `index` is the last index the follower now matches (or, with `reject`, the
    prevLogIndex it refused, with `reject_hint` a lower index worth probing next).
    VOTE/PRE_VOTE: `index`/`log_term` are lastLogIndex/lastLogTerm; `force` marks a
    campaign started by TIMEOUT_NOW, which a leader lease must not block.
    """

    type: MessageType
    from_: int
    to: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    force: bool = False


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class Ready:
    """One batch of work for the host, to be carried out in this order:

    1. persist `snapshot` (if any), then append `entries`, then store `hard_state` (if any);
       these must be durable (fsynced) before step 2, and so must `written_entries` (entries
       the host was handed earlier by `RaftNode.take_unwritten` and wrote then; they go to
       the host's storage with `entries`, in front of them);
    2. send `messages`;
    3. apply `committed_entries` to the state machine, in order;
    4. call `advance(ready)`.
    `must_sync` is False when nothing in 1 needs an fsync (no entries, term or vote change).
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    written_entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    must_sync: bool = False
    # Soft state (not persisted), for the host's routing and diagnostics.
    leader_id: int = NONE
    role: Role = Role.FOLLOWER
