"""Poison message handling, on classic and quorum queues alike (`queue_type`): a message's
failed deliveries (nack or reject with requeue, basic.recover, its channel closed or its
consumer timed out while it was unacknowledged) are counted; one that fails more often than
the delivery limit (x-delivery-limit, policy key delivery-limit, the smaller wins) is
dead-lettered with reason `delivery_limit` instead of requeued; redeliveries carry the count
in `x-delivery-count`. RabbitMQ 3.10 does this on quorum queues only; classic queues here
honour the limit deliberately, with one difference: a first delivery carries no
`x-delivery-count` whether by consumer or by basic.get, where a quorum queue adds
`x-delivery-count: 0` to every basic.get (RabbitMQ 3.10)."""

from __future__ import annotations

import pika
import pytest

from tests.conftest import unique
from tests.features.conftest import count, declare_queue, get_all, pump
from tests.support.node import wait_for


def _dead_letter_target(ch) -> tuple[str, str]:
    """A fanout dead-letter exchange and the classic queue bound to it."""
    dlx, dead = unique("dlx"), unique("dead")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    ch.queue_declare(dead, exclusive=True)
    ch.queue_bind(dead, dlx)
    return dlx, dead


def _first_get_headers(queue_type: str, published: dict | None = None) -> dict:
    """What a first basic.get shows: a quorum queue adds a count of 0 (RabbitMQ 3.10)."""
    zero = {"x-delivery-count": 0} if queue_type == "quorum" else {}
    return {**(published or {}), **zero}


def _assert_poison(headers: dict, queue: str) -> None:
    assert "x-delivery-count" not in headers  # the copy is the message as published
    [death] = headers["x-death"]
    assert (death["reason"], death["count"], death["queue"]) == ("delivery_limit", 1, queue)
    assert headers["x-first-death-reason"] == "delivery_limit"


def test_delivery_limit_dead_letters_a_poison_message_with_reason_delivery_limit(conn, ch,
                                                                                  declare):
    dlx, dead = _dead_letter_target(ch)
    q = declare(ch, arguments={"x-delivery-limit": 2, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"poison", pika.BasicProperties(headers={"app": "x"}))
    seen: list[tuple[bool, object]] = []
    worker = conn.channel()

    def fail(c, m, p, b) -> None:  # a consumer that never manages to process it
        seen.append((m.redelivered, (p.headers or {}).get("x-delivery-count")))
        c.basic_nack(m.delivery_tag, requeue=True)

    worker.basic_consume(q, fail)
    pump(conn, lambda: count(ch, dead) == 1)
    # delivered once and redelivered twice; the third failure is over the limit of 2
    assert seen == [(False, None), (True, 1), (True, 2)]
    assert count(ch, q) == 0
    [(body, headers)] = get_all(ch, dead)
    assert body == b"poison" and headers["app"] == "x"
    _assert_poison(headers, q)


def test_a_first_delivery_carries_no_delivery_count(conn, ch, declare):
    q = declare(ch, arguments={"x-delivery-limit": 3})
    ch.basic_publish("", q, b"m", pika.BasicProperties(headers={"app": "x"}))
    got: list[tuple[bool, dict]] = []
    worker = conn.channel()
    worker.basic_consume(q, lambda c, m, p, b: got.append((m.redelivered, p.headers)))
    pump(conn, lambda: got)
    assert got == [(False, {"app": "x"})]
    worker.close()  # unacknowledged: a failed delivery
    method, props, _ = ch.basic_get(q, auto_ack=True)
    assert method.redelivered and props.headers == {"app": "x", "x-delivery-count": 1}


def test_x_delivery_count_counts_failed_deliveries(conn, ch, declare, queue_type):
    q = declare(ch, arguments={"x-delivery-limit": 10})
    ch.basic_publish("", q, b"m")
    method, props, _ = ch.basic_get(q)
    assert (props.headers or {}) == _first_get_headers(queue_type) and not method.redelivered
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, _ = ch.basic_get(q)
    assert props.headers == {"x-delivery-count": 1} and method.redelivered
    ch.basic_reject(method.delivery_tag, requeue=True)
    # a consumer whose channel closes with the message unacknowledged fails it too
    other = conn.channel()
    got = []
    other.basic_consume(q, lambda c, m, p, b: got.append(p.headers))
    pump(conn, lambda: got)
    assert got == [{"x-delivery-count": 2}]
    other.close()
    method, props, _ = ch.basic_get(q, auto_ack=True)
    assert props.headers == {"x-delivery-count": 3}


def test_basic_recover_counts_a_failed_delivery(conn, ch, declare):
    dlx, dead = _dead_letter_target(ch)
    q = declare(ch, arguments={"x-delivery-limit": 1, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"held")
    worker = conn.channel()
    seen: list[tuple[bool, object]] = []
    worker.basic_consume(q, lambda c, m, p, b: seen.append(
        (m.redelivered, (p.headers or {}).get("x-delivery-count"))))
    pump(conn, lambda: len(seen) == 1)
    worker.basic_recover(requeue=True)  # the held delivery comes back, redelivered
    pump(conn, lambda: len(seen) == 2)
    assert seen == [(False, None), (True, 1)]
    worker.basic_recover(requeue=True)  # a second failure: over the limit of 1
    pump(conn, lambda: count(ch, dead) == 1)
    assert seen == [(False, None), (True, 1)] and count(ch, q) == 0
    [(body, headers)] = get_all(ch, dead)
    assert body == b"held"
    _assert_poison(headers, q)


def test_a_cancelled_consumers_unacknowledged_delivery_fails_when_its_channel_closes(
        conn, ch, declare):
    dlx, dead = _dead_letter_target(ch)
    q = declare(ch, arguments={"x-delivery-limit": 1, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"m")
    worker = conn.channel()
    held: list[int] = []
    tag = worker.basic_consume(q, lambda c, m, p, b: held.append(m.delivery_tag))
    pump(conn, lambda: held)
    worker.basic_cancel(tag)
    # cancelling does not return the delivery: it stays with the channel, unacknowledged
    assert count(ch, q) == 0
    worker.close()
    pump(conn, lambda: count(ch, q) == 1)
    method, props, _ = ch.basic_get(q)
    assert method.redelivered and props.headers == {"x-delivery-count": 1}
    ch.basic_nack(method.delivery_tag, requeue=True)  # the second failure
    pump(conn, lambda: count(ch, dead) == 1)
    assert count(ch, q) == 0
    _assert_poison(get_all(ch, dead)[0][1], q)


def test_a_limit_of_zero_or_below_drops_on_the_first_failure_without_a_dlx(ch, declare):
    q = declare(ch, arguments={"x-delivery-limit": -1})  # negative acts as 0
    ch.basic_publish("", q, b"once")
    method = ch.basic_get(q)[0]
    ch.basic_reject(method.delivery_tag, requeue=True)
    wait_for(lambda: count(ch, q) == 0, 5, what="the message to be dropped")
    assert ch.basic_get(q)[0] is None


@pytest.mark.parametrize("argument", [5, None])
def test_delivery_limit_by_policy_takes_the_smaller_of_policy_and_argument(
        node_factory, queue_type, argument):
    node = node_factory("limit")
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    arguments = {} if argument is None else {"x-delivery-limit": argument}
    if queue_type == "classic":
        ch.queue_declare("work", durable=True, arguments=arguments)
    else:
        declare_queue(ch, queue_type, "work", arguments)
    ch.basic_publish("", "work", b"first")
    method = ch.basic_get("work")[0]
    ch.basic_nack(method.delivery_tag, requeue=True)  # no limit yet from the policy
    method, props, _ = ch.basic_get("work")
    # a classic queue without a limit counts nothing, as RabbitMQ's; a quorum queue always
    counted = argument is not None or queue_type == "quorum"
    assert props.headers == ({"x-delivery-count": 1} if counted else None)
    ch.basic_ack(method.delivery_tag)
    r = node.ctl("set_policy", "dl", "^work$", '{"delivery-limit": 0}',
                 "--apply-to", "queues")
    assert r.returncode == 0, r.stderr

    def dropped_on_first_failure() -> bool:
        ch.basic_publish("", "work", b"m")
        method = ch.basic_get("work")[0]
        ch.basic_nack(method.delivery_tag, requeue=True)
        return count(ch, "work") == 0

    wait_for(dropped_on_first_failure, 5, what="the policy's delivery limit of 0")
    conn.close()


def test_a_classic_queue_replicated_by_a_policy_counts_too(broker, ch):
    """Under an ha-* policy a classic queue runs the replicated machine: the count is
    replicated, redeliveries carry it, and the limit dead-letters."""
    q = unique("ha-limit")
    r = broker.ctl("set_policy", q, f"^{q}$", '{"ha-mode":"all"}', "--apply-to", "queues")
    assert r.returncode == 0, r.stderr
    try:
        dlx, dead = _dead_letter_target(ch)
        ch.queue_declare(q, durable=True, arguments={"x-delivery-limit": 1,
                                                     "x-dead-letter-exchange": dlx})
        ch.basic_publish("", q, b"poison")
        counts = []
        for _ in range(2):
            method, props, _ = ch.basic_get(q)
            counts.append((props.headers or {}).get("x-delivery-count"))
            ch.basic_nack(method.delivery_tag, requeue=True)
        assert counts == [None, 1]  # a first delivery carries none, as on a classic queue
        wait_for(lambda: count(ch, dead) == 1, 5, what="the poison message dead-lettered")
        [(body, headers)] = get_all(ch, dead)
        assert body == b"poison" and headers["x-death"][0]["reason"] == "delivery_limit"
        assert count(ch, q) == 0
    finally:
        ch.queue_delete(q)
        broker.ctl("clear_policy", q)
