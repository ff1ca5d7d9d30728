"""Differential: quorum queues against RabbitMQ 3.10. The x-death header of every dead-letter
reason a quorum queue has (rejected, expired, maxlen, delivery_limit), the delivery limit and
the x-delivery-count header (on basic.get, on consumer redeliveries, after a channel closes
with unacknowledged messages), the order in which TTLs expire, what a consumer with a large
prefetch leaves behind when cancelled or closed (this broker reads ahead for it), and what a
quorum queue does not support and how a client learns it.

One deliberate difference: message priorities. RabbitMQ 3.10 ignores the priority property
on a quorum queue (FIFO); this broker orders as RabbitMQ 4.0 to 4.2 do (priorities above 4
first, 2:1 with the others), and the last test here pins both sides of that difference.
`x-max-priority` is refused by both, as by 4.x."""

from __future__ import annotations

import datetime
from typing import Any

import pika
import pytest

from tests.differential.harness import Names, drain_until, pika_connection

pytestmark = pytest.mark.rabbitmq

QUORUM = {"x-queue-type": "quorum"}


def _norm(names: Names, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _norm(names, v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_norm(names, v) for v in value]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return names.normalise(value)
    if isinstance(value, datetime.datetime):
        return "<time>"
    return value


def _count(ch, q: str) -> int:
    return ch.queue_declare(q, passive=True).method.message_count


def _drain(names: Names, ch, q: str) -> list:
    out = []
    while True:
        method, props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            return out
        out.append([body.decode(), names.normalise(method.exchange),
                    names.normalise(method.routing_key), method.redelivered, props.expiration,
                    _norm(names, props.headers)])


def quorum_dead_letter_scenario(url: str) -> list:
    """Rejected (published with CC and a TTL), poison (over the delivery limit), maxlen (drop
    head): the dead letters as the dead-letter queue gets them, and what the consumer saw."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    dlx, dead, work, src = names["dlx"], names["dead"], names["work"], names["src"]
    trace: list = []
    try:
        ch.exchange_declare(dlx, "topic")
        ch.queue_declare(dead)
        ch.queue_bind(dead, dlx, "#")
        ch.queue_declare(work, durable=True, arguments={
            **QUORUM, "x-dead-letter-exchange": dlx, "x-max-length": 3,
            "x-delivery-limit": 1})
        ch.exchange_declare(src, "direct")
        ch.queue_bind(work, src, "rk")
        props = pika.BasicProperties(headers={"app": "x", "CC": [work]}, expiration="60000")
        ch.basic_publish(src, "rk", b"rejected-me", props)
        method, p, _ = ch.basic_get(work)
        trace.append(["got", method.redelivered, _norm(names, p.headers)])
        ch.basic_reject(method.delivery_tag, requeue=False)
        drain_until(conn, lambda: _count(ch, dead) == 1)
        ch.basic_publish("", work, b"poison", pika.BasicProperties(headers={"try": 1}))
        for _ in range(3):
            method, p, _ = ch.basic_get(work)
            if method is None:
                trace.append("empty")
                break
            trace.append(["got", method.redelivered, _norm(names, p.headers)])
            ch.basic_nack(method.delivery_tag, requeue=True)
        drain_until(conn, lambda: _count(ch, dead) == 2)
        for i in range(5):  # max-length 3: the two oldest are dropped
            ch.basic_publish("", work, f"len-{i}".encode())
        drain_until(conn, lambda: _count(ch, dead) == 4)
        trace.append(_drain(names, ch, dead))
        trace.append(_drain(names, ch, work))
        return trace
    finally:
        for q in (dead, work):
            ch.queue_delete(q)
        for x in (dlx, src):
            ch.exchange_delete(x)
        conn.close()


def quorum_ttl_scenario(url: str) -> list:
    """Message TTL on a quorum queue (per message and per queue), into a dead-letter routing
    key: which expire, in what order (at the head only), and their x-death."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q, dlx, dead = names["q"], names["dlx"], names["dead"]
    try:
        ch.exchange_declare(dlx, "direct")
        ch.queue_declare(dead)
        ch.queue_bind(dead, dlx, "expired-key")
        ch.queue_declare(q, durable=True, arguments={
            **QUORUM, "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "expired-key",
            "x-message-ttl": 600})
        ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="300"))
        ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="10"))
        ch.basic_publish("", q, b"queue-ttl")
        drain_until(conn, lambda: _count(ch, dead) == 3, timeout_s=15)
        return _drain(names, ch, dead)
    finally:
        ch.queue_delete(q)
        ch.queue_delete(dead)
        ch.exchange_delete(dlx)
        conn.close()


def delivery_limit_scenario(url: str, limit: Any) -> list:
    """How many times a message that always fails is delivered under `limit`, with the
    redelivered flag and x-delivery-count each time: by basic.get until it is gone; then, on
    a queue of its own, by a consumer that nacks the first delivery and closes its channel at
    once (its redelivery and the close race: either way both count), then by basic.get."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    trace: list = []

    def get_until_gone(q: str) -> None:
        for _ in range(4):
            method, p, _ = ch.basic_get(q)
            if method is None:
                trace.append("gone")
                return
            trace.append([method.redelivered, _norm(names, p.headers)])
            ch.basic_nack(method.delivery_tag, requeue=True)
        trace.append("still there")

    try:
        for q in (names["by-get"], names["by-consumer"]):
            ch.queue_declare(q, durable=True, arguments={**QUORUM, "x-delivery-limit": limit})
        ch.basic_publish("", names["by-get"], b"m")
        get_until_gone(names["by-get"])
        ch.basic_publish("", names["by-consumer"], b"m")
        seen: list = []

        def fail_once(c, m, p, b) -> None:
            seen.append([m.redelivered, _norm(names, p.headers)])
            if len(seen) == 1:
                c.basic_nack(m.delivery_tag, requeue=True)

        worker = conn.channel()
        worker.basic_consume(names["by-consumer"], fail_once)
        drain_until(conn, lambda: seen)
        worker.close()
        trace.append(seen[:1])
        get_until_gone(names["by-consumer"])
        return trace
    finally:
        for q in (names["by-get"], names["by-consumer"]):
            ch.queue_delete(q)
        conn.close()


def unsupported_scenario(url: str) -> list:
    """What a quorum queue refuses at declare or consume, and what it takes but ignores."""
    names = Names()
    trace: list = []
    conn = pika_connection(url)
    for i, (args, kwargs) in enumerate([
            ({"x-max-priority": 5}, {"durable": True}),
            ({"x-queue-mode": "lazy"}, {"durable": True}),
            ({"x-queue-master-locator": "min-masters"}, {"durable": True}),
            ({"x-max-priority": 5}, {"durable": False}),  # which check comes first
            ({}, {"durable": False}),
            ({}, {"durable": True, "exclusive": True}),
            ({}, {"durable": True, "auto_delete": True}),
            ({"x-dead-letter-strategy": "sometimes"}, {"durable": True}),
            ({"x-expires": 0}, {"durable": True})]):
        ch = conn.channel()
        name = names[f"refused{i}"]
        try:
            ch.queue_declare(name, arguments={**QUORUM, **args}, **kwargs)
            trace.append("declared")
            ch.queue_delete(name)
            ch.close()
        except pika.exceptions.ChannelClosedByBroker as e:
            trace.append([e.reply_code, names.normalise(e.reply_text)])
    ch = conn.channel()
    ch.confirm_delivery()
    q = names["fallback"]
    try:
        # drop-head; priorities of 4 and less are all "normal" to RabbitMQ 4.x and to this
        # broker, so FIFO as in 3.10 (above 4: see
        # test_message_priorities_deliberately_follow_rabbitmq_4_not_3_10; reject-publish-dlx:
        # see test_reject_publish_dlx_deliberately_honoured_unlike_rabbitmq_3_10)
        ch.queue_declare(q, durable=True, arguments={**QUORUM, "x-max-length": 2})
        for body, priority in [(b"a", 1), (b"b", None), (b"c", 4)]:
            ch.basic_publish("", q, body, pika.BasicProperties(priority=priority))
        trace.append([b.decode() for b in _bodies(ch, q)])
    finally:
        ch.queue_delete(q)
    gq = names["global"]
    ch.queue_declare(gq, durable=True, arguments=QUORUM)
    other = pika_connection(url)
    try:
        och = other.channel()
        och.basic_qos(prefetch_count=5, global_qos=True)
        och.basic_consume(gq, lambda *a: None)
        trace.append("consumed")
        other.close()
    except pika.exceptions.ConnectionClosedByBroker as e:
        trace.append([e.reply_code, names.normalise(e.reply_text)])
    finally:
        ch.queue_delete(gq)
        conn.close()
    return trace


def _bodies(ch, q: str) -> list[bytes]:
    out = []
    while True:
        method, _, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def test_quorum_x_death_matches_rabbitmq(differential):
    differential(quorum_dead_letter_scenario)


def test_quorum_ttl_expiry_matches_rabbitmq(differential):
    differential(quorum_ttl_scenario)


@pytest.mark.parametrize("limit", [0, 2, -1, "not a number"])
def test_delivery_limit_and_delivery_count_match_rabbitmq(differential, limit):
    differential(delivery_limit_scenario, limit)


def test_what_quorum_queues_refuse_or_ignore_matches_rabbitmq(differential):
    differential(unsupported_scenario)


def priority_scenario(url: str) -> list:
    """Messages with priorities on both sides of 4 in a quorum queue (with a delivery limit,
    so that a requeued message comes back first in both): what basic.get takes first, and
    the order of the rest once that one is requeued."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q = names["prio"]
    try:
        ch.queue_declare(q, durable=True, arguments={**QUORUM, "x-delivery-limit": 5})
        for body, priority in [(b"n1", 1), (b"n2", None), (b"h1", 9), (b"h2", 5), (b"h3", 7),
                               (b"n3", 0)]:
            ch.basic_publish("", q, body, pika.BasicProperties(priority=priority))
        method, _, first = ch.basic_get(q)
        ch.basic_nack(method.delivery_tag, requeue=True)
        return [first.decode(), [b.decode() for b in _bodies(ch, q)]]
    finally:
        ch.queue_delete(q)
        conn.close()


def test_message_priorities_deliberately_follow_rabbitmq_4_not_3_10(broker, rabbitmq):
    # RabbitMQ 3.10: FIFO whatever the priority property
    assert priority_scenario(rabbitmq.url()) == ["n1", ["n1", "n2", "h1", "h2", "h3", "n3"]]
    # this broker, as RabbitMQ 4.x: above 4 is high, two high for one normal (the older
    # head on normal's turn); the requeued message comes back first
    assert priority_scenario(broker.url()) == ["h1", ["h1", "h2", "n1", "h3", "n2", "n3"]]


def requeue_order_scenario(url: str, limit: int | None) -> list:
    """A consumer (prefetch 1) requeues its first delivery and acknowledges the others:
    where the requeued message goes, with and without a delivery limit."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q = names["requeue"]
    limit_arg = {} if limit is None else {"x-delivery-limit": limit}
    seen: list = []
    try:
        ch.queue_declare(q, durable=True, arguments={**QUORUM, **limit_arg})
        for i in range(1, 5):
            ch.basic_publish("", q, f"m{i}".encode())

        def on_message(c, m, p, b) -> None:
            seen.append([b.decode(), m.redelivered, _norm(names, p.headers)])
            if len(seen) == 1:
                c.basic_nack(m.delivery_tag, requeue=True)
            else:
                c.basic_ack(m.delivery_tag)

        consumer = conn.channel()
        consumer.basic_qos(prefetch_count=1)
        consumer.basic_consume(q, on_message)
        drain_until(conn, lambda: len(seen) == 5)
        consumer.close()
        return seen
    finally:
        ch.queue_delete(q)
        conn.close()


@pytest.mark.parametrize("limit", [None, 5])
def test_where_a_requeued_message_goes_matches_rabbitmq(differential, limit):
    # without a delivery limit RabbitMQ re-appends it (behind the others), with one it comes
    # back first (4.x does the same, the re-appended message as normal priority)
    differential(requeue_order_scenario, limit)


def reject_publish_dlx_scenario(url: str) -> list:
    """A quorum queue declared with `x-overflow: reject-publish-dlx`, max length 1, and a
    dead-letter queue: what a confirmed publisher is told, what each queue holds."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q, dead = names["full"], names["dead"]
    try:
        ch.queue_declare(dead)
        ch.queue_declare(q, durable=True, arguments={
            **QUORUM, "x-max-length": 1, "x-overflow": "reject-publish-dlx",
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
        told = []
        for body in (b"first", b"second"):
            try:
                ch.basic_publish("", q, body)
                told.append("ack")
            except pika.exceptions.NackError:
                told.append("nack")
        drain_until(conn, lambda: ch.queue_declare(dead, passive=True).method.message_count
                    >= 1)
        return [told, [b.decode() for b in _bodies(ch, q)],
                [b.decode() for b in _bodies(ch, dead)]]
    finally:
        ch.queue_delete(q)
        ch.queue_delete(dead)
        conn.close()


def test_reject_publish_dlx_deliberately_honoured_unlike_rabbitmq_3_10(broker, rabbitmq):
    # RabbitMQ 3.10 takes the argument and acts as drop-head: the oldest message goes
    assert reject_publish_dlx_scenario(rabbitmq.url()) == [["ack", "ack"], ["second"], ["first"]]
    # this broker does what the argument asks, as for a classic queue: the new one is refused
    # (nacked) and dead-lettered, the queue keeps what it had
    assert reject_publish_dlx_scenario(broker.url()) == [["ack", "nack"], ["first"], ["second"]]


def prefetch_handover_scenario(url: str, how: str) -> list:
    """A consumer with prefetch 100 (one this broker reads ahead for) takes its 100 of 300
    messages, then is cancelled (`how` = "cancel") or its channel closed ("close"); a second
    consumer takes what is left. The ready count meanwhile, and what the second one gets:
    each message with its redelivered flag and x-delivery-count."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q = names["handover"]
    try:
        ch.queue_declare(q, durable=True, arguments=QUORUM)
        for i in range(300):
            ch.basic_publish("", q, str(i).encode(), pika.BasicProperties(delivery_mode=2))
        first: list = []
        taker = conn.channel()
        taker.basic_qos(prefetch_count=100)
        tag = taker.basic_consume(q, lambda c, m, p, b: first.append(m.delivery_tag))
        drain_until(conn, lambda: len(first) >= 100)
        ready = _count(ch, q)
        if how == "cancel":
            taker.basic_cancel(tag)
        else:
            taker.close()
        later: list = []
        second = conn.channel()
        second.basic_consume(q, lambda c, m, p, b: later.append(
            [int(b), m.redelivered, (p.headers or {}).get("x-delivery-count")]), auto_ack=True)
        left = 200 if how == "cancel" else 300
        drain_until(conn, lambda: len(later) >= left)
        if how == "cancel":
            taker.basic_ack(0, multiple=True)  # the first client's are still its to ack
        drain_until(conn, lambda: _count(ch, q) == 0)
        return [len(first), ready, sorted(later)]
    finally:
        ch.queue_delete(q)
        conn.close()


@pytest.mark.parametrize("how", ["cancel", "close"])
def test_what_a_large_prefetch_consumer_leaves_behind_matches_rabbitmq(differential, how):
    # this broker holds a second prefetch's worth back on the consumer's node (read-ahead):
    # it counts as ready, and comes back as never delivered
    differential(prefetch_handover_scenario, how)


def _three_messages(ch, q: str, limit: int | None) -> None:
    """A quorum queue `q`, with a delivery limit unless `limit` is None, holding m1..m3."""
    limit_arg = {} if limit is None else {"x-delivery-limit": limit}
    ch.queue_declare(q, durable=True, arguments={**QUORUM, **limit_arg})
    for i in range(1, 4):
        ch.basic_publish("", q, f"m{i}".encode())


def get_nack_scenario(url: str, limit: int | None) -> list:
    """basic.get takes the head, then nacks it with requeue: where it goes, with and without a
    delivery limit."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q = names["getnack"]
    try:
        _three_messages(ch, q, limit)
        method, _, first = ch.basic_get(q)
        ch.basic_nack(method.delivery_tag, requeue=True)
        return [first.decode(), _drain(names, ch, q)]
    finally:
        ch.queue_delete(q)
        conn.close()


@pytest.mark.parametrize("limit", [None, 5])
def test_where_a_got_and_requeued_message_goes_matches_rabbitmq(differential, limit):
    differential(get_nack_scenario, limit)


def cancel_then_nack_scenario(url: str, limit: int | None) -> list:
    """A consumer (prefetch 1) takes the first message, is cancelled, then nacks it with
    requeue: where it goes, with and without a delivery limit."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q = names["cancelnack"]
    try:
        _three_messages(ch, q, limit)
        tags: list = []
        consumer = conn.channel()
        consumer.basic_qos(prefetch_count=1)
        ctag = consumer.basic_consume(q, lambda c, m, p, b: tags.append(m.delivery_tag))
        drain_until(conn, lambda: len(tags) == 1)
        consumer.basic_cancel(ctag)
        consumer.basic_nack(tags[0], requeue=True)
        drain_until(conn, lambda: _count(ch, q) == 3)
        return _drain(names, ch, q)
    finally:
        ch.queue_delete(q)
        conn.close()


@pytest.mark.parametrize("limit", [None, 5])
def test_where_a_cancelled_consumers_requeue_goes_matches_rabbitmq(differential, limit):
    differential(cancel_then_nack_scenario, limit)
