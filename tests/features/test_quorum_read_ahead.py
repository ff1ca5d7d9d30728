"""Read-ahead of quorum queue consumers (replica.py's "Read-ahead"), seen from a client: a
consumer with a large prefetch gets no more than its prefetch, the messages its node holds
back count as ready, an ack is answered from them at once, and a cancel or a closed channel
gives them back as never delivered. A consumer with a small prefetch is left exact: a worker
that does not ack keeps no more than its prefetch from the others."""

from __future__ import annotations

import json

import pika
import pytest

from tests.conftest import unique
from tests.features.conftest import pump
from tests.support.node import wait_for
from warrenmq.queues.quorum.replica import READ_AHEAD_MIN_PREFETCH

QUORUM = {"x-queue-type": "quorum"}
PREFETCH = 100
assert PREFETCH >= READ_AHEAD_MIN_PREFETCH  # these tests are about consumers that read ahead


@pytest.fixture
def queue(broker, ch):
    name = unique("qq-ahead")
    ch.queue_declare(name, durable=True, arguments=QUORUM)
    yield name
    c = pika.BlockingConnection(pika.URLParameters(broker.url()))
    c.channel().queue_delete(name)
    c.close()


def _publish(ch, queue: str, n: int) -> None:
    for i in range(n):
        ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2))


def _counts(broker, queue: str) -> tuple[int, int]:
    r = broker.ctl("list_queues", "name", "messages_ready", "messages_unacknowledged",
                   "--formatter", "json")
    assert r.returncode == 0, r.stderr
    row = next(row for row in json.loads(r.stdout) if row["name"] == queue)
    return row["messages_ready"], row["messages_unacknowledged"]


def _consume(conn, queue: str, prefetch: int) -> tuple[pika.channel.Channel, list]:
    """A channel consuming `queue` with `prefetch`, and the list its deliveries go to:
    (delivery tag, body, redelivered, x-delivery-count)."""
    got: list[tuple[int, bytes, bool, object]] = []
    channel = conn.channel()
    channel.basic_qos(prefetch_count=prefetch)

    def on_message(_ch, method, props, body) -> None:
        got.append((method.delivery_tag, body, method.redelivered,
                    (props.headers or {}).get("x-delivery-count")))

    channel.basic_consume(queue, on_message)
    return channel, got


def test_a_consumer_gets_its_prefetch_the_rest_counts_as_ready_and_an_ack_is_answered(
        broker, conn, ch, queue) -> None:
    _publish(ch, queue, 3 * PREFETCH)
    consumer, got = _consume(conn, queue, PREFETCH)
    pump(conn, lambda: len(got) >= PREFETCH)
    # the node holds a prefetch's worth back; listed as ready, not as unacknowledged
    wait_for(lambda: _counts(broker, queue) == (2 * PREFETCH, PREFETCH), 10,
             what="ready 200, unacknowledged 100")
    assert len(got) == PREFETCH
    consumer.basic_ack(got[9][0], multiple=True)
    pump(conn, lambda: len(got) >= PREFETCH + 10)
    wait_for(lambda: _counts(broker, queue) == (2 * PREFETCH - 10, PREFETCH), 10,
             what="ready 190, unacknowledged 100")
    assert len(got) == PREFETCH + 10  # never more than the prefetch at the client
    assert [int(body) for _, body, _, _ in got] == list(range(PREFETCH + 10))  # in order
    assert not any(redelivered for _, _, redelivered, _ in got)


def _holding_a_prefetch(broker, conn, ch, queue: str) -> pika.channel.Channel:
    """300 messages published, a consumer with its 100, another 100 held back for it."""
    _publish(ch, queue, 3 * PREFETCH)
    consumer, got = _consume(conn, queue, PREFETCH)
    pump(conn, lambda: len(got) >= PREFETCH)
    wait_for(lambda: _counts(broker, queue) == (2 * PREFETCH, PREFETCH), 10,
             what="a prefetch's worth held back")
    return consumer


def test_a_cancel_returns_the_held_back_messages_as_never_delivered(broker, conn, ch,
                                                                    queue) -> None:
    first = _holding_a_prefetch(broker, conn, ch, queue)
    first.basic_cancel(first.consumer_tags[0])
    # what the first consumer's client holds stays with it (basic.cancel); the rest,
    # held back included, goes to the next consumer as it was: never delivered
    second, later = _consume(conn, queue, 0)
    pump(conn, lambda: len(later) >= 2 * PREFETCH)
    assert [int(body) for _, body, _, _ in later] == list(range(PREFETCH, 3 * PREFETCH))
    assert {(redelivered, count) for _, _, redelivered, count in later} == {(False, None)}
    second.basic_ack(0, multiple=True)
    first.basic_ack(0, multiple=True)  # the first client's are still its to ack
    wait_for(lambda: _counts(broker, queue) == (0, 0), 10, what="an empty queue")


def test_a_closed_channel_returns_its_deliveries_redelivered_and_the_held_back_as_they_were(
        broker, conn, ch, queue) -> None:
    first = _holding_a_prefetch(broker, conn, ch, queue)
    first.close()
    second, later = _consume(conn, queue, 0)
    pump(conn, lambda: len(later) >= 3 * PREFETCH)
    flags = {int(body): (redelivered, count) for _, body, redelivered, count in later}
    assert sorted(flags) == list(range(3 * PREFETCH))
    assert {flags[i] for i in range(PREFETCH)} == {(True, 1)}  # its client had them
    assert {flags[i] for i in range(PREFETCH, 3 * PREFETCH)} == {(False, None)}
    second.basic_ack(0, multiple=True)
    wait_for(lambda: _counts(broker, queue) == (0, 0), 10, what="an empty queue")


def test_a_small_prefetch_reads_no_further_ahead(broker, conn, ch, queue) -> None:
    """Two workers with prefetch 5: one takes its five and never acks; every other message
    goes to the one that acks (none kept back at the idle one's node)."""
    prefetch = 5
    assert prefetch < READ_AHEAD_MIN_PREFETCH
    stuck, held = _consume(conn, queue, prefetch)
    _publish(ch, queue, prefetch)
    pump(conn, lambda: len(held) >= prefetch)
    worker, done = _consume(conn, queue, prefetch)

    def ack_all() -> bool:
        conn.process_data_events(time_limit=0.02)
        if done and done[-1][0] > worker_acked[0]:
            worker.basic_ack(done[-1][0], multiple=True)
            worker_acked[0] = done[-1][0]
        return len(done) >= 40

    worker_acked = [0]
    _publish(ch, queue, 40)
    wait_for(ack_all, 20, what="40 messages at the acking worker")
    wait_for(lambda: _counts(broker, queue) == (0, prefetch), 10,
             what="only the stuck worker's five left")
    assert len(held) == prefetch
