"""The helpers: wait for a queue to fill, peek at its messages, assert dead-lettering."""

from __future__ import annotations

import pika
import pytest

from warrenmq.testing import peek_messages


@pytest.fixture
def channel(warren_vhost):
    with pika.BlockingConnection(pika.URLParameters(warren_vhost.url)) as connection:
        yield connection.channel()


def test_peek_leaves_messages_in_order(warren_vhost, channel):
    channel.queue_declare("inbox")
    for i in range(4):
        channel.basic_publish("", "inbox", f"m{i}".encode(),
                              pika.BasicProperties(headers={"n": i}))
    warren_vhost.wait_for_messages("inbox", 4)

    first = warren_vhost.peek("inbox")
    assert [m.body for m in first] == [b"m0", b"m1", b"m2", b"m3"]
    assert [m.headers["n"] for m in first] == [0, 1, 2, 3]
    assert not any(m.redelivered for m in first)  # as they were before the peek
    assert warren_vhost.message_count("inbox") == 4

    # AMQP cannot give a message back unmarked: after a peek they are redelivered
    again = peek_messages(warren_vhost.url, "inbox", limit=2)
    assert [(m.body, m.redelivered) for m in again] == [(b"m0", True), (b"m1", True)]
    method, _, body = channel.basic_get("inbox", auto_ack=True)
    assert (body, method.redelivered) == (b"m0", True)


def test_wait_for_messages_says_what_it_saw(warren_vhost, channel):
    channel.queue_declare("slow")
    channel.basic_publish("", "slow", b"only one")
    with pytest.raises(TimeoutError, match=r"'slow' to hold 2 ready messages \(it has 1\)"):
        warren_vhost.wait_for_messages("slow", 2, timeout_s=0.3)


def test_rejected_message_is_dead_lettered(warren_vhost, channel):
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx")
    channel.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})
    channel.basic_publish("", "work", b"poison")
    warren_vhost.wait_for_messages("work", 1)
    method, _, _ = channel.basic_get("work")
    channel.basic_reject(method.delivery_tag, requeue=False)

    dead = warren_vhost.assert_dead_lettered("dead", from_queue="work", reason="rejected",
                                             body="poison")
    death = dead.x_death[0]
    assert (death["queue"], death["reason"], death["count"]) == ("work", "rejected", 1)
    assert death["routing-keys"] == ["work"]
    assert warren_vhost.message_count("dead") == 1  # asserting did not consume it


def test_expired_message_is_dead_lettered(warren_vhost, channel):
    channel.queue_declare("dead")
    channel.queue_declare("short-lived", arguments={"x-message-ttl": 50,
                                                    "x-dead-letter-exchange": "",
                                                    "x-dead-letter-routing-key": "dead"})
    channel.basic_publish("", "short-lived", b"too late")
    warren_vhost.assert_dead_lettered("dead", from_queue="short-lived", reason="expired")


def test_assert_dead_lettered_fails_with_what_the_queue_held(warren_vhost, channel):
    channel.queue_declare("dead")
    channel.basic_publish("", "dead", b"alive and well")
    with pytest.raises(AssertionError, match=r"(?s)reason='maxlen'.*alive and well.*none"):
        warren_vhost.assert_dead_lettered("dead", reason="maxlen", timeout_s=0.3)
