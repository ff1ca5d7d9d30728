"""Publisher confirms (confirm.*), transactions (tx.*) and channel.flow as RabbitMQ 3.10 does them.

With pika (BlockingConnection; SelectConnection to watch callback order), aio-pika, and raw
frames where the order or the absence of a reply is the point: delivery tags 1..n, acks
(possibly multiple) for routed and unroutable messages, basic.return before basic.ack for a
mandatory unroutable message, confirm/tx exclusivity (406), confirm.select nowait,
tx publish/ack visibility on commit and rollback, tx.commit/rollback without tx.select
(406), and channel.flow (active=false is 540 NOT_IMPLEMENTED, connection-level).
"""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq.exceptions
import pika
import pika.exceptions
import pytest
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from tests.conftest import unique
from tests.support.node import wait_for
from tests.support.rawamqp import RawClient

from .helpers import TIMEOUT_S

NOT_TRANSACTIONAL = "PRECONDITION_FAILED - channel is not transactional"
TX_TO_CONFIRM = "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
CONFIRM_TO_TX = "PRECONDITION_FAILED - cannot switch from confirm to tx mode"


# -- helpers -----------------------------------------------------------------


@pytest.fixture
def raw(broker):
    with RawClient(broker.host, broker.port) as client:
        client.handshake(user=broker.user, password=broker.password)
        client.open_channel(1)
        yield client


def raw_publish(raw: RawClient, routing_key: str, body: bytes, exchange: str = "",
                mandatory: bool = False) -> None:
    raw.send(b"".join([
        _marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                        mandatory=mandatory)),
        _marshal(ContentHeader(body_size=len(body), properties=commands.Basic.Properties())),
        _marshal(ContentBody(body)),
    ]))


def _marshal(value) -> bytes:
    return frame.marshal(value, 1)


def confirmed_tags(raw: RawClient, count: int) -> tuple[set[int], list]:
    """Read confirms until tags 1..count are all covered; (covered tags, the ack frames)."""
    covered: set[int] = set()
    frames = []
    while len(covered) < count:
        ack = raw.expect(commands.Basic.Ack)
        frames.append(ack)
        if ack.multiple:
            covered |= set(range(1, ack.delivery_tag + 1))
        else:
            covered.add(ack.delivery_tag)
    return covered, frames


# -- confirm.select --------------------------------------------------------------


def test_confirms_cover_tags_one_to_n_raw(raw, admin):
    name = admin.queue()
    raw.send_method(commands.Confirm.Select(), 1)
    raw.expect(commands.Confirm.SelectOk)
    for i in range(20):
        raw_publish(raw, name if i % 4 else unique("nowhere"), f"c{i}".encode())
    covered, frames = confirmed_tags(raw, 20)
    assert covered == set(range(1, 21))
    # RabbitMQ confirms an unroutable message at once but a routed one only when its queue
    # has taken it, so confirms may come out of order; no tag is confirmed twice
    assert len({f.delivery_tag for f in frames}) == len(frames)
    wait_for(lambda: admin.ready(name) == 15, TIMEOUT_S, what="15 routed messages")


def test_confirms_for_routed_and_unroutable_messages(conn, admin):
    name = admin.queue()
    channel = conn.channel()
    channel.confirm_delivery()
    # BlockingChannel waits for each confirm and raises on nack or return
    for i in range(5):
        channel.basic_publish("", name, f"c{i}".encode())
    channel.basic_publish("", unique("nowhere"), b"dropped")  # not mandatory: acked
    channel.basic_publish("amq.direct", unique("nowhere"), b"dropped")
    assert admin.ready(name) == 5
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        channel.basic_publish("", unique("nowhere"), b"returned", mandatory=True)
    (returned,) = info.value.messages
    assert returned.method.reply_code == 312 and returned.method.reply_text == "NO_ROUTE"
    assert returned.body == b"returned"


async def test_confirms_for_routed_and_unroutable_messages_aio(aconn, admin):
    name = admin.queue()
    channel = await aconn.channel(publisher_confirms=True)
    underlay = await channel.get_underlay_channel()
    confirms = [await underlay.basic_publish(f"c{i}".encode(), routing_key=name)
                for i in range(5)]
    assert [type(c) for c in confirms] == [commands.Basic.Ack] * 5
    assert [c.delivery_tag for c in confirms] == [1, 2, 3, 4, 5]
    dropped = await underlay.basic_publish(b"dropped", routing_key=unique("nowhere"))
    assert isinstance(dropped, commands.Basic.Ack) and dropped.delivery_tag == 6
    many = await asyncio.gather(*[
        channel.default_exchange.publish(aio_pika.Message(b"x"), name) for _ in range(30)])
    assert all(isinstance(c, commands.Basic.Ack) for c in many)
    assert admin.ready(name) == 35
    # aiormq settles the publish with whichever comes first, return or ack: the return
    returned = await channel.default_exchange.publish(
        aio_pika.Message(b"returned"), unique("nowhere"), mandatory=True)
    assert isinstance(returned.delivery, commands.Basic.Return)
    assert (returned.delivery.reply_code, returned.delivery.reply_text) == (312, "NO_ROUTE")
    assert returned.body == b"returned"
    raising = await aconn.channel(publisher_confirms=True, on_return_raises=True)
    with pytest.raises(aiormq.exceptions.PublishError) as info:
        await raising.default_exchange.publish(
            aio_pika.Message(b"returned"), unique("nowhere"), mandatory=True)
    assert isinstance(info.value.frame, commands.Basic.Return)


def test_mandatory_unroutable_is_returned_before_it_is_acked_raw(raw):
    raw.send_method(commands.Confirm.Select(), 1)
    raw.expect(commands.Confirm.SelectOk)
    key = unique("nowhere")
    raw_publish(raw, key, b"back to you", mandatory=True)
    returned = raw.expect(commands.Basic.Return)
    assert (returned.reply_code, returned.reply_text) == (312, "NO_ROUTE")
    assert (returned.exchange, returned.routing_key) == ("", key)
    header = raw.read_method().frame
    assert isinstance(header, ContentHeader) and header.body_size == 11
    assert raw.read_method().frame.value == b"back to you"
    ack = raw.expect(commands.Basic.Ack)
    assert (ack.delivery_tag, ack.multiple) == (1, False)


def test_mandatory_unroutable_is_returned_before_it_is_acked_select(broker):
    """The same order, as a pika SelectConnection application sees it in its callbacks."""
    events: list[str] = []
    key = unique("nowhere")

    def on_open(connection):
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel):
        channel.add_on_return_callback(
            lambda ch, method, props, body: events.append(f"return {method.reply_code} {body!r}"))
        channel.confirm_delivery(
            lambda frame: on_confirm(channel, frame), callback=lambda _: publish(channel))

    def publish(channel):
        channel.basic_publish("", key, b"r", mandatory=True)

    def on_confirm(channel, frame):
        events.append(f"{frame.method.NAME} {frame.method.delivery_tag}")
        channel.connection.close()

    connection = pika.SelectConnection(
        pika.URLParameters(broker.url()), on_open_callback=on_open,
        on_open_error_callback=lambda c, e: events.append(f"error {e!r}"),
        on_close_callback=lambda c, e: c.ioloop.stop())
    timer = connection.ioloop.call_later(TIMEOUT_S, connection.ioloop.stop)
    connection.ioloop.start()
    connection.ioloop.remove_timeout(timer)
    if not connection.is_closed:
        connection.close()
        connection.ioloop.start()
    assert events == ["return 312 b'r'", "Basic.Ack 1"]


def test_confirm_select_nowait_raw(raw, admin):
    name = admin.queue()
    raw.send_method(commands.Confirm.Select(nowait=True), 1)
    raw_publish(raw, name, b"one")
    # no select-ok: the first frame back is the confirm of the publish
    ack = raw.expect(commands.Basic.Ack)
    assert ack.delivery_tag == 1


def test_confirm_select_on_a_tx_channel_fails(conn):
    channel = conn.channel()
    channel.tx_select()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.confirm_delivery()
    assert (info.value.reply_code, info.value.reply_text) == (406, TX_TO_CONFIRM)
    assert conn.is_open


def test_tx_select_on_a_confirm_channel_fails(conn):
    channel = conn.channel()
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.tx_select()
    assert (info.value.reply_code, info.value.reply_text) == (406, CONFIRM_TO_TX)


async def test_confirm_and_tx_exclude_each_other_aio(aconn):
    channel = await aconn.channel(publisher_confirms=False)
    await channel.transaction().select()
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
        await (await channel.get_underlay_channel()).confirm_delivery()
    assert info.value.args[0] == TX_TO_CONFIRM
    channel = await aconn.channel(publisher_confirms=True)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
        await (await channel.get_underlay_channel()).tx_select()
    assert info.value.args[0] == CONFIRM_TO_TX


def test_confirm_select_twice_is_fine_raw(raw):
    for _ in range(2):
        raw.send_method(commands.Confirm.Select(), 1)
        raw.expect(commands.Confirm.SelectOk)


# -- tx.* -----------------------------------------------------------------------------


def test_tx_publishes_appear_on_commit_and_vanish_on_rollback(conn, admin):
    name = admin.queue()
    channel = conn.channel()
    channel.tx_select()
    channel.basic_publish("", name, b"t0")
    channel.basic_publish("", name, b"t1")
    channel.basic_qos(prefetch_count=0)  # a round trip: the publishes have arrived
    assert admin.ready(name) == 0
    channel.tx_commit()
    assert admin.ready(name) == 2
    channel.basic_publish("", name, b"gone")
    channel.tx_rollback()
    channel.basic_publish("", name, b"t2")
    channel.tx_commit()  # the channel stays transactional after commit and rollback
    assert admin.drain(name) == [(b"t0", False), (b"t1", False), (b"t2", False)]


async def test_tx_publishes_appear_on_commit_and_vanish_on_rollback_aio(aconn, admin):
    name = admin.queue()
    channel = await aconn.channel(publisher_confirms=False)
    tx = channel.transaction()
    await tx.select()
    await channel.default_exchange.publish(aio_pika.Message(b"t0"), name)
    await channel.set_qos(prefetch_count=0)
    assert admin.ready(name) == 0
    await tx.commit()
    assert admin.ready(name) == 1
    await channel.default_exchange.publish(aio_pika.Message(b"gone"), name)
    await tx.rollback()
    await channel.default_exchange.publish(aio_pika.Message(b"t1"), name)
    await tx.commit()
    assert admin.drain(name) == [(b"t0", False), (b"t1", False)]


def test_tx_acks_take_effect_only_on_commit(conn, admin):
    name = admin.queue(messages=2)
    channel = conn.channel()
    channel.tx_select()
    first, _, _ = channel.basic_get(name)
    second, _, _ = channel.basic_get(name)
    channel.basic_ack(first.delivery_tag)
    channel.tx_rollback()  # the ack is undone: the message is unacked again
    channel.basic_ack(first.delivery_tag)  # so acking it again is no error
    channel.basic_reject(second.delivery_tag, requeue=False)
    channel.basic_qos(prefetch_count=0)
    assert admin.ready(name) == 0
    channel.tx_commit()
    channel.close()
    assert admin.ready(name) == 0


def test_tx_rollback_leaves_acked_messages_unacked(conn, admin):
    name = admin.queue(messages=2)
    channel = conn.channel()
    channel.tx_select()
    channel.basic_get(name)
    channel.basic_get(name)
    channel.basic_ack(2, multiple=True)
    channel.tx_rollback()
    channel.close()  # both are still unacked, so both are requeued
    assert admin.drain(name) == [(b"m0", True), (b"m1", True)]


async def test_tx_acks_take_effect_only_on_commit_aio(aconn, admin):
    name = admin.queue(messages=2)
    channel = await aconn.channel(publisher_confirms=False)
    tx = channel.transaction()
    await tx.select()
    queue = await channel.get_queue(name)
    first = await queue.get(no_ack=False, timeout=TIMEOUT_S)
    second = await queue.get(no_ack=False, timeout=TIMEOUT_S)
    await first.ack()
    await tx.rollback()
    await second.ack()
    await tx.commit()
    await channel.close()
    assert admin.drain(name) == [(b"m0", True)]


def test_tx_commit_and_rollback_without_select_fail(conn):
    for method in ("tx_commit", "tx_rollback"):
        channel = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            getattr(channel, method)()
        assert (info.value.reply_code, info.value.reply_text) == (406, NOT_TRANSACTIONAL)
    assert conn.is_open


async def test_tx_commit_and_rollback_without_select_fail_aio(aconn):
    for method in ("tx_commit", "tx_rollback"):
        channel = await aconn.channel(publisher_confirms=False)
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
            await getattr(await channel.get_underlay_channel(), method)()
        assert info.value.args[0] == NOT_TRANSACTIONAL


def test_tx_commit_without_select_names_the_method_raw(raw):
    raw.send_method(commands.Tx.Rollback(), 1)
    close = raw.expect(commands.Channel.Close)
    assert (close.reply_code, close.reply_text) == (406, NOT_TRANSACTIONAL)
    assert (close.class_id, close.method_id) == (90, 30)


# -- channel.flow ---------------------------------------------------------------------


def test_channel_flow_active_true_is_acknowledged(conn):
    channel = conn.channel()
    assert channel.flow(True) is True
    assert channel.is_open


def test_channel_flow_active_false_is_not_implemented(conn):
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        channel.flow(False)
    assert (info.value.reply_code, info.value.reply_text) == (540, "NOT_IMPLEMENTED - active=false")


async def test_channel_flow_aio(aconn):
    channel = await aconn.channel()
    underlay = await channel.get_underlay_channel()
    ok = await underlay.flow(True)
    assert isinstance(ok, commands.Channel.FlowOk) and ok.active is True
    with pytest.raises(aiormq.exceptions.ConnectionNotImplemented) as info:
        await underlay.flow(False)
    assert info.value.args[0] == "NOT_IMPLEMENTED - active=false"


def test_channel_flow_false_closes_the_connection_raw(raw):
    raw.send_method(commands.Channel.Flow(active=False), 1)
    close = raw.expect_connection_close()
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - active=false")
    assert (close.class_id, close.method_id) == (20, 20)
