"""basic.get, basic.ack / nack / reject and basic.recover as RabbitMQ 3.10 does them.

With pika and aio-pika (and raw frames for basic.recover-async, which neither sends):
get-ok's message_count and get-empty, acks single and multiple (delivery_tag 0 with
multiple=true means "everything outstanding"), requeue to the message's original position
with redelivered=true, dropping on requeue=false, 406 for unknown, repeated or foreign
delivery tags, requeue of unacked messages when the channel or connection closes, and
recover (requeue=false is 540 NOT_IMPLEMENTED, connection-level).
"""

from __future__ import annotations

import aio_pika
import aiormq.exceptions
import pika
import pika.exceptions
import pytest
from pamqp import commands

from tests.support.node import wait_for
from tests.support.rawamqp import RawClient

from .helpers import TIMEOUT_S, pump, until

# -- helpers -----------------------------------------------------------------


def gets(channel, name: str, count: int) -> list:
    """`count` basic.get (with acks) that must all return a message."""
    out = []
    for _ in range(count):
        method, _, body = channel.basic_get(name)
        assert method is not None, "basic.get returned get-empty"
        out.append((method, body))
    return out


async def agets(queue: aio_pika.abc.AbstractQueue, count: int) -> list:
    return [await queue.get(no_ack=False, timeout=TIMEOUT_S) for _ in range(count)]


def sync_point_fails(channel) -> pika.exceptions.ChannelClosedByBroker:
    """pika sends acks without waiting: a synchronous method shows the channel's fate."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.basic_qos(prefetch_count=0)
    return info.value


MESSAGES = [f"m{i}".encode() for i in range(5)]


def unknown_tag(delivery_tag: int) -> str:
    return f"PRECONDITION_FAILED - unknown delivery tag {delivery_tag}"


# -- basic.get ----------------------------------------------------------------


def test_get_ok_counts_the_rest_and_get_empty(conn, admin):
    name = admin.queue(messages=3)
    channel = conn.channel()
    counts = []
    for expected in MESSAGES[:3]:
        method, properties, body = channel.basic_get(name, auto_ack=True)
        assert body == expected and not method.redelivered
        assert method.exchange == "" and method.routing_key == name
        counts.append(method.message_count)
    assert counts == [2, 1, 0]
    assert channel.basic_get(name) == (None, None, None)  # get-empty


async def test_get_ok_counts_the_rest_and_get_empty_aio(aconn, admin):
    name = admin.queue(messages=3)
    channel = await aconn.channel()
    underlay = await channel.get_underlay_channel()
    counts = []
    for expected in MESSAGES[:3]:
        message = await underlay.basic_get(name, no_ack=True)
        assert isinstance(message.delivery, commands.Basic.GetOk)
        assert message.body == expected and not message.delivery.redelivered
        counts.append(message.delivery.message_count)
    assert counts == [2, 1, 0]
    empty = await underlay.basic_get(name, no_ack=True)
    assert isinstance(empty.delivery, commands.Basic.GetEmpty)
    queue = await channel.get_queue(name)
    assert await queue.get(fail=False, timeout=TIMEOUT_S) is None


def test_get_without_no_ack_keeps_the_message_unacked(conn, admin):
    name = admin.queue(messages=2)
    channel = conn.channel()
    (method, body), = gets(channel, name, 1)
    assert method.delivery_tag == 1 and body == b"m0"
    assert admin.ready(name) == 1
    channel.basic_ack(method.delivery_tag)
    channel.close()
    assert admin.drain(name) == [(b"m1", False)]


def test_get_with_no_ack_needs_no_ack(conn, admin):
    name = admin.queue(messages=1)
    channel = conn.channel()
    method, _, body = channel.basic_get(name, auto_ack=True)
    assert body == b"m0"
    channel.close()
    assert admin.ready(name) == 0


# -- basic.ack ----------------------------------------------------------------


def test_ack_single_and_multiple(conn, admin):
    name = admin.queue(messages=5)
    channel = conn.channel()
    got = gets(channel, name, 5)
    assert [m.delivery_tag for m, _ in got] == [1, 2, 3, 4, 5]
    channel.basic_ack(4)  # single, out of order
    channel.basic_ack(2, multiple=True)  # 1 and 2
    channel.close()  # 3 and 5 are requeued
    assert admin.drain(name) == [(b"m2", True), (b"m4", True)]


async def test_ack_single_and_multiple_aio(aconn, admin):
    name = admin.queue(messages=5)
    channel = await aconn.channel()
    got = await agets(await channel.get_queue(name), 5)
    assert [m.delivery_tag for m in got] == [1, 2, 3, 4, 5]
    await got[3].ack()
    await got[1].ack(multiple=True)
    await channel.close()
    assert admin.drain(name) == [(b"m2", True), (b"m4", True)]


def test_ack_multiple_with_tag_zero_acks_everything_outstanding(conn, admin):
    name = admin.queue(messages=4)
    channel = conn.channel()
    gets(channel, name, 4)
    channel.basic_ack(0, multiple=True)
    channel.basic_qos(prefetch_count=0)  # a round trip: the channel is still open
    channel.close()
    assert admin.ready(name) == 0


async def test_ack_multiple_with_tag_zero_acks_everything_outstanding_aio(aconn, admin):
    name = admin.queue(messages=4)
    channel = await aconn.channel()
    await agets(await channel.get_queue(name), 4)
    await (await channel.get_underlay_channel()).basic_ack(0, multiple=True)
    await channel.set_qos(prefetch_count=0)
    await channel.close()
    assert admin.ready(name) == 0


def test_ack_multiple_with_tag_zero_and_nothing_outstanding_is_fine(conn):
    channel = conn.channel()
    channel.basic_ack(0, multiple=True)
    channel.basic_qos(prefetch_count=0)
    assert channel.is_open


def test_ack_of_tag_zero_without_multiple_is_unknown(conn, admin):
    name = admin.queue(messages=1)
    channel = conn.channel()
    gets(channel, name, 1)
    channel.basic_ack(0)
    error = sync_point_fails(channel)
    assert (error.reply_code, error.reply_text) == (406, unknown_tag(0))


def test_ack_of_an_unknown_tag_fails_the_channel(conn):
    channel = conn.channel()
    channel.basic_ack(7)
    error = sync_point_fails(channel)
    assert (error.reply_code, error.reply_text) == (406, unknown_tag(7))
    assert conn.is_open


async def test_ack_of_an_unknown_tag_fails_the_channel_aio(aconn):
    channel = await aconn.channel()
    await (await channel.get_underlay_channel()).basic_ack(7)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
        await channel.set_qos(prefetch_count=0)
    assert info.value.args[0] == "PRECONDITION_FAILED - unknown delivery tag 7"
    assert not aconn.is_closed


def test_double_ack_fails_the_channel(conn, admin):
    name = admin.queue(messages=1)
    channel = conn.channel()
    (method, _), = gets(channel, name, 1)
    channel.basic_ack(method.delivery_tag)
    channel.basic_ack(method.delivery_tag)
    error = sync_point_fails(channel)
    assert (error.reply_code, error.reply_text) == (406, unknown_tag(1))
    assert admin.ready(name) == 0  # the first ack counted


async def test_double_ack_fails_the_channel_aio(aconn, admin):
    name = admin.queue(messages=1)
    channel = await aconn.channel()
    (message,) = await agets(await channel.get_queue(name), 1)
    underlay = await channel.get_underlay_channel()
    await underlay.basic_ack(message.delivery_tag)
    await underlay.basic_ack(message.delivery_tag)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
        await channel.set_qos(prefetch_count=0)
    assert info.value.args[0] == "PRECONDITION_FAILED - unknown delivery tag 1"


def test_ack_on_another_channel_fails_that_channel(conn, admin):
    name = admin.queue(messages=1)
    delivering = conn.channel()
    (method, _), = gets(delivering, name, 1)
    other = conn.channel()
    other.basic_ack(method.delivery_tag)
    error = sync_point_fails(other)
    assert (error.reply_code, error.reply_text) == (406, unknown_tag(1))
    assert delivering.is_open
    delivering.basic_ack(method.delivery_tag)  # the real owner still can
    delivering.close()
    assert admin.ready(name) == 0


async def test_ack_on_another_channel_fails_that_channel_aio(aconn, admin):
    name = admin.queue(messages=1)
    delivering = await aconn.channel()
    (message,) = await agets(await delivering.get_queue(name), 1)
    other = await aconn.channel()
    await (await other.get_underlay_channel()).basic_ack(message.delivery_tag)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
        await other.set_qos(prefetch_count=0)
    assert info.value.args[0] == "PRECONDITION_FAILED - unknown delivery tag 1"
    await message.ack()
    await delivering.close()
    assert admin.ready(name) == 0


def test_nack_and_reject_of_unknown_tags_fail_the_channel(conn):
    for send in (lambda ch: ch.basic_nack(3), lambda ch: ch.basic_reject(3)):
        channel = conn.channel()
        send(channel)
        error = sync_point_fails(channel)
        assert error.reply_code == 406
        assert error.reply_text == "PRECONDITION_FAILED - unknown delivery tag 3"


# -- basic.nack / basic.reject -----------------------------------------------------


def test_requeued_messages_return_to_their_original_position(conn, admin):
    name = admin.queue(messages=5)
    channel = conn.channel()
    gets(channel, name, 3)
    channel.basic_nack(3, requeue=True)
    channel.basic_reject(1, requeue=True)
    channel.basic_ack(2)
    channel.close()
    assert admin.drain(name) == [(b"m0", True), (b"m2", True), (b"m3", False), (b"m4", False)]


async def test_requeued_messages_return_to_their_original_position_aio(aconn, admin):
    name = admin.queue(messages=5)
    channel = await aconn.channel()
    got = await agets(await channel.get_queue(name), 3)
    await got[2].nack(requeue=True)
    await got[0].reject(requeue=True)
    await got[1].ack()
    await channel.close()
    assert admin.drain(name) == [(b"m0", True), (b"m2", True), (b"m3", False), (b"m4", False)]


def test_nack_multiple_requeue_redelivers_in_order_to_a_consumer(conn, admin):
    name = admin.queue(messages=3)
    channel = conn.channel()
    got: list = []
    channel.basic_consume(name, lambda ch, m, p, b: got.append((m, b)))
    pump(conn, lambda: len(got) == 3, what="3 deliveries")
    channel.basic_nack(got[-1][0].delivery_tag, multiple=True, requeue=True)
    pump(conn, lambda: len(got) == 6, what="3 redeliveries")
    assert [(b, m.redelivered) for m, b in got[3:]] == [(b, True) for b in MESSAGES[:3]]
    assert [m.delivery_tag for m, _ in got] == [1, 2, 3, 4, 5, 6]
    channel.basic_ack(6, multiple=True)
    channel.close()
    assert admin.ready(name) == 0


async def test_nack_multiple_requeue_redelivers_in_order_to_a_consumer_aio(aconn, admin):
    name = admin.queue(messages=3)
    channel = await aconn.channel()
    got: list = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        got.append(message)

    await (await channel.get_queue(name)).consume(on_message)
    await until(lambda: len(got) == 3, what="3 deliveries")
    await got[-1].nack(multiple=True, requeue=True)
    await until(lambda: len(got) == 6, what="3 redeliveries")
    assert [(m.body, m.redelivered) for m in got[3:]] == [(b, True) for b in MESSAGES[:3]]
    await got[-1].ack(multiple=True)
    await channel.close()
    assert admin.ready(name) == 0


def test_nack_and_reject_without_requeue_drop_the_message(conn, admin):
    name = admin.queue(messages=4)
    channel = conn.channel()
    gets(channel, name, 3)
    channel.basic_nack(2, multiple=True, requeue=False)  # m0 and m1
    channel.basic_reject(3, requeue=False)  # m2
    channel.close()
    assert admin.drain(name) == [(b"m3", False)]


async def test_nack_and_reject_without_requeue_drop_the_message_aio(aconn, admin):
    name = admin.queue(messages=4)
    channel = await aconn.channel()
    got = await agets(await channel.get_queue(name), 3)
    await got[1].nack(multiple=True, requeue=False)
    await got[2].reject(requeue=False)
    await channel.close()
    assert admin.drain(name) == [(b"m3", False)]


# -- requeue when the channel or connection goes -----------------------------------


def test_unacked_messages_are_requeued_when_the_channel_closes(conn, admin):
    name = admin.queue(messages=3)
    channel = conn.channel()
    gets(channel, name, 2)
    assert admin.ready(name) == 1
    channel.close()
    assert admin.drain(name) == [(b"m0", True), (b"m1", True), (b"m2", False)]


def test_unacked_messages_are_requeued_when_the_connection_closes(broker, admin):
    name = admin.queue(messages=3)
    connection = pika.BlockingConnection(pika.URLParameters(broker.url()))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=2)
        got: list = []
        channel.basic_consume(name, lambda ch, m, p, b: got.append(b))
        pump(connection, lambda: len(got) == 2, what="2 deliveries")
    finally:
        connection.close()
    wait_for(lambda: admin.ready(name) == 3, TIMEOUT_S, what="requeue on connection close")
    assert admin.drain(name) == [(b"m0", True), (b"m1", True), (b"m2", False)]


async def test_unacked_messages_are_requeued_when_the_connection_closes_aio(broker, admin):
    name = admin.queue(messages=3)
    connection = await aio_pika.connect(broker.url())
    try:
        channel = await connection.channel()
        await agets(await channel.get_queue(name), 2)
    finally:
        await connection.close()
    wait_for(lambda: admin.ready(name) == 3, TIMEOUT_S, what="requeue on connection close")
    assert admin.drain(name) == [(b"m0", True), (b"m1", True), (b"m2", False)]


# -- basic.recover -------------------------------------------------------------------


def test_recover_requeue_redelivers_unacked_messages(conn, admin):
    name = admin.queue(messages=3)
    channel = conn.channel()
    gets(channel, name, 2)
    channel.basic_recover(requeue=True)  # waits for recover-ok
    again = gets(channel, name, 3)
    assert [(b, m.redelivered) for m, b in again] == [
        (b"m0", True), (b"m1", True), (b"m2", False)]
    assert [m.delivery_tag for m, _ in again] == [3, 4, 5]
    channel.basic_ack(5, multiple=True)
    channel.close()
    assert admin.ready(name) == 0


def test_recover_requeue_redelivers_to_the_consumer(conn, admin):
    name = admin.queue(messages=2)
    channel = conn.channel()
    got: list = []
    channel.basic_consume(name, lambda ch, m, p, b: got.append((m, b)))
    pump(conn, lambda: len(got) == 2, what="2 deliveries")
    channel.basic_recover(requeue=True)
    pump(conn, lambda: len(got) == 4, what="2 redeliveries")
    assert [(b, m.redelivered) for m, b in got] == [
        (b"m0", False), (b"m1", False), (b"m0", True), (b"m1", True)]


async def test_recover_requeue_redelivers_unacked_messages_aio(aconn, admin):
    name = admin.queue(messages=2)
    channel = await aconn.channel()
    queue = await channel.get_queue(name)
    await agets(queue, 2)
    ok = await (await channel.get_underlay_channel()).basic_recover(requeue=True)
    assert isinstance(ok, commands.Basic.RecoverOk)
    again = await agets(queue, 2)
    assert [(m.body, m.redelivered) for m in again] == [(b"m0", True), (b"m1", True)]
    await again[1].ack(multiple=True)
    await channel.close()
    assert admin.ready(name) == 0


def test_recover_without_requeue_is_not_implemented(conn):
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        channel.basic_recover(requeue=False)
    assert info.value.reply_code == 540
    assert info.value.reply_text == "NOT_IMPLEMENTED - requeue=false"


async def test_recover_without_requeue_is_not_implemented_aio(aconn):
    channel = await aconn.channel()
    with pytest.raises(aiormq.exceptions.ConnectionNotImplemented) as info:
        await (await channel.get_underlay_channel()).basic_recover(requeue=False)
    assert info.value.args[0] == "NOT_IMPLEMENTED - requeue=false"


@pytest.mark.filterwarnings("ignore:This command is deprecated:DeprecationWarning")
def test_recover_async_requeues_without_a_reply_raw(broker, admin):
    name = admin.queue(messages=1)
    with RawClient(broker.host, broker.port) as raw:
        raw.handshake(user=broker.user, password=broker.password)
        raw.open_channel(1)
        raw.send_method(commands.Basic.Get(queue=name), 1)
        first = raw.expect(commands.Basic.GetOk)
        raw.read_frame()  # content header
        raw.read_frame()  # body
        assert not first.redelivered
        raw.send_method(commands.Basic.RecoverAsync(requeue=True), 1)
        # recover-async has no reply: the next frame answers the next get
        raw.send_method(commands.Basic.Get(queue=name), 1)
        again = raw.expect(commands.Basic.GetOk)
        assert again.redelivered and again.delivery_tag == 2
        raw.read_frame()
        assert raw.read_frame().frame.value == b"m0"
        raw.send_method(commands.Basic.Ack(delivery_tag=2), 1)
        raw.send_method(commands.Basic.RecoverAsync(requeue=False), 1)
        close = raw.expect_connection_close()
        assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - requeue=false")
        assert (close.class_id, close.method_id) == (60, 100)
    assert admin.ready(name) == 0
