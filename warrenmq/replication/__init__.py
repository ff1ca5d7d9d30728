"""Replication: the RaftHost that runs every Raft group of a node in one asyncio task,
batching their Readys into one WAL write and one transport batch per peer node per turn.

Modules: `host` (the loop), `records` (group state as WAL records, and its replay),
`transport` (the network seam and an in-memory network for tests).
"""

from .host import HostStats, HostStopped, LeadershipLost, RaftHost, ReplicationError, UnknownGroup
from .records import RECORD_KINDS
from .transport import Batch, MemoryNetwork, MemoryTransport, Transport

__all__ = [
    "RECORD_KINDS",
    "Batch",
    "HostStats",
    "HostStopped",
    "LeadershipLost",
    "MemoryNetwork",
    "MemoryTransport",
    "RaftHost",
    "ReplicationError",
    "Transport",
    "UnknownGroup",
]
