"""basic.qos, basic.consume and basic.cancel as RabbitMQ 3.10 does them, with pika and aio-pika.

Covers prefetch per consumer (global=false), per channel (global=true) and both at once,
prefetch_size != 0 (540, connection-level), unlimited prefetch, consumer tags
(server-generated "amq.ctag-" and client-chosen, reuse -> 530 connection-level), no_ack,
exclusive consumers (403), consuming from a missing queue (404), round-robin delivery,
cancel (also of an unknown tag), unacked deliveries outliving their cancelled consumer,
and consumer priorities (x-priority).

Where prefetch stops deliveries, the queue's own ready count (queue.declare passive) is the
witness: it is what the queue has not handed out, so no sleep is needed to see "no more".
"""

from __future__ import annotations

from collections.abc import Callable

import aio_pika
import aiormq.exceptions
import pika
import pika.exceptions
import pytest
from pamqp import commands

from tests.conftest import unique
from tests.support.node import wait_for
from tests.support.rawamqp import RawClient

from .helpers import TIMEOUT_S, pump, until

# -- helpers -----------------------------------------------------------------


def collector(store: list) -> Callable:
    def on_message(channel, method, properties, body):
        store.append((method, body))
    return on_message


def acollector(store: list) -> Callable:
    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        store.append(message)
    return on_message


# -- basic.qos ---------------------------------------------------------------


def test_qos_per_consumer_limits_each_new_consumer_separately(conn, admin):
    q1, q2 = admin.queue(messages=5), admin.queue(messages=5)
    channel = conn.channel()
    channel.basic_qos(prefetch_count=2, global_qos=False)
    got1: list = []
    got2: list = []
    channel.basic_consume(q1, collector(got1))
    channel.basic_consume(q2, collector(got2))
    pump(conn, lambda: len(got1) == 2 and len(got2) == 2, what="2 deliveries each")
    assert admin.ready(q1) == 3 and admin.ready(q2) == 3
    assert len(got1) == 2 and len(got2) == 2
    channel.basic_ack(got1[0][0].delivery_tag)
    pump(conn, lambda: len(got1) == 3, what="delivery after ack")
    assert admin.ready(q1) == 2 and admin.ready(q2) == 3
    assert len(got2) == 2


async def test_qos_per_consumer_limits_each_new_consumer_separately_aio(aconn, admin):
    q1, q2 = admin.queue(messages=5), admin.queue(messages=5)
    channel = await aconn.channel()
    await channel.set_qos(prefetch_count=2, global_=False)
    got1: list = []
    got2: list = []
    await (await channel.get_queue(q1)).consume(acollector(got1))
    await (await channel.get_queue(q2)).consume(acollector(got2))
    await until(lambda: len(got1) == 2 and len(got2) == 2, what="2 deliveries each")
    assert admin.ready(q1) == 3 and admin.ready(q2) == 3
    await got1[0].ack()
    await until(lambda: len(got1) == 3, what="delivery after ack")
    assert admin.ready(q1) == 2 and admin.ready(q2) == 3
    assert len(got2) == 2


def test_qos_global_is_shared_by_the_channels_consumers(conn, admin):
    q1, q2 = admin.queue(messages=5), admin.queue(messages=5)
    channel = conn.channel()
    channel.basic_qos(prefetch_count=3, global_qos=True)
    got: list = []
    channel.basic_consume(q1, collector(got))
    channel.basic_consume(q2, collector(got))
    pump(conn, lambda: len(got) == 3, what="3 deliveries")
    assert admin.ready(q1) + admin.ready(q2) == 7
    channel.basic_ack(got[0][0].delivery_tag)
    pump(conn, lambda: len(got) == 4, what="a 4th delivery after one ack")
    assert admin.ready(q1) + admin.ready(q2) == 6


async def test_qos_global_is_shared_by_the_channels_consumers_aio(aconn, admin):
    q1, q2 = admin.queue(messages=5), admin.queue(messages=5)
    channel = await aconn.channel()
    await channel.set_qos(prefetch_count=3, global_=True)
    got: list = []
    await (await channel.get_queue(q1)).consume(acollector(got))
    await (await channel.get_queue(q2)).consume(acollector(got))
    await until(lambda: len(got) == 3, what="3 deliveries")
    assert admin.ready(q1) + admin.ready(q2) == 7
    await got[0].ack()
    await until(lambda: len(got) == 4, what="a 4th delivery after one ack")
    assert admin.ready(q1) + admin.ready(q2) == 6


def test_qos_per_consumer_and_global_both_apply(conn, admin):
    q1, q2 = admin.queue(messages=5), admin.queue(messages=5)
    channel = conn.channel()
    channel.basic_qos(prefetch_count=2, global_qos=False)
    channel.basic_qos(prefetch_count=3, global_qos=True)
    got1: list = []
    got2: list = []
    channel.basic_consume(q1, collector(got1))
    channel.basic_consume(q2, collector(got2))
    pump(conn, lambda: len(got1) + len(got2) == 3, what="3 deliveries in all")
    assert admin.ready(q1) + admin.ready(q2) == 7
    assert sorted([len(got1), len(got2)]) == [1, 2]
    # acking one of the consumer that holds 2 frees the channel and that consumer
    full, other = (got1, got2) if len(got1) == 2 else (got2, got1)
    channel.basic_ack(full[0][0].delivery_tag)
    pump(conn, lambda: len(got1) + len(got2) == 4, what="a 4th delivery")
    assert admin.ready(q1) + admin.ready(q2) == 6


async def test_qos_per_consumer_and_global_both_apply_aio(aconn, admin):
    q1, q2 = admin.queue(messages=5), admin.queue(messages=5)
    channel = await aconn.channel()
    await channel.set_qos(prefetch_count=2, global_=False)
    await channel.set_qos(prefetch_count=3, global_=True)
    got1: list = []
    got2: list = []
    await (await channel.get_queue(q1)).consume(acollector(got1))
    await (await channel.get_queue(q2)).consume(acollector(got2))
    await until(lambda: len(got1) + len(got2) == 3, what="3 deliveries in all")
    assert admin.ready(q1) + admin.ready(q2) == 7
    assert sorted([len(got1), len(got2)]) == [1, 2]


def test_qos_prefetch_size_is_not_implemented(conn):
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        channel.basic_qos(prefetch_size=1024)
    assert info.value.reply_code == 540
    assert info.value.reply_text == "NOT_IMPLEMENTED - prefetch_size!=0 (1024)"


async def test_qos_prefetch_size_is_not_implemented_aio(aconn):
    channel = await aconn.channel()
    with pytest.raises(aiormq.exceptions.ConnectionNotImplemented) as info:
        await channel.set_qos(prefetch_size=1024)
    assert info.value.args[0] == "NOT_IMPLEMENTED - prefetch_size!=0 (1024)"
    with pytest.raises((RuntimeError, aiormq.exceptions.AMQPConnectionError)):
        await aconn.channel()  # the whole connection is gone


def test_qos_zero_is_unlimited(conn, admin):
    name = admin.queue(messages=30)
    channel = conn.channel()
    channel.basic_qos(prefetch_count=5)
    channel.basic_qos(prefetch_count=0)
    got: list = []
    channel.basic_consume(name, collector(got))
    pump(conn, lambda: len(got) == 30, what="all 30 deliveries unacked")
    assert admin.ready(name) == 0
    assert [m.delivery_tag for m, _ in got] == list(range(1, 31))


async def test_qos_zero_is_unlimited_aio(aconn, admin):
    name = admin.queue(messages=30)
    channel = await aconn.channel()
    await channel.set_qos(prefetch_count=0)
    got: list = []
    await (await channel.get_queue(name)).consume(acollector(got))
    await until(lambda: len(got) == 30, what="all 30 deliveries unacked")
    assert admin.ready(name) == 0


# -- basic.consume: tags -------------------------------------------------------


def test_consumer_tags_client_chosen(conn, admin):
    name = admin.queue()
    channel = conn.channel()
    assert channel.basic_consume(name, collector([]), consumer_tag="my-tag") == "my-tag"
    assert admin.consumers(name) == 1


def test_consumer_tags_server_generated_raw(broker, admin):
    # pika and aio-pika always choose a tag themselves: an empty one needs raw frames
    name = admin.queue()
    with RawClient(broker.host, broker.port) as raw:
        raw.handshake(user=broker.user, password=broker.password)
        raw.open_channel(1)
        tags = set()
        for _ in range(2):
            raw.send_method(commands.Basic.Consume(queue=name, consumer_tag=""), 1)
            tags.add(raw.expect(commands.Basic.ConsumeOk).consumer_tag)
        assert len(tags) == 2
        assert all(t.startswith("amq.ctag-") and len(t) > len("amq.ctag-") for t in tags)
        assert admin.consumers(name) == 2


async def test_consumer_tags_server_generated_and_client_chosen_aio(aconn, admin):
    name = admin.queue()
    channel = await aconn.channel()
    underlay = await channel.get_underlay_channel()
    # aiormq.Channel.rpc sends the method as given (its basic_consume invents a tag)
    ok = await underlay.rpc(commands.Basic.Consume(queue=name, consumer_tag=""))
    assert isinstance(ok, commands.Basic.ConsumeOk)
    assert ok.consumer_tag.startswith("amq.ctag-")
    ok = await underlay.basic_consume(name, acollector([]), consumer_tag="my-tag")
    assert ok.consumer_tag == "my-tag"
    assert admin.consumers(name) == 2


def test_reused_consumer_tag_closes_the_connection(conn, admin):
    name = admin.queue()
    channel = conn.channel()
    channel.basic_consume(name, collector([]), consumer_tag="dup")
    # pika refuses a duplicate tag itself, so go below it to the wire
    channel._impl._send_method(pika.spec.Basic.Consume(queue=name, consumer_tag="dup"))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        pump(conn, lambda: False, what="the connection to close")
    assert info.value.reply_code == 530
    assert info.value.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"


async def test_reused_consumer_tag_closes_the_connection_aio(aconn, admin):
    name = admin.queue()
    channel = await aconn.channel()
    underlay = await channel.get_underlay_channel()
    await underlay.basic_consume(name, acollector([]), consumer_tag="dup")
    # aiormq refuses a duplicate tag itself (DuplicateConsumerTag): send it with rpc
    with pytest.raises(aiormq.exceptions.ConnectionNotAllowed) as info:
        await underlay.rpc(commands.Basic.Consume(queue=name, consumer_tag="dup"))
    assert info.value.args[0] == "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"


def test_same_consumer_tag_on_another_channel_is_allowed(conn, admin):
    name = admin.queue()
    assert conn.channel().basic_consume(name, collector([]), consumer_tag="same") == "same"
    assert conn.channel().basic_consume(name, collector([]), consumer_tag="same") == "same"
    assert admin.consumers(name) == 2


# -- basic.consume: no_ack, exclusive, missing queue -----------------------------


def test_no_ack_consumer_leaves_nothing_unacked(conn, admin):
    name = admin.queue(messages=10)
    channel = conn.channel()
    channel.basic_qos(prefetch_count=1)  # ignored for no_ack consumers
    got: list = []
    channel.basic_consume(name, collector(got), auto_ack=True)
    pump(conn, lambda: len(got) == 10, what="10 deliveries")
    assert [b for _, b in got] == [f"m{i}".encode() for i in range(10)]
    assert all(not m.redelivered for m, _ in got)
    channel.close()  # nothing to requeue
    assert admin.ready(name) == 0


async def test_no_ack_consumer_leaves_nothing_unacked_aio(aconn, admin):
    name = admin.queue(messages=10)
    channel = await aconn.channel()
    got: list = []
    await (await channel.get_queue(name)).consume(acollector(got), no_ack=True)
    await until(lambda: len(got) == 10, what="10 deliveries")
    assert [m.body for m in got] == [f"m{i}".encode() for i in range(10)]
    await channel.close()
    assert admin.ready(name) == 0


def test_exclusive_consumer_refuses_a_second_consumer(conn, admin):
    name = admin.queue()
    conn.channel().basic_consume(name, collector([]), exclusive=True)
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.basic_consume(name, collector([]))
    assert info.value.reply_code == 403
    assert info.value.reply_text == f"ACCESS_REFUSED - queue '{name}' in vhost '/' in exclusive use"
    assert conn.is_open


def test_exclusive_consume_on_a_queue_with_consumers_is_refused(conn, admin):
    name = admin.queue()
    conn.channel().basic_consume(name, collector([]))
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.basic_consume(name, collector([]), exclusive=True)
    assert info.value.reply_code == 403
    assert info.value.reply_text == f"ACCESS_REFUSED - queue '{name}' in vhost '/' in exclusive use"


async def test_exclusive_consumer_refuses_a_second_consumer_aio(aconn, admin):
    name = admin.queue()
    first = await aconn.channel()
    await (await first.get_queue(name)).consume(acollector([]), exclusive=True)
    second = await aconn.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as info:
        await (await second.get_queue(name)).consume(acollector([]))
    assert info.value.args[0] == f"ACCESS_REFUSED - queue '{name}' in vhost '/' in exclusive use"
    third = await aconn.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await (await third.get_queue(name)).consume(acollector([]), exclusive=True)


async def test_exclusive_consume_on_a_queue_with_consumers_is_refused_aio(aconn, admin):
    name = admin.queue()
    first = await aconn.channel()
    await (await first.get_queue(name)).consume(acollector([]))
    second = await aconn.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as info:
        await (await second.get_queue(name)).consume(acollector([]), exclusive=True)
    assert info.value.args[0] == f"ACCESS_REFUSED - queue '{name}' in vhost '/' in exclusive use"


def test_exclusive_consumer_cancelled_frees_the_queue(conn, admin):
    name = admin.queue()
    channel = conn.channel()
    tag = channel.basic_consume(name, collector([]), exclusive=True)
    channel.basic_cancel(tag)
    assert conn.channel().basic_consume(name, collector([]), consumer_tag="next") == "next"


def test_consume_from_a_missing_queue_is_not_found(conn):
    name = unique("missing")
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.basic_consume(name, collector([]))
    assert info.value.reply_code == 404
    assert info.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"
    assert conn.is_open


async def test_consume_from_a_missing_queue_is_not_found_aio(aconn):
    name = unique("missing")
    channel = await aconn.channel()
    underlay = await channel.get_underlay_channel()
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as info:
        await underlay.basic_consume(name, acollector([]))
    assert info.value.args[0] == f"NOT_FOUND - no queue '{name}' in vhost '/'"
    assert not aconn.is_closed


# -- delivery to several consumers -------------------------------------------------


def test_round_robin_between_consumers(conn, admin):
    name = admin.queue()
    channel = conn.channel()
    got: list = []
    tags = [channel.basic_consume(name, collector(got)) for _ in range(3)]
    for i in range(9):
        channel.basic_publish("", name, f"r{i}".encode())
    pump(conn, lambda: len(got) == 9, what="9 deliveries")
    by_tag = {tag: [b for m, b in got if m.consumer_tag == tag] for tag in tags}
    assert sorted(len(bodies) for bodies in by_tag.values()) == [3, 3, 3]
    # each consumer got every third message, in order
    assert sorted(by_tag.values()) == [[f"r{j}".encode() for j in range(k, 9, 3)] for k in range(3)]


async def test_round_robin_between_consumers_aio(aconn, admin):
    name = admin.queue()
    channel = await aconn.channel()
    got: list = []
    queue = await channel.get_queue(name)
    tags = [await queue.consume(acollector(got)) for _ in range(3)]
    for i in range(9):
        await channel.default_exchange.publish(aio_pika.Message(f"r{i}".encode()), name)
    await until(lambda: len(got) == 9, what="9 deliveries")
    by_tag = {tag: [m.body for m in got if m.consumer_tag == tag] for tag in tags}
    assert sorted(by_tag.values()) == [[f"r{j}".encode() for j in range(k, 9, 3)] for k in range(3)]


def test_consumer_priority_is_accepted_and_preferred(conn, admin):
    name = admin.queue()
    channel = conn.channel()
    low: list = []
    high: list = []
    channel.basic_consume(name, collector(low), arguments={"x-priority": 1})
    channel.basic_consume(name, collector(high), arguments={"x-priority": 10})
    for i in range(5):
        channel.basic_publish("", name, f"p{i}".encode())
    pump(conn, lambda: len(high) == 5, what="5 deliveries to the high-priority consumer")
    assert low == []
    assert admin.ready(name) == 0


async def test_consumer_priority_is_accepted_and_preferred_aio(aconn, admin):
    name = admin.queue()
    channel = await aconn.channel()
    queue = await channel.get_queue(name)
    low: list = []
    high: list = []
    await queue.consume(acollector(low), arguments={"x-priority": 1})
    await queue.consume(acollector(high), arguments={"x-priority": 10})
    for i in range(5):
        await channel.default_exchange.publish(aio_pika.Message(f"p{i}".encode()), name)
    await until(lambda: len(high) == 5, what="5 deliveries to the high-priority consumer")
    assert low == []


# -- basic.cancel ----------------------------------------------------------------


def test_cancel_stops_deliveries(conn, admin):
    name = admin.queue()
    channel = conn.channel()
    got: list = []
    tag = channel.basic_consume(name, collector(got), auto_ack=True)
    channel.basic_publish("", name, b"before")
    pump(conn, lambda: len(got) == 1, what="first delivery")
    channel.basic_cancel(tag)
    assert admin.consumers(name) == 0
    channel.basic_publish("", name, b"after")
    wait_for(lambda: admin.ready(name) == 1, TIMEOUT_S, what="message to stay queued")
    assert [b for _, b in got] == [b"before"]


async def test_cancel_ok_and_unknown_tag_aio(aconn, admin):
    name = admin.queue()
    channel = await aconn.channel()
    underlay = await channel.get_underlay_channel()
    ok = await underlay.basic_consume(name, acollector([]), consumer_tag="c1")
    cancel = await underlay.basic_cancel(ok.consumer_tag)
    assert isinstance(cancel, commands.Basic.CancelOk) and cancel.consumer_tag == "c1"
    assert admin.consumers(name) == 0
    unknown = await underlay.basic_cancel("no-such-consumer")
    assert isinstance(unknown, commands.Basic.CancelOk)
    assert unknown.consumer_tag == "no-such-consumer"
    assert not channel.is_closed


def test_cancel_of_an_unknown_tag_is_cancel_ok_raw(broker):
    # pika drops a cancel for a tag it does not know without sending it: use raw frames
    with RawClient(broker.host, broker.port) as raw:
        raw.handshake(user=broker.user, password=broker.password)
        raw.open_channel(1)
        raw.send_method(commands.Basic.Cancel(consumer_tag="never-was"), 1)
        ok = raw.expect(commands.Basic.CancelOk)
        assert ok.consumer_tag == "never-was"
        raw.send_method(commands.Basic.Qos(prefetch_count=1), 1)  # the channel is still open
        raw.expect(commands.Basic.QosOk)


def test_unacked_deliveries_outlive_their_cancelled_consumer(conn, admin):
    name = admin.queue(messages=4)
    channel = conn.channel()
    channel.basic_qos(prefetch_count=2)
    got: list = []
    tag = channel.basic_consume(name, collector(got))
    pump(conn, lambda: len(got) == 2, what="2 deliveries")
    channel.basic_cancel(tag)
    assert admin.ready(name) == 2  # still unacked, not requeued by the cancel
    channel.basic_ack(got[0][0].delivery_tag)  # acking after cancel is allowed
    assert admin.ready(name) == 2
    channel.close()  # the other one is requeued only now
    wait_for(lambda: admin.ready(name) == 3, TIMEOUT_S, what="requeue on channel close")
    check = conn.channel()
    method, _, body = check.basic_get(name, auto_ack=True)
    assert body == b"m1" and method.redelivered


async def test_unacked_deliveries_outlive_their_cancelled_consumer_aio(aconn, admin):
    name = admin.queue(messages=4)
    channel = await aconn.channel()
    await channel.set_qos(prefetch_count=2)
    got: list = []
    queue = await channel.get_queue(name)
    tag = await queue.consume(acollector(got))
    await until(lambda: len(got) == 2, what="2 deliveries")
    await queue.cancel(tag)
    assert admin.ready(name) == 2
    await got[0].ack()
    await got[1].ack()
    await channel.close()
    assert admin.ready(name) == 2
