"""Differential: basic.qos prefetch as RabbitMQ interprets it: global=false limits each
consumer created afterwards, global=true limits the channel as a whole; both can apply."""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import Names, drain_until, pika_connection

pytestmark = pytest.mark.rabbitmq

MESSAGES_PER_QUEUE = 6


def qos_scenario(url: str, qos: list[tuple[int, bool]], consumers: int, expected_total: int,
                 ack_first: bool = False, qos_after: list[tuple[int, bool]] | None = None,
                 no_ack: bool = False) -> dict:
    """`consumers` consumers on one channel, each on its own queue of 6 messages, after the
    basic.qos calls in `qos`. Trace: unacked deliveries per consumer and ready counts."""
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    observer = conn.channel()
    queues = [ch.queue_declare(names[f"q{i}"]).method.queue for i in range(consumers)]
    got: dict[int, list[int]] = {i: [] for i in range(consumers)}
    try:
        for q in queues:
            for n in range(MESSAGES_PER_QUEUE):
                ch.basic_publish("", q, str(n).encode())
        for count, is_global in qos:
            ch.basic_qos(prefetch_count=count, global_qos=is_global)

        def handler(i: int) -> Any:
            return lambda _c, m, _p, _b: got[i].append(m.delivery_tag)

        for i, q in enumerate(queues):
            ch.basic_consume(q, handler(i), auto_ack=no_ack)
        for count, is_global in qos_after or []:
            ch.basic_qos(prefetch_count=count, global_qos=is_global)
        total = lambda: sum(len(tags) for tags in got.values())  # noqa: E731
        drain_until(conn, lambda: total() >= expected_total)
        if ack_first:
            ch.basic_ack(got[0][0])
            drain_until(conn, lambda: total() >= expected_total + 1)

        def ready() -> list[int]:
            return [observer.queue_declare(q, passive=True).method.message_count for q in queues]

        drain_until(conn, lambda: sum(ready()) == consumers * MESSAGES_PER_QUEUE - total())
        conn.process_data_events(time_limit=0.2)  # room for deliveries beyond the limit
        counts = [len(tags) for tags in got.values()]
        trace: dict = {"total": total(), "ready_total": sum(ready())}
        if not any(is_global for _, is_global in qos + (qos_after or [])):
            # how a global limit is split among consumers depends on dispatch timing
            trace["per_consumer"] = counts
        return trace
    finally:
        ch.close()
        for q in queues:
            observer.queue_delete(q)
        conn.close()


CASES: dict[str, dict] = {
    "per-consumer prefetch 2": dict(qos=[(2, False)], consumers=2, expected_total=4),
    "per-consumer prefetch, one ack frees one": dict(qos=[(2, False)], consumers=2,
                                                     expected_total=4, ack_first=True),
    "global prefetch 3 shared by the channel": dict(qos=[(3, True)], consumers=2,
                                                    expected_total=3),
    # RabbitMQ 3.10: a per-consumer basic.qos also clears the channel's global prefetch
    # (rabbit_channel calls unlimit_prefetch), so global 5 then per-consumer 2 delivers
    # 3 x 2 = 6; per-consumer 2 then global 5 applies both limits (5).
    "global 5 then per-consumer 2": dict(qos=[(5, True), (2, False)], consumers=3,
                                         expected_total=5),
    "per-consumer 2 then global 5": dict(qos=[(2, False), (5, True)], consumers=3,
                                         expected_total=5),
    "prefetch 0 is unlimited": dict(qos=[(0, False)], consumers=1, expected_total=6),
    "no-ack consumers ignore prefetch": dict(qos=[(1, False)], consumers=2, expected_total=12,
                                             no_ack=True),
    "per-consumer qos does not change existing consumers": dict(
        qos=[(2, False)], consumers=1, expected_total=2, qos_after=[(4, False)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_prefetch_matches_rabbitmq(differential, name: str):
    differential(qos_scenario, **CASES[name])


def get_ignores_qos_scenario(url: str) -> list:
    names = Names()
    conn = pika_connection(url)
    ch = conn.channel()
    queue = ch.queue_declare(names["q"]).method.queue
    try:
        for n in range(3):
            ch.basic_publish("", queue, str(n).encode())
        ch.basic_qos(prefetch_count=1)
        got = []
        for _ in range(4):
            method, _, body = ch.basic_get(queue)
            got.append(None if method is None else [body.decode(), method.delivery_tag])
        return got
    finally:
        ch.queue_delete(queue)
        conn.close()


def test_basic_get_ignores_prefetch(differential):
    differential(get_ignores_qos_scenario)
