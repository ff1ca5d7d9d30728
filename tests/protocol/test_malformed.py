"""Malformed and hostile input on the wire, sent with the raw client after a good
handshake: every case must end in the connection.close RabbitMQ 3.10 sends
(reply code, class and method ids, the reply text's code-name prefix) or in the
connection being dropped, and must never disturb another client of the broker.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pika
import pytest
from pamqp import body as pbody
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader

from tests.support.node import Node
from tests.support.rawamqp import (
    RawClient,
    close_summary,
    method_payload,
    raw_frame,
)

QOS_ARGS = struct.pack(">IHB", 0, 10, 0)  # basic.qos prefetch_size=0 prefetch_count=10


def method(value: object, channel: int = 1) -> bytes:
    return pframe.marshal(value, channel)


def header(body_size: int, channel: int = 1) -> bytes:
    return pframe.marshal(pheader.ContentHeader(0, body_size, commands.Basic.Properties()), channel)


def body(data: bytes, channel: int = 1) -> bytes:
    return pframe.marshal(pbody.ContentBody(data), channel)


PUBLISH = method(commands.Basic.Publish(exchange="", routing_key="nowhere"))


@dataclass(frozen=True)
class Case:
    data: bytes
    reply: tuple[int, int, int]  # reply_code, class_id, method_id of connection.close
    text_prefix: str
    frame_max: int | None = None


CASES: dict[str, Case] = {
    "bad frame-end octet": Case(
        raw_frame(1, 1, method_payload(60, 10, QOS_ARGS), end=0x00), (501, 0, 0), "FRAME_ERROR - "),
    "frame larger than frame_max": Case(
        raw_frame(1, 1, method_payload(60, 10, QOS_ARGS + b"\0" * 5000)), (501, 0, 0),
        "FRAME_ERROR - ", frame_max=4096),
    "unknown frame type": Case(raw_frame(9, 1, b"abc"), (501, 0, 0), "FRAME_ERROR - "),
    "method frame shorter than its ids": Case(raw_frame(1, 1, b"\0"), (501, 0, 0), "FRAME_ERROR - "),
    "empty method frame": Case(raw_frame(1, 1, b""), (501, 0, 0), "FRAME_ERROR - "),
    "truncated basic.qos arguments": Case(
        raw_frame(1, 1, method_payload(60, 10, b"\0\0")), (501, 60, 10), "FRAME_ERROR - "),
    "truncated queue.declare arguments": Case(
        raw_frame(1, 1, method_payload(50, 10, b"\0\0\x05ab")), (501, 50, 10), "FRAME_ERROR - "),
    "short string longer than the frame": Case(
        raw_frame(1, 1, method_payload(50, 10, b"\0\0\xffq")), (501, 50, 10), "FRAME_ERROR - "),
    "garbage after the handshake": Case(b"\xde\xad\xbe\xef" * 16, (501, 0, 0), "FRAME_ERROR - "),
    "content header without a method": Case(header(3), (505, 0, 0), "UNEXPECTED_FRAME - "),
    "body frame without a header": Case(body(b"abc"), (505, 0, 0), "UNEXPECTED_FRAME - "),
    "content header after a method without content": Case(
        raw_frame(1, 1, method_payload(60, 10, QOS_ARGS)) + header(3), (505, 0, 0),
        "UNEXPECTED_FRAME - "),
    "method instead of the content header": Case(
        PUBLISH + method(commands.Basic.Qos(prefetch_count=1)), (505, 60, 40),
        "UNEXPECTED_FRAME - "),
    "method instead of the content body": Case(
        PUBLISH + header(10) + method(commands.Basic.Qos(prefetch_count=1)), (505, 60, 40),
        "UNEXPECTED_FRAME - "),
    "content header of the wrong class": Case(
        PUBLISH + raw_frame(2, 1, struct.pack(">HHQH", 50, 0, 3, 0)), (505, 60, 40),
        "UNEXPECTED_FRAME - "),
    "content header on another channel": Case(PUBLISH + header(3, channel=2), (505, 0, 0),
                                              "UNEXPECTED_FRAME - "),
    "body frame on channel 0": Case(body(b"abc", channel=0), (505, 0, 0), "UNEXPECTED_FRAME - "),
    "heartbeat on a channel": Case(raw_frame(8, 1, b""), (505, 0, 0), "UNEXPECTED_FRAME - "),
    "method on a channel never opened": Case(
        raw_frame(1, 5, method_payload(60, 10, QOS_ARGS)), (504, 60, 10),
        "CHANNEL_ERROR - expected 'channel.open'"),
    "channel method on channel 0": Case(
        raw_frame(1, 0, method_payload(60, 10, QOS_ARGS)), (504, 60, 10), "CHANNEL_ERROR - "),
    "connection method on a channel": Case(
        method(commands.Connection.Open()), (503, 10, 40), "COMMAND_INVALID - "),
}


@pytest.fixture
def bystander(broker: Node) -> Iterator[Callable[[], None]]:
    """An already-open pika connection; calling it checks it still publishes and gets."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url()))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    sent = [0]

    def still_served() -> None:
        sent[0] += 1
        payload = f"still here {sent[0]}".encode()
        ch.basic_publish("", queue, payload)
        method_frame, _, got = ch.basic_get(queue, auto_ack=True)
        assert got == payload and method_frame.message_count == 0

    still_served()
    yield still_served
    conn.close()


def hostile(broker: Node, frame_max: int | None = None) -> RawClient:
    c = RawClient(broker.host, broker.port, timeout_s=5).connect()
    c.handshake(frame_max=frame_max)
    c.open_channel(1)
    return c


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_closes_the_connection(broker: Node, bystander, name: str):
    case = CASES[name]
    with hostile(broker, case.frame_max) as c:
        c.send(case.data)
        close = c.expect_connection_close(wait_closed=False)
    code, class_id, method_id, text = close_summary(close)
    assert (code, class_id, method_id) == case.reply
    assert text.startswith(case.text_prefix)
    bystander()


def test_frame_of_exactly_frame_max_is_accepted(broker: Node, bystander):
    """A frame whose total size equals frame_max is legal (the body frame is then
    rejected only because no method preceded it)."""
    with hostile(broker, frame_max=4096) as c:
        c.send(raw_frame(3, 1, b"\0" * (4096 - 8)))
        close = c.expect_connection_close(wait_closed=False)
    assert close_summary(close)[:3] == (505, 0, 0)
    bystander()


def test_server_closes_the_socket_after_a_frame_error(broker: Node, bystander):
    with hostile(broker) as c:
        c.send(raw_frame(9, 1, b"abc"))
        assert c.expect_connection_close(timeout_s=10).reply_code == 501
    bystander()


@pytest.mark.parametrize("data", [
    raw_frame(1, 1, method_payload(99, 1)),
    raw_frame(1, 1, method_payload(60, 999)),
    raw_frame(1, 0, method_payload(10, 99)),
], ids=["unknown class", "unknown method", "unknown connection method"])
def test_unknown_method_ends_the_connection(broker: Node, bystander, data: bytes):
    """RabbitMQ 3.10 drops the TCP connection without a connection.close here (its reader
    crashes on the lookup); the spec's answer would be 503 or 540 in a connection.close,
    which is accepted too."""
    with hostile(broker) as c:
        c.send(data)
        frames = [f.frame for f in c.read_until_closed(10)]
    closes = [f for f in frames if isinstance(f, commands.Connection.Close)]
    assert all(f.reply_code in (503, 540) for f in closes)
    assert all(isinstance(f, commands.Connection.Close) for f in frames if f.name != "Heartbeat")
    bystander()


def test_unknown_field_table_type_ends_the_connection(broker: Node, bystander):
    """queue.declare whose arguments table holds an undefined field type 'Z'."""
    table = b"\x01aZ\0\0"
    args = b"\0\0" + b"\x01q" + b"\0" + struct.pack(">I", len(table)) + table
    with hostile(broker) as c:
        c.send(raw_frame(1, 1, method_payload(50, 10, args)))
        frames = [f.frame for f in c.read_until_closed(10)]
    closes = [f for f in frames if isinstance(f, commands.Connection.Close)]
    assert all(f.reply_code in (501, 502) for f in closes)
    assert not any(isinstance(f, commands.Queue.DeclareOk) for f in frames)
    bystander()


def test_body_longer_than_declared_size(broker: Node, bystander):
    """RabbitMQ keeps waiting for the content to complete, so the next method is an
    unexpected frame; a broker that rejects the oversized body at once (501) is fine too."""
    with hostile(broker) as c:
        c.send(PUBLISH + header(3) + body(b"abcde") + method(commands.Basic.Qos(prefetch_count=1)))
        close = c.expect_connection_close(wait_closed=False)
    assert close_summary(close)[:3] in ((505, 60, 40), (501, 0, 0))
    bystander()


@pytest.mark.parametrize("cut", [
    b"\x01\x00",  # inside a frame header
    raw_frame(1, 1, method_payload(60, 10, QOS_ARGS))[:9],  # inside a method frame
    PUBLISH + header(100),  # inside a message's content
    PUBLISH + header(100) + body(b"x" * 40)[:20],  # inside a body frame
], ids=["frame header", "method", "content", "body frame"])
def test_client_disconnects_mid_frame(broker: Node, bystander, cut: bytes):
    with hostile(broker) as c:
        c.send(cut)
    bystander()
    # the broker still accepts new connections and serves them
    with hostile(broker) as again:
        again.send_method(commands.Queue.Declare(queue="", exclusive=True), 1)
        assert isinstance(again.read_method().frame, commands.Queue.DeclareOk)


def test_frames_after_a_connection_error_are_ignored(broker: Node, bystander):
    """Once the server has sent connection.close it discards everything but close-ok."""
    with hostile(broker) as c:
        c.send(body(b"abc"))
        c.send(method(commands.Queue.Declare(queue="", exclusive=True)))
        close = c.expect(commands.Connection.Close)
        assert close.reply_code == 505
        c.send(method(commands.Basic.Qos(prefetch_count=1)))
        c.send_method(commands.Connection.CloseOk())
        frames = c.read_until_closed(10)
    assert [f.name for f in frames if f.name != "Heartbeat"] == []
    bystander()
