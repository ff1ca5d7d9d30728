"""Fuzzing the frame parser and the connection machine: arbitrary bytes after a good
handshake, or instead of one, never raise out of receive_data, never leave the node with
output it cannot encode, and always end in a connection.close or silence, never a crash."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as C

from warrenmq.amqp.constants import PROTOCOL_HEADER
from warrenmq.core.connection import CLOSED, CLOSING, OPENED

from .pipe import Pipe


def _frame(ftype: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes([end])


frames = st.builds(
    _frame,
    st.sampled_from([1, 2, 3, 4, 8, 9]),
    st.sampled_from([0, 1, 2, 65535]),
    st.one_of(
        st.binary(max_size=40),
        st.builds(lambda c, m, rest: struct.pack(">HH", c, m) + rest,
                  st.sampled_from([10, 20, 40, 50, 60, 85, 90, 99]),
                  st.sampled_from([10, 11, 20, 21, 30, 40, 41, 50, 60, 70, 80, 90, 120]),
                  st.binary(max_size=40)),
    ),
    st.sampled_from([0xCE, 0xCE, 0xCE, 0x00]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(frames, st.binary(max_size=20)), max_size=12), st.integers(1, 7))
def test_arbitrary_frames_after_the_handshake(chunks, split):
    p = Pipe()
    p.open()
    p.send(1, C.Channel.Open())
    data = b"".join(chunks)
    for i in range(0, len(data), split):
        p.feed(data[i:i + split])  # must not raise
    assert p.conn.state in (OPENED, CLOSING, CLOSED)
    # the node still serves a fresh connection
    other = Pipe(p.node, "c2")
    other.open()
    out = other.send(1, C.Channel.Open())
    assert [f.name for _, f in out] == ["Channel.OpenOk"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_instead_of_a_handshake(data):
    p = Pipe()
    p.feed(PROTOCOL_HEADER + data)
    p.feed(data)
    assert p.conn.state <= CLOSED
