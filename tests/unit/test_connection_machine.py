"""The sans-IO connection and channel machines, driven through a byte pipe."""

from __future__ import annotations

import struct

from pamqp import commands as C

from warrenmq.amqp.constants import PROTOCOL_HEADER
from warrenmq.core.connection import CLOSED, OPENED

from .pipe import Pipe, names


def test_handshake_dialogue():
    p = Pipe()
    start = p.feed(PROTOCOL_HEADER)
    assert names(start) == ["Connection.Start"]
    props = start[0][1].server_properties
    assert props["capabilities"]["publisher_confirms"] is True
    assert start[0][1].mechanisms == "PLAIN AMQPLAIN"
    tune = p.send(0, C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
    assert names(tune) == ["Connection.Tune"]
    assert (tune[0][1].channel_max, tune[0][1].frame_max, tune[0][1].heartbeat) == (
        2047, 131072, 60)
    ok = p.send(0, C.Connection.TuneOk(channel_max=10, frame_max=8192, heartbeat=5),
                C.Connection.Open(virtual_host="/"))
    assert names(ok) == ["Connection.OpenOk"]
    assert p.conn.state == OPENED
    assert (p.conn.channel_max, p.conn.frame_max, p.conn.heartbeat) == (10, 8192, 5)


def test_wrong_protocol_header_gets_ours_back_and_closes():
    p = Pipe()
    out = p.feed(b"AMQP\x00\x00\x09\x00")
    assert out == [(0, PROTOCOL_HEADER)]
    assert p.conn.close_transport


def test_input_split_byte_by_byte_is_the_same_dialogue():
    p = Pipe()
    p.open()
    p.send(1, C.Channel.Open())
    p.send(1, C.Queue.Declare(queue="q"))
    whole = Pipe(p.node, "c2")
    whole.open()
    from pamqp import frame as F
    from pamqp.body import ContentBody
    from pamqp.header import ContentHeader
    data = (F.marshal(C.Channel.Open(), 1)
            + F.marshal(C.Basic.Publish(routing_key="q"), 1)
            + F.marshal(ContentHeader(0, 5, C.Basic.Properties(message_id="m1")), 1)
            + F.marshal(ContentBody(b"hello"), 1)
            + F.marshal(C.Basic.Get(queue="q", no_ack=True), 1))
    frames = []
    for i in range(len(data)):
        frames += whole.feed(data[i:i + 1])
    assert names(frames) == ["Channel.OpenOk", "Basic.GetOk", "ContentHeader", "ContentBody"]
    assert frames[2][1].properties.message_id == "m1"
    assert frames[3][1].value == b"hello"


def test_bad_frame_end_is_a_frame_error():
    p = Pipe()
    p.open()
    bad = struct.pack(">BHI", 1, 0, 4) + b"\x00\x0a\x00\x32" + b"\x00"
    out = p.feed(bad)
    assert names(out) == ["Connection.Close"]
    assert out[0][1].reply_code == 501
    # after connection.close the server ignores everything but close-ok
    assert p.send(1, C.Channel.Open()) == []
    p.send(0, C.Connection.CloseOk())
    assert p.conn.state == CLOSED and p.conn.close_transport


def test_oversized_frame_is_refused_before_it_is_buffered():
    p = Pipe()
    p.open()
    out = p.feed(struct.pack(">BHI", 3, 1, 200_000))
    assert out[0][1].reply_code == 501


def test_channel_error_closes_only_the_channel_and_ignores_its_frames_until_close_ok():
    p = Pipe()
    p.open()
    p.send(1, C.Channel.Open())
    p.send(2, C.Channel.Open())
    out = p.send(1, C.Queue.Declare(queue="missing", passive=True))
    assert names(out) == ["Channel.Close"]
    close = out[0][1]
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
    assert close.reply_text == "NOT_FOUND - no queue 'missing' in vhost '/'"
    assert p.send(1, C.Queue.Declare(queue="x")) == []  # ignored while closing
    assert p.send(1, C.Channel.CloseOk()) == []
    assert names(p.send(1, C.Channel.Open())) == ["Channel.OpenOk"]
    assert names(p.send(2, C.Queue.Declare(queue="x"))) == ["Queue.DeclareOk"]


def test_publish_deliver_ack_and_requeue_order():
    p = Pipe()
    p.open()
    p.send(1, C.Channel.Open())
    p.send(1, C.Queue.Declare(queue="q"))
    for i in range(3):
        p.publish(1, "", "q", b"m%d" % i)
    p.send(1, C.Basic.Qos(prefetch_count=2))
    out = p.send(1, C.Basic.Consume(queue="q", consumer_tag="c"))
    assert names(out) == ["Basic.ConsumeOk"] + ["Basic.Deliver", "ContentHeader",
                                                  "ContentBody"] * 2
    bodies = [f.value for _, f in out if names([(0, f)]) == ["ContentBody"]]
    assert bodies == [b"m0", b"m1"]
    # reject the first with requeue: it comes back (redelivered) before m2
    out = p.send(1, C.Basic.Reject(delivery_tag=1, requeue=True))
    delivers = [f for _, f in out if f.name == "Basic.Deliver"]
    assert [(d.delivery_tag, d.redelivered) for d in delivers] == [(3, True)]
    out = p.send(1, C.Basic.Ack(delivery_tag=3, multiple=True))
    bodies = [f.value for _, f in out if names([(0, f)]) == ["ContentBody"]]
    assert bodies == [b"m2"]


def test_unknown_delivery_tag_is_precondition_failed():
    p = Pipe()
    p.open()
    p.send(1, C.Channel.Open())
    out = p.send(1, C.Basic.Ack(delivery_tag=7))
    assert out[0][1].reply_code == 406
    assert out[0][1].reply_text == "PRECONDITION_FAILED - unknown delivery tag 7"


def test_confirms_are_coalesced_into_one_multiple_ack_per_batch():
    p = Pipe()
    p.open()
    p.send(1, C.Channel.Open())
    p.send(1, C.Confirm.Select())
    from pamqp import frame as F
    from pamqp.body import ContentBody
    from pamqp.header import ContentHeader
    batch = b"".join(F.marshal(C.Basic.Publish(routing_key="nowhere"), 1)
                     + F.marshal(ContentHeader(0, 1, C.Basic.Properties()), 1)
                     + F.marshal(ContentBody(b"x"), 1) for _ in range(5))
    out = p.feed(batch)
    assert names(out) == ["Basic.Ack"]
    assert (out[0][1].delivery_tag, out[0][1].multiple) == (5, True)


def test_exclusive_queue_is_locked_to_its_connection_and_dies_with_it():
    a, node = Pipe(), None
    node = a.node
    b = Pipe(node, "c2")
    a.open()
    b.open()
    a.send(1, C.Channel.Open())
    b.send(1, C.Channel.Open())
    a.send(1, C.Queue.Declare(queue="ex", exclusive=True))
    out = b.send(1, C.Queue.Declare(queue="ex", passive=True))
    assert out[0][1].reply_code == 405
    a.send(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert node.live_queue("/", "ex") is None


def test_wrong_password_with_authentication_failure_close():
    p = Pipe()
    p.feed(PROTOCOL_HEADER)
    out = p.send(0, C.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism="PLAIN", response="\0guest\0nope"))
    assert names(out) == ["Connection.Close"]
    assert out[0][1].reply_code == 403


def test_guest_may_connect_only_from_loopback():
    """loopback_users (default: guest): a remote peer is refused like a wrong password."""
    p = Pipe()
    p.conn.peer = ("192.0.2.10", 40000)  # TEST-NET-1: never a real peer
    p.feed(PROTOCOL_HEADER)
    out = p.send(0, C.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism="PLAIN", response="\0guest\0guest"))
    assert [f.name for _, f in out] == ["Connection.Close"]
    assert out[0][1].reply_code == 403
    ok = Pipe(p.node, "c2")
    ok.conn.peer = ("::1", 40000)
    assert [f.name for _, f in ok.open()] == ["Connection.OpenOk"]


def test_malformed_publish_names_are_a_frame_error():
    """A routing key whose length runs past the frame is caught by the shared-names cache's
    decoder, not stored."""
    p = Pipe()
    p.open()
    p.send(1, C.Channel.Open())
    payload = b"\x00\x3c\x00\x28" + b"\x00\x00" + b"\x01x" + b"\x09ab" + b"\x00"
    out = p.feed(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
    assert out[0][1].reply_code == 501 and (out[0][1].class_id, out[0][1].method_id) == (60, 40)
