"""Differential: dead-lettering and TTL against RabbitMQ: the x-death header as RabbitMQ
builds it (everything but the time, which is only checked to be a timestamp), the order in
which messages with different TTLs expire (at the head only), and max-length drop order."""

from __future__ import annotations

import datetime
from typing import Any

import pika
import pytest

from tests.differential.harness import Names, drain_until, pika_connection

pytestmark = pytest.mark.rabbitmq


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


def dead_letter_scenario(url: str) -> list:
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    dlx, dead, work = names["dlx"], names["dead"], names["work"]
    trace: list = []
    try:
        ch.exchange_declare(dlx, "topic")
        ch.queue_declare(dead)
        ch.queue_bind(dead, dlx, "#")
        ch.queue_declare(work, arguments={"x-dead-letter-exchange": dlx,
                                          "x-max-length": 3})
        ch.exchange_declare(names["src"], "direct")
        ch.queue_bind(work, names["src"], "rk")
        props = pika.BasicProperties(headers={"app": "x", "CC": [work]}, expiration="60000")
        ch.basic_publish(names["src"], "rk", b"rejected-me", props)
        m = ch.basic_get(work)[0]
        ch.basic_reject(m.delivery_tag, requeue=False)
        for i in range(5):  # max-length 3: two oldest dropped
            ch.basic_publish("", work, f"len-{i}".encode())
        drain_until(conn, lambda: _count(ch, dead) == 3)
        while True:
            method, p, body = ch.basic_get(dead, auto_ack=True)
            if method is None:
                break
            trace.append([body.decode(), names.normalise(method.exchange),
                          names.normalise(method.routing_key), p.expiration,
                          _norm(names, p.headers)])
        return trace
    finally:
        for q in (dead, work):
            ch.queue_delete(q)
        for x in (dlx, names["src"]):
            ch.exchange_delete(x)
        conn.close()


def ttl_order_scenario(url: str) -> list:
    """Messages expire only at the head: a short TTL behind a long one waits."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q, dlx, dead = names["q"], names["dlx"], names["dead"]
    try:
        ch.exchange_declare(dlx, "fanout")
        ch.queue_declare(dead)
        ch.queue_bind(dead, dlx)
        ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
        ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="400"))
        ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="10"))
        ch.basic_publish("", q, b"none")
        drain_until(conn, lambda: _count(ch, dead) == 2, timeout_s=10)
        order = []
        while True:
            method, _, body = ch.basic_get(dead, auto_ack=True)
            if method is None:
                break
            order.append(body.decode())
        remaining = []
        while True:
            method, _, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                break
            remaining.append(body.decode())
        return [order, remaining]
    finally:
        ch.queue_delete(q)
        ch.queue_delete(dead)
        ch.exchange_delete(dlx)
        conn.close()


def test_x_death_matches_rabbitmq(differential):
    differential(dead_letter_scenario)


def test_ttl_expiry_order_matches_rabbitmq(differential):
    differential(ttl_order_scenario)


def priority_scenario(url: str) -> list:
    """Delivery order of a priority queue, with requeues, against RabbitMQ."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    ch.confirm_delivery()
    q = names["prio"]
    try:
        ch.queue_declare(q, arguments={"x-max-priority": 3})
        for i, prio in enumerate([0, 3, 1, None, 7, 2, 3, 1]):
            ch.basic_publish("", q, f"m{i}".encode(), pika.BasicProperties(priority=prio))
        first = [ch.basic_get(q)[0] for _ in range(3)]
        ch.basic_nack(first[2].delivery_tag, requeue=True)
        ch.basic_nack(first[0].delivery_tag, requeue=True)
        order = []
        while True:
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                break
            order.append([body.decode(), props.priority, method.redelivered])
        return order
    finally:
        ch.queue_delete(q)
        conn.close()


def test_priority_order_matches_rabbitmq(differential):
    differential(priority_scenario)
