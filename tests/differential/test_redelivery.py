"""Differential: which messages come back after nack, reject, basic.recover and channel
close, in what order, with what redelivered flag, compared with RabbitMQ."""

from __future__ import annotations

from typing import Any

import pika
import pytest

from tests.differential.harness import Names, drain_until, pika_connection

pytestmark = pytest.mark.rabbitmq

Step = tuple[Any, ...]


def get_script_scenario(url: str, script: list[Step]) -> list:
    """Publish m0..m4 to a fresh queue, then run `script` with basic.get on one channel.

    Steps: ("get",), ("ack"|"nack"|"reject", body, *flags), ("recover",),
    ("reopen",) closes the channel holding unacked messages and opens a new one,
    ("drain",) gets (and acks) everything left.
    """
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    queue = ch.queue_declare(names["q"], auto_delete=False).method.queue
    trace: list = []
    try:
        for i in range(5):
            ch.basic_publish("", queue, f"m{i}".encode())
        tags: dict[str, int] = {}
        for step in script:
            kind = step[0]
            if kind == "get":
                method, _, body = ch.basic_get(queue)
                if method is None:
                    trace.append("empty")
                    continue
                tags[body.decode()] = method.delivery_tag
                trace.append([body.decode(), method.redelivered, method.message_count])
            elif kind == "ack":
                ch.basic_ack(tags[step[1]], multiple=step[2] if len(step) > 2 else False)
            elif kind == "nack":
                ch.basic_nack(tags[step[1]], multiple=step[2], requeue=step[3])
            elif kind == "reject":
                ch.basic_reject(tags[step[1]], requeue=step[2])
            elif kind == "recover":
                ch.basic_recover(requeue=True)
            elif kind == "reopen":
                ch.close()
                ch = conn.channel()
            elif kind == "drain":
                while True:
                    method, _, body = ch.basic_get(queue, auto_ack=True)
                    if method is None:
                        break
                    trace.append([body.decode(), method.redelivered, method.message_count])
                trace.append("drained")
        return trace
    finally:
        ch.queue_delete(queue)
        conn.close()


SCRIPTS: dict[str, list[Step]] = {
    "nack one, requeue": [("get",), ("get",), ("get",), ("nack", "m1", False, True), ("drain",)],
    "nack multiple, requeue": [("get",), ("get",), ("get",), ("nack", "m1", True, True),
                               ("drain",)],
    "nack, no requeue drops": [("get",), ("get",), ("nack", "m1", True, False), ("drain",)],
    "reject requeue then no requeue": [("get",), ("get",), ("reject", "m1", True),
                                       ("reject", "m0", False), ("drain",)],
    "requeue the head while holding later ones": [("get",), ("get",), ("get",),
                                                  ("nack", "m0", False, True), ("get",),
                                                  ("ack", "m2", True), ("drain",)],
    "recover requeues everything unacked": [("get",), ("get",), ("get",), ("ack", "m1"),
                                            ("recover",), ("drain",)],
    "channel close requeues unacked": [("get",), ("get",), ("get",), ("ack", "m0"),
                                       ("reopen",), ("drain",)],
    "redelivered twice keeps the flag": [("get",), ("nack", "m0", False, True), ("get",),
                                         ("reopen",), ("get",), ("ack", "m0"), ("drain",)],
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_redelivery_with_basic_get(differential, name: str):
    differential(get_script_scenario, SCRIPTS[name])


def consumer_scenario(url: str, action: str) -> list:
    """A consumer (prefetch 10) receives m0..m3; then one of the requeue actions runs and
    the trace lists every delivery: body, redelivered, delivery_tag."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    queue = ch.queue_declare(names["q"]).method.queue
    deliveries: list[list] = []
    try:
        for i in range(4):
            ch.basic_publish("", queue, f"m{i}".encode())
        ch.basic_qos(prefetch_count=10)

        def on_message(_ch: Any, method: pika.spec.Basic.Deliver, _p: Any, body: bytes) -> None:
            deliveries.append([body.decode(), method.redelivered, method.delivery_tag])

        ch.basic_consume(queue, on_message)
        drain_until(conn, lambda: len(deliveries) == 4)
        if action == "nack m1 and m3":
            ch.basic_nack(2, requeue=True)
            ch.basic_nack(4, requeue=True)
            expected = 6
        elif action == "nack multiple up to m2":
            ch.basic_nack(3, multiple=True, requeue=True)
            expected = 7
        elif action == "reject m0":
            ch.basic_reject(1, requeue=True)
            expected = 5
        elif action == "recover":
            ch.basic_ack(2)
            ch.basic_recover(requeue=True)
            expected = 7
        else:
            raise AssertionError(action)
        drain_until(conn, lambda: len(deliveries) >= expected)
        ch.basic_ack(0, multiple=True)
        return deliveries
    finally:
        ch.close()
        cleanup = conn.channel()
        cleanup.queue_delete(queue)
        conn.close()


@pytest.mark.parametrize("action", ["nack m1 and m3", "nack multiple up to m2", "reject m0",
                                    "recover"])
def test_redelivery_to_a_consumer(differential, action: str):
    differential(consumer_scenario, action)


def close_with_unacked_scenario(url: str) -> list:
    """A consumer holds m0..m2 unacked and its channel closes; a second consumer on another
    channel then receives them again, redelivered, in the original order."""
    names = Names()
    conn = pika_connection(url)
    first = conn.channel()
    queue = first.queue_declare(names["q"]).method.queue
    try:
        for i in range(3):
            first.basic_publish("", queue, f"m{i}".encode())
        got: list[list] = []
        first.basic_consume(queue, lambda _c, m, _p, b: got.append(["first", b.decode(),
                                                                      m.redelivered]))
        drain_until(conn, lambda: len(got) == 3)
        first.close()
        second = conn.channel()
        second.basic_consume(queue, lambda _c, m, _p, b: got.append(["second", b.decode(),
                                                                       m.redelivered]),
                             auto_ack=True)
        drain_until(conn, lambda: len(got) == 6)
        ready = second.queue_declare(queue, passive=True).method.message_count
        return [got, ready]
    finally:
        conn.channel().queue_delete(queue)
        conn.close()


def test_channel_close_redelivers_to_another_consumer(differential):
    differential(close_with_unacked_scenario)
