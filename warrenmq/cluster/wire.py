"""The wire codec for Raft traffic between nodes: a `Batch` of group-tagged Raft messages as
one msgpack value, versioned. Never pickle: a peer only ever makes us build plain data.

Layout (version 1), all positional to keep frames small:

    batch    [VERSION, from_node, incarnation, [[group_id, message], ...]]
    message  [type, from, to, term, log_term, index, [entry...], commit, reject,
              reject_hint, snapshot | nil, force]
    entry    [term, index, kind, data]
    snapshot [index, term, [voter...], data]

A snapshot too big for one link message travels as chunks (`cluster/snapshots.py`), each
one self-describing, so a receiver checks every chunk alone:

    chunk    [VERSION, from_node, incarnation, group_id, message, offset, total, data]

where `message` is the SNAPSHOT message with its snapshot's data empty, `total` the size of
that data and `data` the bytes at `offset`.

A conf change travels as the data of a CONF_CHANGE entry (`ConfChange.encode`), exactly as
the log stores it, so the codec needs no second encoding for it.

Versioning: the version is the first element of every batch. A decoder refuses any version
it does not know with `UnsupportedWireVersion`, which names both versions, instead of
guessing at fields; a later version that only appends fields may still be read by bumping
`READABLE_VERSIONS`. Everything a peer sends is checked (types, ranges, enum values) and
a malformed batch is a `WireError`, never an exception from deep inside the Raft core.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import msgpack

from warrenmq.raft import ENTRY_KINDS, Entry, Message, MessageType, Snapshot
from warrenmq.replication.transport import Batch

WIRE_VERSION = 1
READABLE_VERSIONS = frozenset({1})
_U64_MAX = (1 << 64) - 1
_MESSAGE_FIELDS = 12
_CHUNK_FIELDS = 8


class WireError(ValueError):
    """Bytes that are not a Raft batch this node can read."""


class UnsupportedWireVersion(WireError):
    def __init__(self, version: int) -> None:
        super().__init__(
            f"Raft batch of wire version {version}, but this node reads version "
            f"{WIRE_VERSION} only: the nodes of a cluster run incompatible WarrenMQ "
            "versions (upgrade this node)"
        )
        self.version = version


# -- encoding -------------------------------------------------------------------------------
def _entry(e: Entry) -> list[Any]:
    return [e.term, e.index, int(e.kind), e.data]


def _snapshot(s: Snapshot | None) -> list[Any] | None:
    if s is None:
        return None
    return [s.index, s.term, sorted(s.voters), s.data]


def message_to_wire(m: Message) -> list[Any]:
    return [
        int(m.type),
        m.from_,
        m.to,
        m.term,
        m.log_term,
        m.index,
        [_entry(e) for e in m.entries],
        m.commit,
        m.reject,
        m.reject_hint,
        _snapshot(m.snapshot),
        m.force,
    ]


def batch_to_wire(batch: Batch) -> list[Any]:
    return [
        WIRE_VERSION,
        batch.from_node,
        batch.incarnation,
        [[group_id, message_to_wire(m)] for group_id, m in batch.messages],
    ]


def encode_batch(batch: Batch) -> bytes:
    data: bytes = msgpack.packb(batch_to_wire(batch), use_bin_type=True)
    return data


# -- decoding (everything checked: the bytes come from another machine) ---------------------
def _uint(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _U64_MAX:
        raise WireError(f"{what} must be an unsigned 64-bit integer, got {value!r:.40}")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise WireError(f"{what} must be a boolean, got {value!r:.40}")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise WireError(f"{what} must be binary, got {type(value).__name__}")
    return value


def _list(value: Any, what: str, size: int | None = None) -> list[Any]:
    if type(value) is not list:
        raise WireError(f"{what} must be an array, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise WireError(f"{what} must have {size} elements, got {len(value)}")
    return value


def _entry_from(obj: Any) -> Entry:
    term, index, kind, data = _list(obj, "an entry", 4)
    entry_kind = ENTRY_KINDS.get(_uint(kind, "an entry kind"))
    if entry_kind is None:
        raise WireError(f"unknown entry kind {kind}")
    return Entry(_uint(term, "an entry term"), _uint(index, "an entry index"), entry_kind,
                 _bytes(data, "entry data"))


def _snapshot_from(obj: Any) -> Snapshot | None:
    if obj is None:
        return None
    index, term, voters, data = _list(obj, "a snapshot", 4)
    return Snapshot(
        _uint(index, "the snapshot index"),
        _uint(term, "the snapshot term"),
        frozenset(_uint(v, "a voter id") for v in _list(voters, "the snapshot voters")),
        _bytes(data, "snapshot data"),
    )


def message_from_wire(obj: Any) -> Message:
    f = _list(obj, "a Raft message", _MESSAGE_FIELDS)
    try:
        type_ = MessageType(_uint(f[0], "a message type"))
    except ValueError:
        raise WireError(f"unknown Raft message type {f[0]}") from None
    return Message(
        type=type_,
        from_=_uint(f[1], "from"),
        to=_uint(f[2], "to"),
        term=_uint(f[3], "term"),
        log_term=_uint(f[4], "log_term"),
        index=_uint(f[5], "index"),
        entries=tuple(_entry_from(e) for e in _list(f[6], "the entries")),
        commit=_uint(f[7], "commit"),
        reject=_bool(f[8], "reject"),
        reject_hint=_uint(f[9], "reject_hint"),
        snapshot=_snapshot_from(f[10]),
        force=_bool(f[11], "force"),
    )


def _check_version(obj: Any, what: str) -> None:
    if type(obj) is not list or not obj:
        raise WireError(f"not {what} (expected a non-empty array)")
    version = obj[0]
    if type(version) is not int:
        raise WireError(f"not {what} (version {version!r:.40})")
    if version not in READABLE_VERSIONS:
        raise UnsupportedWireVersion(version)


def _group_id(value: Any) -> str:
    if type(value) is not str:
        raise WireError(f"a group id must be a string, got {type(value).__name__}")
    return value


def batch_from_wire(obj: Any) -> Batch:
    _check_version(obj, "a Raft batch")
    _, from_node, incarnation, messages = _list(obj, "a Raft batch", 4)
    out = []
    for item in _list(messages, "the batch messages"):
        group_id, message = _list(item, "a group message", 2)
        out.append((_group_id(group_id), message_from_wire(message)))
    return Batch(_uint(from_node, "from_node"), _uint(incarnation, "incarnation"), tuple(out))


def decode_batch(data: bytes | memoryview) -> Batch:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.FormatError, msgpack.StackError) as exc:
        # TypeError: a map keyed by an array or a map (unhashable in Python)
        raise WireError(f"not a Raft batch (undecodable msgpack: {exc})") from None
    return batch_from_wire(obj)


# -- snapshot chunks ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    from_node: int
    incarnation: int
    group_id: str
    message: Message  # SNAPSHOT, its snapshot's data empty
    offset: int
    total: int  # the size of the whole snapshot data
    data: bytes


def snapshot_header(m: Message) -> list[Any]:
    """`m` (a SNAPSHOT message) on the wire without its snapshot's data."""
    assert m.snapshot is not None, "a SNAPSHOT message without a snapshot"
    return message_to_wire(replace(m, snapshot=replace(m.snapshot, data=b"")))


def chunk_to_wire(from_node: int, incarnation: int, group_id: str, header: list[Any],
                  offset: int, total: int, data: bytes | memoryview) -> list[Any]:
    return [WIRE_VERSION, from_node, incarnation, group_id, header, offset, total, data]


def chunk_from_wire(obj: Any) -> SnapshotChunk:
    _check_version(obj, "a snapshot chunk")
    f = _list(obj, "a snapshot chunk", _CHUNK_FIELDS)
    message = message_from_wire(f[4])
    if message.type is not MessageType.SNAPSHOT or message.snapshot is None:
        raise WireError(f"a snapshot chunk must carry a SNAPSHOT message, got "
                        f"{message.type.name}")
    if message.snapshot.data:
        raise WireError("a snapshot chunk's message must carry no snapshot data")
    offset = _uint(f[5], "the chunk offset")
    total = _uint(f[6], "the snapshot size")
    data = _bytes(f[7], "chunk data")
    if offset + len(data) > total:
        raise WireError(f"a chunk of {len(data)} bytes at offset {offset} overruns the "
                        f"snapshot's {total} bytes")
    if not data and total:
        raise WireError("an empty chunk of a non-empty snapshot")
    return SnapshotChunk(_uint(f[1], "from_node"), _uint(f[2], "incarnation"),
                         _group_id(f[3]), message, offset, total, data)
