"""The Raft wire codec: every message type and field survives a round trip through bytes;
foreign, future or malformed frames are refused with a WireError, never a crash."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warrenmq.cluster import wire
from warrenmq.raft import (
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
)
from warrenmq.replication.transport import Batch

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
IDS = st.integers(min_value=1, max_value=(1 << 63))
VOTERS = st.frozensets(IDS, max_size=7)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(EntryKind))
    if kind is EntryKind.CONF_CHANGE:
        op = draw(st.sampled_from(ConfChangeOp))
        data = ConfChange(op, draw(IDS), draw(VOTERS)).encode()
    else:
        data = draw(st.binary(max_size=64))
    return Entry(draw(U64), draw(U64), kind, data)


SNAPSHOTS = st.builds(Snapshot, index=U64, term=U64, voters=VOTERS, data=st.binary(max_size=64))


ANY_TYPE = st.sampled_from(MessageType)


def messages(types: st.SearchStrategy[MessageType] = ANY_TYPE) -> st.SearchStrategy[Message]:
    return st.builds(
        Message,
        type=types,
        from_=IDS,
        to=IDS,
        term=U64,
        log_term=U64,
        index=U64,
        entries=st.lists(entries(), max_size=4).map(tuple),
        commit=U64,
        reject=st.booleans(),
        reject_hint=U64,
        snapshot=st.none() | SNAPSHOTS,
        force=st.booleans(),
    )


BATCHES = st.builds(
    Batch,
    from_node=IDS,
    incarnation=st.integers(min_value=1, max_value=(1 << 63) - 1),
    messages=st.lists(st.tuples(st.text(max_size=20), messages()), max_size=5).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(BATCHES)
def test_any_batch_survives_the_round_trip(batch: Batch) -> None:
    data = wire.encode_batch(batch)
    assert isinstance(data, bytes)
    assert wire.decode_batch(data) == batch


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_message_type_round_trips(mtype: MessageType, data: st.DataObject) -> None:
    m = data.draw(messages(st.just(mtype)))
    batch = Batch(from_node=m.from_, incarnation=7, messages=(("q", m),))
    back = wire.decode_batch(wire.encode_batch(batch))
    (group, got), = back.messages
    assert group == "q" and got == m and got.type is mtype
    for e in got.entries:
        assert isinstance(e.kind, EntryKind)
        if e.kind is EntryKind.CONF_CHANGE:  # the change itself is intact, not just its bytes
            original = next(o for o in m.entries if o.index == e.index and o.data == e.data)
            assert ConfChange.decode(e.data) == ConfChange.decode(original.data)


def test_a_realistic_append_with_a_snapshot_and_conf_change() -> None:
    cc = ConfChange(ConfChangeOp.ADD, 3, frozenset({1, 2, 3}))
    m = Message(MessageType.APPEND, 1, 3, term=4, log_term=3, index=10,
                entries=(Entry(4, 11, EntryKind.NORMAL, b"x" * 1000),
                         Entry(4, 12, EntryKind.CONF_CHANGE, cc.encode())), commit=10)
    s = Message(MessageType.SNAPSHOT, 1, 3, term=4,
                snapshot=Snapshot(9, 3, frozenset({1, 2}), b"image"))
    r = Message(MessageType.APPEND_RESP, 3, 1, term=4, index=10, reject=True, reject_hint=5)
    batch = Batch(1, 99, (("meta", m), ("q1", s), ("q2", r)))
    assert wire.decode_batch(wire.encode_batch(batch)) == batch
    assert wire.decode_batch(wire.encode_batch(Batch(1, 99))) == Batch(1, 99)  # a heartbeat


def test_a_future_version_is_refused_with_a_clear_error() -> None:
    frame = wire.batch_to_wire(Batch(1, 5, (("q", Message(MessageType.HEARTBEAT, 1, 2, 3)),)))
    frame[0] = wire.WIRE_VERSION + 1
    frame.append({"a field": "from the future"})
    with pytest.raises(wire.UnsupportedWireVersion) as info:
        wire.decode_batch(msgpack.packb(frame, use_bin_type=True))
    text = str(info.value)
    assert f"wire version {wire.WIRE_VERSION + 1}" in text
    assert f"version {wire.WIRE_VERSION} only" in text and "incompatible" in text
    assert info.value.version == wire.WIRE_VERSION + 1


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\xc1", "undecodable"),
        (b"\x81\x90\x00", "undecodable"),  # a map keyed by an array
        (b"\xc7\x00\xff", "undecodable"),  # a malformed timestamp
        (msgpack.packb([1, 1, 1, []]) + b"\x00", "undecodable"),  # trailing bytes
        (msgpack.packb({"v": 1}), "non-empty array"),
        (msgpack.packb(["1", 1, 1, []]), "version"),
        (msgpack.packb([1, 1, 1]), "4 elements"),
        (msgpack.packb([1, -1, 1, []]), "from_node"),
        (msgpack.packb([1, 1, 1, [["q", [99] + [0] * 11]]]), "unknown Raft message type"),
        (msgpack.packb([1, 1, 1, [["q", [5] + [0] * 10]]]), "12 elements"),
        (msgpack.packb([1, 1, 1, [[7, [5] + [0] * 11]]]), "group id"),
        (msgpack.packb([1, 1, 1, [["q", [5, 1, 2, 3, 0, 0, [[1, 1, 9, b""]], 0, False, 0,
                                         None, False]]]]), "unknown entry kind"),
        (msgpack.packb([1, 1, 1, [["q", [5, 1, 2, 3, 0, 0, [], 0, 0, 0, None, False]]]]),
         "reject must be a boolean"),
        (msgpack.packb([1, 1, 1, [["q", [9, 1, 2, 3, 0, 0, [], 0, False, 0, [1, 1, [1], "s"],
                                         False]]]]), "snapshot data must be binary"),
    ],
)
def test_malformed_frames_are_refused(frame: bytes, why: str) -> None:
    with pytest.raises(wire.WireError, match=why):
        wire.decode_batch(frame)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_is_a_wire_error_or_a_batch(data: bytes) -> None:
    try:
        batch = wire.decode_batch(data)
    except wire.WireError:
        return
    assert isinstance(batch, Batch)
