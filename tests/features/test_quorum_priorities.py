"""Message priorities on replicated queues, against a real node with pika.

A quorum queue orders as RabbitMQ 4.0 to 4.2 do, deliberately unlike 3.10 (which ignores the
priority property on quorum queues): a message whose priority is above 4 is high, any other
(or one without a priority) normal; high ones are served first, 2:1 with normal ones (on
normal's turn the older of the two heads goes, so a high message published first still goes
first); a message its consumer requeues goes to the back as normal priority (without a
delivery limit) or first (with one), and those of a closed channel come back first; basic.get
and consumers take from the same order; a restart keeps it. x-max-priority stays refused
(tests/features/test_quorum_queues.py), as in 4.x. A classic priority queue
(x-max-priority) keeps a classic queue's strict order when an ha-* policy replicates it.
"""

from __future__ import annotations

import json
import signal

import pika
import pytest

from tests.conftest import unique
from tests.features.conftest import pump
from tests.support.node import launch, wait_for

QUORUM = {"x-queue-type": "quorum"}




def _publish(ch, queue: str, priorities: list[int | None]) -> None:
    """One message per priority, its body a label: h1, h2, ... for priorities above 4 and
    n1, n2, ... for the others, numbered in publish order (the channel confirms each)."""
    counts = {"h": 0, "n": 0}
    for p in priorities:
        kind = "h" if p is not None and p > 4 else "n"
        counts[kind] += 1
        ch.basic_publish("", queue, f"{kind}{counts[kind]}".encode(),
                         pika.BasicProperties(priority=p))


def _get_all(ch, queue: str) -> list[str]:
    out = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body.decode())


@pytest.fixture
def quorum(broker, conn):
    """quorum() declares a durable quorum queue, deleted after the test."""
    made: list[str] = []
    own = conn.channel()

    def declare(**arguments) -> str:
        name = unique("qq-prio")
        own.queue_declare(name, durable=True, arguments={**QUORUM, **arguments})
        made.append(name)
        return name

    yield declare
    c = pika.BlockingConnection(pika.URLParameters(broker.url()))
    cleanup = c.channel()
    for name in made:
        cleanup.queue_delete(name)
    c.close()


def test_a_consumer_gets_high_and_normal_messages_two_to_one(conn, ch, quorum):
    q = quorum()
    _publish(ch, q, [0] * 30 + [9] * 30)  # the normal ones are the older
    got: list[str] = []
    consumer = conn.channel()
    consumer.basic_consume(q, lambda c, m, p, b: got.append(b.decode()), auto_ack=True)
    pump(conn, lambda: len(got) == 60)
    # two high, then the older head (a normal one), until the high ones run out
    assert got[:45] == [label for i in range(15)
                        for label in (f"h{2 * i + 1}", f"h{2 * i + 2}", f"n{i + 1}")]
    assert got[45:] == [f"n{i}" for i in range(16, 31)]


def test_high_messages_published_first_all_go_first(ch, quorum):
    q = quorum()
    _publish(ch, q, [7, 9, 5, 255, 1, None, 4, 0])
    assert _get_all(ch, q) == ["h1", "h2", "h3", "h4", "n1", "n2", "n3", "n4"]


def test_basic_get_follows_the_same_order_as_deliveries(conn, ch, quorum):
    q = quorum()
    _publish(ch, q, [9, 0, 9, 9, 0, 5, 0])
    # two gets take h1 and h2; a consumer then gets what comes next: normal's turn
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"h1", b"h2"]
    got: list[str] = []
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume(q, lambda c, m, p, b: got.append(b.decode()), auto_ack=False)
    pump(conn, lambda: got == ["n1"])
    assert _get_all(ch, q) == ["h3", "h4", "n2", "n3"]


@pytest.mark.parametrize(("arguments", "expected"), [
    # without a delivery limit RabbitMQ re-appends a requeued message, as normal priority:
    # h3, published later, goes first
    ({}, [("h1", False), ("h2", False), ("n1", False), ("h3", False), ("h1", True)]),
    # with one it comes back first
    ({"x-delivery-limit": 5},
     [("h1", False), ("h1", True), ("h2", False), ("n1", False), ("h3", False)]),
])
def test_where_a_consumers_requeue_goes(conn, ch, quorum, arguments, expected):
    q = quorum(**arguments)
    _publish(ch, q, [0, 9, 9])
    got: list[tuple[str, bool]] = []

    def on_message(c, m, p, b) -> None:
        got.append((b.decode(), m.redelivered))
        if len(got) == 1:
            c.basic_nack(m.delivery_tag, requeue=True)
        else:
            c.basic_ack(m.delivery_tag)
        if len(got) == 2:  # a high message published after the requeue
            ch.basic_publish("", q, b"h3", pika.BasicProperties(priority=9))

    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume(q, on_message)
    pump(conn, lambda: len(got) == 5)
    assert got == expected


def test_messages_of_a_closed_channel_come_back_first(conn, ch, quorum):
    q = quorum()
    _publish(ch, q, [0, 0, 9, 9])
    taker = conn.channel()
    taken = [taker.basic_get(q)[2] for _ in range(2)]
    assert taken == [b"h1", b"h2"]
    taker.close()  # unacknowledged: both come back before n1, n2
    assert _get_all(ch, q) == ["h1", "h2", "n1", "n2"]


def test_the_order_survives_a_restart(node_factory):
    node = node_factory("qq-prio")
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("prio", durable=True, arguments=QUORUM)
    _publish(ch, "prio", [1, 1, 1, 9, 9, 9, 9, 9, 9])
    assert [ch.basic_get("prio", auto_ack=True)[2] for _ in range(2)] == [b"h1", b"h2"]
    # confirmed after the gets' entries (one log, in order): all of them are on disk
    ch.basic_publish("", "prio", b"n4", pika.BasicProperties(priority=0))
    conn.close()
    node.stop(signal.SIGKILL)
    launch(node)
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    # the counter was at normal's turn when the node died
    assert _get_all(conn.channel(), "prio") == ["n1", "h3", "h4", "n2", "h5", "h6", "n3",
                                                "n4"]
    conn.close()


@pytest.fixture
def ha_policy(broker):
    """ha_policy() -> a queue name an ha-all policy applies to (the policy is cleared and the
    queue deleted after the test)."""
    names: list[str] = []

    def make() -> str:
        name = unique("ha-prio")
        r = broker.ctl("set_policy", name, f"^{name}$", '{"ha-mode":"all"}',
                       "--apply-to", "queues")
        assert r.returncode == 0, r.stderr
        names.append(name)
        return name

    yield make
    c = pika.BlockingConnection(pika.URLParameters(broker.url()))
    cleanup = c.channel()
    for name in names:
        cleanup.queue_delete(name)
        broker.ctl("clear_policy", name)
    c.close()


def _replicated(broker, name: str) -> bool:
    r = broker.ctl("list_queues", "name", "type", "members", "--formatter", "json")
    rows = {row["name"]: row for row in json.loads(r.stdout)} if r.returncode == 0 else {}
    row = rows.get(name)
    return bool(row and row["type"] == "classic" and row["members"])


@pytest.mark.parametrize(("arguments", "expected"), [
    # strict levels up to x-max-priority, above it clamped, FIFO within a level
    ({"x-max-priority": 5}, ["h1", "h2", "h3", "h4", "n3", "n1", "n2"]),
    # without x-max-priority a classic queue ignores the property
    ({}, ["n1", "n2", "h1", "n3", "h2", "h3", "h4"]),
])
def test_a_classic_queue_under_an_ha_policy_keeps_classic_priorities(broker, ch, ha_policy,
                                                                     arguments, expected):
    q = ha_policy()
    ch.queue_declare(q, durable=True, arguments=arguments)
    wait_for(lambda: _replicated(broker, q), 10, what="the queue to be replicated")
    _publish(ch, q, [1, None, 9, 3, 5, 7, 255])
    # a requeued message goes back to its place, as in a classic queue
    method, _, body = ch.basic_get(q)
    assert body.decode() == expected[0]
    ch.basic_nack(method.delivery_tag, requeue=True)
    assert _get_all(ch, q) == expected
