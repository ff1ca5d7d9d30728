"""What quorum queues have, or lack, that classic queues do not, as RabbitMQ 3.10 documents
and does it: at-least-once dead-lettering, no x-max-priority, no global QoS, queue expiry,
and how arguments and policies combine. Message priorities are the exception, deliberately as
RabbitMQ 4.x has them: see tests/features/test_quorum_priorities.py. Poison message handling
(x-delivery-limit, x-delivery-count), which classic queues here have too, is tested on both
types in tests/features/test_delivery_limit.py."""

from __future__ import annotations

import json
import signal

import pika
import pytest

from tests.conftest import unique
from tests.features.conftest import count, get_all
from tests.support.node import launch, wait_for
from warrenmq.queues.quorum.machine import DEAD_LETTER_RETRY_MS

QUORUM = {"x-queue-type": "quorum"}








@pytest.fixture
def quorum(broker, conn):
    """quorum(name, **arguments) declares a quorum queue (on a channel of its own, which a
    test's channel error does not close), deleted after the test."""
    made: list[str] = []
    own = conn.channel()

    def declare(name: str = "", **arguments) -> str:
        name = name or unique("qq")
        own.queue_declare(name, durable=True, arguments={**QUORUM, **arguments})
        made.append(name)
        return name

    yield declare
    c = pika.BlockingConnection(pika.URLParameters(broker.url()))
    cleanup = c.channel()
    for name in made:
        cleanup.queue_delete(name)
    c.close()


def _dead_letter_target(ch) -> tuple[str, str]:
    """A fanout dead-letter exchange and the classic queue bound to it."""
    dlx, dead = unique("dlx"), unique("dead")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    ch.queue_declare(dead, exclusive=True)
    ch.queue_bind(dead, dlx)
    return dlx, dead


def _ready_bytes(broker, name: str) -> int:
    r = broker.ctl("list_queues", "name", "message_bytes_ready", "--formatter", "json")
    assert r.returncode == 0, r.stderr
    return next(row["message_bytes_ready"] for row in json.loads(r.stdout) if row["name"] == name)


def test_ready_bytes_follow_publishes_deliveries_and_returns(broker, ch, quorum):
    """`message_bytes_ready` counts the bodies of ready messages only: a delivered one leaves
    it, a requeued one comes back, an acked one is gone."""
    name = quorum()
    for size in (10, 20, 30):
        ch.basic_publish("", name, b"x" * size)
    wait_for(lambda: _ready_bytes(broker, name) == 60, 10, what="60 ready bytes")
    first = ch.basic_get(name)[0]
    wait_for(lambda: _ready_bytes(broker, name) == 50, 10, what="50 after a get")
    ch.basic_nack(first.delivery_tag, requeue=True)
    wait_for(lambda: _ready_bytes(broker, name) == 60, 10, what="60 after the requeue")
    for _ in range(3):
        ch.basic_ack(ch.basic_get(name)[0].delivery_tag)
    wait_for(lambda: _ready_bytes(broker, name) == 0, 10, what="0 once all are acked")


# -- at-least-once dead-lettering --------------------------------------------------------------
def _at_least_once(dlx: str) -> dict:
    return {"x-dead-letter-exchange": dlx, "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish"}


def test_at_least_once_holds_a_dead_letter_until_its_target_confirms_it(ch, quorum):
    dlx = unique("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    # the target refuses (nacks) copies while it is full
    target = quorum(unique("target"), **{"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_bind(target, dlx)
    ch.basic_publish("", target, b"filler")
    source = quorum(unique("source"), **_at_least_once(dlx))
    ch.basic_publish("", source, b"precious")
    method = ch.basic_get(source)[0]
    ch.basic_reject(method.delivery_tag, requeue=False)
    # one channel's commands are applied in order: once this get is answered the rejection
    # is applied and the copy was offered to the target, before the target's get below
    assert ch.basic_get(source)[0] is None
    assert count(ch, source) == 0  # held dead letters are not counted
    # refused by the full target, the dead letter stays in the source and is forwarded
    # again once there is room; at most once it would be lost
    method, _, body = ch.basic_get(target, auto_ack=True)
    assert body == b"filler"
    wait_for(lambda: count(ch, target) == 1, 10, what="the dead letter to be forwarded again")
    [(body, headers)] = get_all(ch, target)
    assert body == b"precious"
    [death] = headers["x-death"]
    assert (death["reason"], death["queue"], death["count"]) == ("rejected", source, 1)


def test_at_least_once_waits_for_a_missing_target_across_a_restart(node_factory):
    node = node_factory("qq-dlx")
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("source", durable=True, arguments={**QUORUM, **_at_least_once("later")})
    ch.basic_publish("", "source", b"expired", pika.BasicProperties(expiration="1"))
    # the leader's timer expires it (a held dead letter is not counted); a get in the same
    # millisecond as the publish could still have it
    wait_for(lambda: count(ch, "source") == 0, 10, what="the message to expire")
    ch.basic_publish("", "source", b"rejected")
    method, _, body = ch.basic_get("source")
    assert body == b"rejected"
    ch.basic_reject(method.delivery_tag, requeue=False)
    # commands of one channel are applied in order: once this get is answered, the
    # rejection is committed (on disk)
    assert ch.basic_get("source")[0] is None
    conn.close()
    # the dead-letter exchange does not exist: held; the node dies and comes back
    node.stop(signal.SIGKILL)
    launch(node)
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    assert count(ch, "source") == 0
    ch.exchange_declare("later", "fanout")
    ch.queue_declare("dead")
    ch.queue_bind("dead", "later")
    wait_for(lambda: count(ch, "dead") == 2, 10, what="the held dead letters")
    deaths = sorted((b, h["x-death"][0]["reason"]) for b, h in get_all(ch, "dead"))
    assert deaths == [(b"expired", "expired"), (b"rejected", "rejected")]
    conn.close()


def test_at_least_once_needs_reject_publish_else_it_is_at_most_once(conn, ch, quorum):
    dlx = unique("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    source = quorum(**{**_at_least_once(dlx), "x-overflow": "drop-head"})
    ch.basic_publish("", source, b"lost")
    method = ch.basic_get(source)[0]
    ch.basic_reject(method.delivery_tag, requeue=False)
    wait_for(lambda: count(ch, source) == 0, 5, what="the rejection")
    dead = unique("dead")
    ch.queue_declare(dead, exclusive=True)
    ch.queue_bind(dead, dlx)
    # at most once: the dead letter went nowhere (no queue was bound) and is gone; a message
    # dead-lettered now shows the path works, and nothing older follows it within a retry
    # period (held at least once, the first would be forwarded again by then)
    ch.basic_publish("", source, b"now")
    method = ch.basic_get(source)[0]
    ch.basic_reject(method.delivery_tag, requeue=False)
    wait_for(lambda: count(ch, dead) == 1, 5, what="the second rejection")
    conn.process_data_events(time_limit=DEAD_LETTER_RETRY_MS / 1000 + 0.5)  # a window, no sync
    assert [b for b, _ in get_all(ch, dead)] == [b"now"]


# -- what quorum queues do not have -------------------------------------------------------------
def test_x_max_priority_is_refused_as_in_rabbitmq_3_10_and_4(ch):
    # RabbitMQ 4.0 to 4.2 order quorum queue messages by priority (as this broker does) but
    # still refuse the argument, with 3.10's error
    name = unique("prio")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(name, durable=True, arguments={**QUORUM, "x-max-priority": 5})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for "
                                  f"queue '{name}' in vhost '/' of queue type "
                                  "rabbit_quorum_queue")


def test_global_qos_is_refused_when_consuming(broker, quorum):
    q = quorum()
    conn = pika.BlockingConnection(pika.URLParameters(broker.url()))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10, global_qos=True)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.basic_consume(q, lambda *a: None)
    assert e.value.reply_code == 540
    assert e.value.reply_text == (f"NOT_IMPLEMENTED - queue '{q}' in vhost '/' does not "
                                  "support global qos")


def test_classic_only_arguments_and_properties_are_refused(conn):
    for args, kwargs, text in [
        ({"x-queue-mode": "lazy"}, {"durable": True}, "invalid arg 'x-queue-mode'"),
        ({"x-dead-letter-strategy": "bogus"}, {"durable": True}, "invalid_dlx_strategy"),
        ({}, {"durable": False}, "invalid property 'non-durable'"),
        ({}, {"durable": True, "exclusive": True}, "invalid property 'exclusive-owner'"),
    ]:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(unique("no"), arguments={**QUORUM, **args}, **kwargs)
        assert e.value.reply_code == 406 and text in e.value.reply_text


# -- queue expiry and policies --------------------------------------------------------------------
def test_a_consumer_keeps_an_expiring_quorum_queue_alive(conn, ch, quorum):
    q = quorum(**{"x-expires": 300})
    consumer = conn.channel()
    tag = consumer.basic_consume(q, lambda *a: None)
    conn.process_data_events(time_limit=1.0)  # over three expiry periods with a consumer
    assert count(ch, q) == 0  # still there
    consumer.basic_cancel(tag)

    def gone() -> bool:
        probe = conn.channel()
        try:
            probe.queue_declare(q, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code == 404
        probe.close()
        return False

    wait_for(gone, 5, interval_s=0.1, what="the queue to expire once unused")


def test_arguments_and_policy_combine_as_rabbitmq_3_10_combines_them(node_factory):
    """max-length: the smaller; overflow: the policy's; dead-letter exchange: the argument's."""
    node = node_factory("qq-policy")
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    ch.confirm_delivery()
    for x in ("by-arg", "by-policy"):
        ch.exchange_declare(x, "fanout")
        ch.queue_declare(f"{x}-dead")
        ch.queue_bind(f"{x}-dead", x)
    ch.queue_declare("q", durable=True, arguments={
        **QUORUM, "x-max-length": 5, "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "by-arg"})
    r = node.ctl("set_policy", "p", "^q$", '{"max-length": 2, "overflow": "drop-head", '
                 '"dead-letter-exchange": "by-policy"}', "--apply-to", "queues")
    assert r.returncode == 0, r.stderr

    def trimmed_to_two() -> bool:
        ch.basic_publish("", "q", b"m")  # never nacked once drop-head is in force
        return count(ch, "q") == 2 and count(ch, "by-arg-dead") > 0

    wait_for(trimmed_to_two, 5, what="the policy to apply")
    assert count(ch, "by-policy-dead") == 0
    conn.close()
