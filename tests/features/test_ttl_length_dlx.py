"""Message TTL (queue and per message), queue expiry, length limits with every overflow mode
and dead-lettering with RabbitMQ's x-death header, by argument and by policy, on classic and
quorum queues alike (`queue_type`; what only one type has is said where it is tested)."""

from __future__ import annotations

import time

import pika
import pytest

from tests.conftest import unique
from tests.features.conftest import count, declare_queue, get_all
from tests.support.node import wait_for


def _dlx_pair(ch, declare, **args) -> tuple[str, str, str]:
    """A queue of the test's type with the given arguments, dead-lettering into a fanout DLX
    bound to a (classic) queue."""
    dlx, dead = unique("dlx"), unique("dead")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    ch.queue_declare(dead, exclusive=True)
    ch.queue_bind(dead, dlx)
    q = declare(ch, unique("q"), {"x-dead-letter-exchange": dlx, **args})
    return q, dead, dlx


def test_queue_ttl_expires_messages_into_the_dlx_with_x_death(ch, declare):
    q, dead, dlx = _dlx_pair(ch, declare, **{"x-message-ttl": 100})
    ch.basic_publish("", q, b"old", pika.BasicProperties(headers={"k": "v"}))
    wait_for(lambda: count(ch, dead) == 1, 5, what="the message to expire")
    assert count(ch, q) == 0
    [(body, headers)] = get_all(ch, dead)
    assert body == b"old" and headers["k"] == "v"
    [death] = headers["x-death"]
    assert death["count"] == 1 and death["reason"] == "expired" and death["queue"] == q
    assert death["exchange"] == "" and death["routing-keys"] == [q]
    assert headers["x-first-death-reason"] == "expired"
    assert headers["x-first-death-queue"] == q


def test_per_message_ttl_and_original_expiration(ch, declare, queue_type):
    q, dead, _ = _dlx_pair(ch, declare)
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="50"))
    ch.basic_publish("", q, b"forever")
    wait_for(lambda: count(ch, dead) == 1, 5, what="the short-lived message to expire")
    [(body, headers)] = get_all(ch, dead)
    assert body == b"short"
    assert headers["x-death"][0]["original-expiration"] == "50"
    [(body, headers)] = get_all(ch, q)
    assert body == b"forever"
    # a quorum queue counts failed deliveries on every basic.get (RabbitMQ 3.10)
    assert headers == ({} if queue_type == "classic" else {"x-delivery-count": 0})


def test_invalid_expiration_is_precondition_failed(conn, declare):
    ch = conn.channel()
    q = declare(ch)
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="soon"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(q, passive=True)
    assert e.value.reply_code == 406
    assert "invalid expiration" in e.value.reply_text


def test_ttl_zero_delivers_to_a_waiting_consumer_or_expires(ch, conn, declare):
    q = declare(ch, arguments={"x-message-ttl": 0})
    ch.basic_publish("", q, b"nobody waits")
    time.sleep(0.01)  # not synchronisation: only lets the wall clock move past publish time
    assert ch.basic_get(q)[0] is None
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", q, b"taken at once")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert got == [b"taken at once"]


def test_rejected_messages_are_dead_lettered(ch, declare):
    q, dead, _ = _dlx_pair(ch, declare)
    for body in (b"a", b"b"):
        ch.basic_publish("", q, body)
    m1 = ch.basic_get(q)[0]
    m2 = ch.basic_get(q)[0]
    ch.basic_reject(m1.delivery_tag, requeue=False)
    ch.basic_nack(m2.delivery_tag, requeue=True)  # requeued: not dead
    wait_for(lambda: count(ch, dead) == 1, 5, what="the rejection")
    [(body, headers)] = get_all(ch, dead)
    assert body == b"a" and headers["x-death"][0]["reason"] == "rejected"
    assert count(ch, q) == 1


def test_x_death_counts_repeated_deaths_in_the_same_queue(ch, declare):
    q, dead, dlx = _dlx_pair(ch, declare)
    ch.queue_bind(q, dlx)  # dead letters come back to q: rejected twice
    ch.queue_unbind(dead, dlx)
    ch.basic_publish("", q, b"boomerang")
    for _ in range(2):
        m = ch.basic_get(q)[0]
        ch.basic_reject(m.delivery_tag, requeue=False)
        wait_for(lambda: count(ch, q) == 1, 5, what="the message to come back")
    _, props, _ = ch.basic_get(q, auto_ack=True)
    [death] = props.headers["x-death"]
    assert death["count"] == 2 and death["reason"] == "rejected"


def test_expiry_cycle_is_dropped(ch, declare):
    """A queue dead-lettering to itself on expiry would loop forever: RabbitMQ drops it."""
    dlx = unique("cyc")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    q = declare(ch, unique("q"), {"x-dead-letter-exchange": dlx, "x-message-ttl": 50})
    ch.queue_bind(q, dlx)
    ch.basic_publish("", q, b"loop")
    time.sleep(0.3)  # several TTLs: with no cycle detection it would keep coming back
    wait_for(lambda: count(ch, q) == 0, 5, what="the cycling message to be dropped")


def test_max_length_drop_head_dead_letters_the_oldest(ch, declare):
    q, dead, _ = _dlx_pair(ch, declare, **{"x-max-length": 2})
    for body in (b"1", b"2", b"3", b"4"):
        ch.basic_publish("", q, body)
    assert [b for b, _ in get_all(ch, q)] == [b"3", b"4"]
    dead_letters = get_all(ch, dead)
    assert [b for b, _ in dead_letters] == [b"1", b"2"]
    assert dead_letters[0][1]["x-death"][0]["reason"] == "maxlen"


def test_max_length_bytes(ch, declare):
    q = declare(ch, arguments={"x-max-length-bytes": 10})
    for body in (b"12345", b"67890", b"abcde"):
        ch.basic_publish("", q, body)
    assert [b for b, _ in get_all(ch, q)] == [b"67890", b"abcde"]


def test_reject_publish_nacks_the_publisher(ch, declare):
    q = declare(ch, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", q, b"fits")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"refused")
    assert [b for b, _ in get_all(ch, q)] == [b"fits"]
    ch.basic_publish("", q, b"room again")  # confirms keep working after a nack
    assert [b for b, _ in get_all(ch, q)] == [b"room again"]


def test_reject_publish_dlx_dead_letters_the_refused(ch, declare, queue_type):
    q, dead, _ = _dlx_pair(ch, declare, **{"x-max-length": 1,
                                           "x-overflow": "reject-publish-dlx"})
    ch.basic_publish("", q, b"fits")
    # on a quorum queue too (deliberately unlike RabbitMQ 3.10, which falls back to
    # drop-head there): the refused message is nacked and dead-lettered, the queue keeps its
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"refused")
    wait_for(lambda: count(ch, dead) == 1, 5, what="the refused message dead-lettered")
    [(body, headers)] = get_all(ch, dead)
    assert body == b"refused" and headers["x-death"][0]["reason"] == "maxlen"
    assert [b for b, _ in get_all(ch, q)] == [b"fits"]


def test_queue_expires_when_unused(ch, queue_type):
    # not exclusive, so it is not deleted with the connection first
    q = unique("exp")
    args = {"x-expires": 200, **({"x-queue-type": "quorum"} if queue_type == "quorum" else {})}
    ch.queue_declare(q, durable=queue_type == "quorum", arguments=args)

    def gone() -> bool:
        try:
            probe = ch.connection.channel()
            probe.queue_declare(q, passive=True)
            probe.close()
            return False
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code == 404

    # any declare of a classic queue, passive included, renews the lease (as in RabbitMQ; a
    # quorum queue's is renewed by consumers and basic.get only): probe less often than the
    # expiry
    wait_for(gone, 5, interval_s=0.5, what="the unused queue to expire")


def test_policies_set_ttl_length_and_dlx(node_factory, queue_type):
    node = node_factory("feature-policy")
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("dlx", "fanout")
    ch.queue_declare("dead")
    ch.queue_bind("dead", "dlx")
    # on a private node: the classic one need not be exclusive, and nothing is left over
    if queue_type == "quorum":
        declare_queue(ch, queue_type, "limited")
    else:
        ch.queue_declare("limited")
    for body in (b"1", b"2", b"3"):
        ch.basic_publish("", "limited", body)
    r = node.ctl("set_policy", "lim", "^limited$",
                 '{"max-length": 1, "dead-letter-exchange": "dlx"}', "--apply-to", "queues")
    assert r.returncode == 0, r.stderr
    # existing queues take the policy at once: the two oldest are dropped into the DLX
    wait_for(lambda: count(ch, "dead") == 2, 5, what="the policy to apply")
    assert [b for b, _ in get_all(ch, "limited")] == [b"3"]
    r = node.ctl("set_policy", "ttl", "^limited$", '{"message-ttl": 50, '
                 '"dead-letter-exchange": "dlx"}', "--priority", "5", "--apply-to", "queues")
    assert r.returncode == 0, r.stderr
    ch.basic_publish("", "limited", b"short-lived")
    wait_for(lambda: count(ch, "dead") == 3, 5, what="the policy TTL")
    conn.close()
