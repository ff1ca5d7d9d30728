"""Priority queues, single active consumer, consumer priorities, alternate exchanges,
sender-selected distribution (CC/BCC) and direct reply-to, as RabbitMQ documents them, on
classic and quorum queues alike where RabbitMQ has the feature for both (x-max-priority is
classic only; a quorum queue has RabbitMQ 4.x's two priorities: see
tests/features/test_quorum_priorities.py)."""

from __future__ import annotations

import time

import pika
import pytest

from tests.conftest import unique
from tests.features.conftest import pump


def _get_all(ch, queue: str) -> list[bytes]:
    out = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def test_priority_queue_delivers_higher_priorities_first(ch):
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-priority": 5}).method.queue
    for body, prio in [(b"low-1", 1), (b"none", None), (b"high-1", 5), (b"mid", 3),
                       (b"too-high", 9), (b"low-2", 1), (b"high-2", 5)]:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    assert _get_all(ch, q) == [b"high-1", b"too-high", b"high-2", b"mid", b"low-1", b"low-2",
                               b"none"]


def test_priority_queue_requeue_keeps_order_within_a_priority(ch):
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-priority": 2}).method.queue
    for body, prio in [(b"a", 1), (b"b", 1), (b"c", 2)]:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]  # c, a, b
    ch.basic_nack(tags[1], requeue=True)  # a back first
    ch.basic_nack(tags[0], requeue=True)  # then c
    assert _get_all(ch, q) == [b"c", b"a"]


def test_the_priority_property_without_x_max_priority(ch, declare, queue_type):
    q = declare(ch)
    for body, prio in [(b"n1", 1), (b"n2", None), (b"h1", 9), (b"h2", 5), (b"h3", 7)]:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    if queue_type == "classic":  # not a priority queue: FIFO
        assert _get_all(ch, q) == [b"n1", b"n2", b"h1", b"h2", b"h3"]
    else:  # RabbitMQ 4.x: above 4 first, two for one normal (the older of the two heads)
        assert _get_all(ch, q) == [b"h1", b"h2", b"n1", b"h3", b"n2"]


def test_single_active_consumer_fails_over_in_order(conn, ch, declare):
    q = declare(ch, unique("sac"), {"x-single-active-consumer": True})
    got: dict[str, list[bytes]] = {"first": [], "second": []}
    c1 = ch.basic_consume(q, lambda c, m, p, b: got["first"].append(b), auto_ack=True)
    ch.basic_consume(q, lambda c, m, p, b: got["second"].append(b), auto_ack=True)
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    pump(conn, lambda: len(got["first"]) == 4)
    assert got["second"] == []
    ch.basic_cancel(c1)
    ch.basic_publish("", q, b"after")
    pump(conn, lambda: got["second"] == [b"after"])


def test_consumer_priorities_serve_the_highest_with_room_first(conn, ch, declare):
    q = declare(ch, unique("cprio"))
    low, high = conn.channel(), conn.channel()
    high.basic_qos(prefetch_count=2)
    got: dict[str, list[bytes]] = {"low": [], "high": []}
    low.basic_consume(q, lambda c, m, p, b: got["low"].append(b), auto_ack=False,
                      arguments={"x-priority": 1})
    high.basic_consume(q, lambda c, m, p, b: got["high"].append(b), auto_ack=False,
                       arguments={"x-priority": 10})
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    # the high-priority consumer takes all it may hold; the rest goes to the low one
    pump(conn, lambda: len(got["high"]) == 2 and len(got["low"]) == 1)
    assert got == {"high": [b"m0", b"m1"], "low": [b"m2"]}


def test_alternate_exchange_gets_the_unroutable_into_either_queue_type(ch, declare):
    ae, x = unique("ae"), unique("x")
    ch.exchange_declare(ae, "fanout", auto_delete=True)
    ch.exchange_declare(x, "direct", auto_delete=True, arguments={"alternate-exchange": ae})
    routed, unrouted = declare(ch), declare(ch)
    ch.queue_bind(routed, x, "known")
    ch.queue_bind(unrouted, ae)
    ch.basic_publish(x, "known", b"routed")
    ch.basic_publish(x, "unknown", b"unrouted")
    assert _get_all(ch, routed) == [b"routed"]
    assert _get_all(ch, unrouted) == [b"unrouted"]


def test_cc_and_bcc_add_routing_keys_and_bcc_is_stripped(ch, declare):
    x = unique("cc")
    ch.exchange_declare(x, "direct", auto_delete=True)
    queues = {}
    for key in ("main", "copy", "blind"):
        queues[key] = declare(ch)
        ch.queue_bind(queues[key], x, key)
    ch.basic_publish(x, "main", b"hello",
                     pika.BasicProperties(headers={"CC": ["copy"], "BCC": ["blind"], "n": 1}))
    for key in ("main", "copy", "blind"):
        method, props, body = ch.basic_get(queues[key], auto_ack=True)
        assert body == b"hello" and method.routing_key == "main"
        assert props.headers["CC"] == ["copy"] and props.headers["n"] == 1
        assert "BCC" not in props.headers


def test_direct_reply_to_round_trip(conn, broker, declare):
    server_conn = pika.BlockingConnection(pika.URLParameters(broker.url()))
    server = server_conn.channel()
    rpc_queue = declare(server)  # the requests' queue, of either type

    client = conn.channel()
    replies: list[tuple[bytes, str]] = []
    client.basic_consume("amq.rabbitmq.reply-to",
                         lambda c, m, p, b: replies.append((b, p.correlation_id)),
                         auto_ack=True)
    client.basic_publish("", rpc_queue, b"ping", pika.BasicProperties(
        reply_to="amq.rabbitmq.reply-to", correlation_id="42"))
    method, props, body = None, None, None
    deadline = time.monotonic() + 5
    while method is None:
        assert time.monotonic() < deadline
        method, props, body = server.basic_get(rpc_queue, auto_ack=True)
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.")
    server.basic_publish("", props.reply_to, b"pong",
                         pika.BasicProperties(correlation_id=props.correlation_id))
    pump(conn, lambda: replies == [(b"pong", "42")])
    server_conn.close()


def test_direct_reply_to_needs_a_no_ack_consumer(conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=False)
    assert e.value.reply_code == 406
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(q, passive=True)
    assert e.value.reply_code == 406
    assert "fast reply consumer does not exist" in e.value.reply_text
