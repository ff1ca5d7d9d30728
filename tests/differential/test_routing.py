"""Differential: topic matching (binding keys x routing keys with `*`, `#`, empty words)
and headers exchange matching (x-match all/any, types, x- keys), compared with RabbitMQ."""

from __future__ import annotations

from typing import Any

import pika
import pytest

from tests.differential.harness import Names, pika_connection

pytestmark = pytest.mark.rabbitmq

TOPIC_BINDINGS = [
    "#", "*", "", "a", "a.*", "a.#", "#.b", "a.#.b", "#.#", "*.*", "a.*.b", "*.b.*", "a..b",
    "a.*.#", "#.a.#", "*.#", "#.*", "a.b.c", "*.*.*", "a.#.#.b", "#.b.#", ".", "a.", ".a",
    "*.", "#.", "A.b",
]
TOPIC_ROUTING_KEYS = [
    "", "a", "b", "a.b", "a.b.c", "a.x.b", "a.x.y.b", ".", "a.", ".a", "a..b", "..", "x.a.y",
    "a.b.b", "aa.b", "A.b", "a.b.c.d", "b.a", "#", "*", "a.#", "x.b.y",
]


def route_table_scenario(url: str, kind: str, bindings: list[tuple[str, dict]],
                         messages: list[tuple[str, dict]]) -> dict[int, list[int]]:
    """Bind one queue per binding to a fresh exchange of `kind`, publish every message with
    confirms, and report, per binding index, which message indexes reached its queue."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    exchange = names["x"]
    ch.exchange_declare(exchange, kind, auto_delete=True)
    queues = []
    try:
        for i, (key, args) in enumerate(bindings):
            q = ch.queue_declare(names[f"q{i}"], exclusive=True).method.queue
            ch.queue_bind(q, exchange, routing_key=key, arguments=args or None)
            queues.append(q)
        ch.confirm_delivery()
        for i, (key, headers) in enumerate(messages):
            ch.basic_publish(exchange, key, str(i).encode(),
                             pika.BasicProperties(headers=headers or None))
        routed: dict[int, list[int]] = {}
        for b, q in enumerate(queues):
            got = []
            while True:
                method, _, body = ch.basic_get(q, auto_ack=True)
                if method is None:
                    break
                got.append(int(body))
            routed[b] = got
        return routed
    finally:
        for q in queues:
            ch.queue_delete(q)
        ch.exchange_delete(exchange)
        conn.close()


def readable(routed: dict[int, list[int]], bindings: list[Any], messages: list[Any]) -> dict:
    return {repr(bindings[b]): [messages[m] for m in ms] for b, ms in routed.items()}


def test_topic_matching_table(differential):
    bindings = [(key, {}) for key in TOPIC_BINDINGS]
    messages = [(key, {}) for key in TOPIC_ROUTING_KEYS]
    routed = differential(route_table_scenario, "topic", bindings, messages)
    table = readable(routed, TOPIC_BINDINGS, TOPIC_ROUTING_KEYS)
    # a few anchors, so the table is known to be RabbitMQ's and not merely self-consistent
    assert table["'#'"] == TOPIC_ROUTING_KEYS
    assert table["'a.#.b'"] == ["a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.b"]
    assert table["''"] == [""]


HEADER_BINDINGS: list[dict] = [
    {"x-match": "all", "a": "1", "b": "2"},
    {"x-match": "any", "a": "1", "b": "2"},
    {"x-match": "all"},
    {"x-match": "any"},
    {},  # no x-match: all is the default
    {"a": "1"},
    {"x-match": "all", "n": 1},
    {"x-match": "any", "n": 1, "s": "x"},
    {"x-match": "all", "flag": True},
    {"x-match": "all", "x-extra": "ignored", "a": "1"},
    {"x-match": "any", "x-extra": "ignored"},
]
HEADER_MESSAGES: list[dict] = [
    {},
    {"a": "1"},
    {"b": "2"},
    {"a": "1", "b": "2"},
    {"a": "1", "b": "3"},
    {"a": "1", "b": "2", "c": "3"},
    {"a": 1},
    {"n": 1},
    {"n": "1"},
    {"n": 2, "s": "x"},
    {"flag": True},
    {"flag": 1},
    {"x-extra": "ignored"},
    {"x-extra": "ignored", "a": "1"},
]


def test_headers_matching_table(differential):
    bindings = [("", args) for args in HEADER_BINDINGS]
    messages = [("", headers) for headers in HEADER_MESSAGES]
    routed = differential(route_table_scenario, "headers", bindings, messages)
    table = {b: [HEADER_MESSAGES[m] for m in ms] for b, ms in routed.items()}
    assert table[0] == [{"a": "1", "b": "2"}, {"a": "1", "b": "2", "c": "3"}]
    assert {"a": 1} not in table[5]  # the string "1" does not match the integer 1
