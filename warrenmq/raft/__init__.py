"""Raft consensus as a pure state machine, modelled on etcd-io/raft.

Theory of operation: a host owns one `RaftNode` per group and drives it with `tick()`,
`step(message)` and proposals; whenever `ready()` returns a batch, the host persists its
entries and hard state (durably), sends its messages, applies its committed entries, then
calls `advance(ready)`. The node itself does no I/O and keeps no timers, so many groups can
share one process, one disk log and one timer, and a simulator can drive it exactly.

Modules: types.py (the data exchanged), storage.py (the persisted log the node reads:
`Storage`, `MemoryStorage`), log.py (persisted + unstable log), progress.py (the leader's
per-follower replication state and in-flight window), quorum.py (majority maths), node.py
(the protocol).
"""

from .node import RaftConfig, RaftNode
from .progress import Inflights, Progress, ProgressState
from .quorum import VoteResult, committed_index, vote_result
from .storage import Compacted, MemoryStorage, Storage, StorageError, Unavailable
from .types import (
    ENTRY_KINDS,
    NONE,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    RaftError,
    Ready,
    Role,
    Snapshot,
)

__all__ = [
    "ENTRY_KINDS",
    "NONE",
    "Compacted",
    "ConfChange",
    "ConfChangeOp",
    "Entry",
    "EntryKind",
    "HardState",
    "Inflights",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NotLeader",
    "Progress",
    "ProgressState",
    "ProposalDropped",
    "RaftConfig",
    "RaftError",
    "RaftNode",
    "Ready",
    "Role",
    "Snapshot",
    "Storage",
    "StorageError",
    "Unavailable",
    "VoteResult",
    "committed_index",
    "vote_result",
]
