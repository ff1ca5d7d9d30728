"""Connection-level protocol: the protocol header, authentication (PLAIN, AMQPLAIN),
virtual host checks, tune negotiation, heartbeats, server properties, channel
numbering and the connection.close handshake, as RabbitMQ 3.10 behaves.

Clients: pika, aio-pika, py-amqp, and the raw client where the libraries hide
the wire.
"""

from __future__ import annotations

import socket
import time

import aio_pika
import aiormq
import amqp
import pika
import pika.exceptions
import pytest
from pamqp import body as pbody
from pamqp import commands, heartbeat
from pamqp import header as pheader

from tests.conftest import unique
from tests.support.node import Node, wait_for
from tests.support.rawamqp import (
    PROTOCOL_HEADER,
    RawClient,
    ServerClosed,
    amqplain_response,
    close_summary,
    plain_response,
)

CAPABILITIES = (
    "publisher_confirms", "exchange_exchange_bindings", "basic.nack",
    "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
    "authentication_failure_close", "per_consumer_qos", "direct_reply_to",
)
AUTH_REFUSED_TEXT = "ACCESS_REFUSED - Login was refused using authentication mechanism"


def raw(broker: Node, timeout_s: float = 5.0) -> RawClient:
    return RawClient(broker.host, broker.port, timeout_s).connect()


def pika_params(broker: Node, vhost: str = "/", **kw: object) -> pika.URLParameters:
    query = "&".join(f"{k}={v}" for k, v in {"connection_attempts": 1, **kw}.items())
    return pika.URLParameters(f"{broker.url(vhost)}?{query}")


def wait_socket_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Read until EOF or reset; return what arrived. TimeoutError if it stays open."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the server did not close the socket")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


# -- protocol header ------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    b"AMQP\x00\x00\x09\x00",
    b"AMQP\x00\x01\x00\x00",  # AMQP 1.0
    b"HTTP/1.1",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_wrong_protocol_header_gets_the_supported_header_then_close(broker: Node, header: bytes):
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(header)
        assert wait_socket_closed(sock, 5.0) == PROTOCOL_HEADER


def test_good_header_gets_connection_start(broker: Node):
    with raw(broker) as c:
        c.send(PROTOCOL_HEADER)
        start = c.expect(commands.Connection.Start)
        assert (start.version_major, start.version_minor) == (0, 9)
        assert set(start.mechanisms.split()) >= {"PLAIN", "AMQPLAIN"}
        assert "en_US" in start.locales.split()


# -- server properties ------------------------------------------------------------------


def test_server_properties_and_capabilities(broker: Node):
    with raw(broker) as c:
        c.handshake(open_connection=False)
        props = c.start.server_properties
    for key in ("product", "version", "platform", "copyright", "information", "cluster_name"):
        assert isinstance(props.get(key), str) and props[key], key
    assert props["capabilities"] == {name: True for name in CAPABILITIES}


def test_pika_sees_capabilities(broker: Node):
    conn = pika.BlockingConnection(pika_params(broker))
    try:
        caps = conn._impl.server_capabilities
        assert all(caps.get(name) is True for name in CAPABILITIES)
    finally:
        conn.close()


# -- authentication -------------------------------------------------------------------


def test_plain_auth_with_pika_roundtrip(broker: Node):
    conn = pika.BlockingConnection(pika_params(broker))
    try:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", queue, b"plain")
        method, _, body = ch.basic_get(queue, auto_ack=True)
        assert body == b"plain" and method.message_count == 0
    finally:
        conn.close()


def test_amqplain_auth_with_py_amqp(broker: Node):
    conn = amqp.Connection(f"{broker.host}:{broker.port}", userid=broker.user,
                           password=broker.password, login_method="AMQPLAIN", connect_timeout=5)
    conn.connect()
    try:
        ch = conn.channel()
        declared = ch.queue_declare("", exclusive=True)
        assert declared.queue.startswith("amq.gen-") and declared.message_count == 0
    finally:
        conn.close()


def test_amqplain_auth_with_raw_client(broker: Node):
    with raw(broker) as c:
        c.handshake(user=broker.user, password=broker.password, mechanism="AMQPLAIN")
        c.open_channel(1)
        c.send_method(commands.Connection.Close(200, "bye", 0, 0))
        c.expect(commands.Connection.CloseOk)


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_wrong_password_gets_access_refused_close(broker: Node, mechanism: str):
    with raw(broker) as c:
        c.connect()
        c.send(PROTOCOL_HEADER)
        c.expect(commands.Connection.Start)
        response = (plain_response(broker.user, "wrong") if mechanism == "PLAIN"
                    else amqplain_response(broker.user, "wrong"))
        c.send_method(commands.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism=mechanism, response=response))
        close = c.expect(commands.Connection.Close)
        code, class_id, method_id, text = close_summary(close)
        assert (code, class_id, method_id) == (403, 0, 0)
        assert text.startswith(f"{AUTH_REFUSED_TEXT} {mechanism}")
        c.send_method(commands.Connection.CloseOk())
        assert c.read_until_closed() == []


def test_wrong_password_pika(broker: Node):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(pika.URLParameters(
            broker.url(password="wrong-password") + "?connection_attempts=1"))
    assert "(403)" in str(info.value) and "ACCESS_REFUSED" in str(info.value)


def test_unknown_user_pika(broker: Node):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(
            broker.url(user=unique("nobody")) + "?connection_attempts=1"))


async def test_wrong_password_aio_pika(broker: Node):
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError) as info:
        await aio_pika.connect(broker.url(password="wrong-password"), timeout=5)
    assert str(info.value.args[0]).startswith(AUTH_REFUSED_TEXT)


def test_unknown_vhost_gets_not_allowed_on_connection_open(broker: Node):
    vhost = unique("no-such-vhost")
    with raw(broker) as c:
        c.handshake(open_connection=False)
        c.send_method(commands.Connection.Open(virtual_host=vhost))
        close = c.expect_connection_close()
    assert close_summary(close) == (530, 10, 40, f"NOT_ALLOWED - vhost {vhost} not found")


def test_unknown_vhost_pika(broker: Node):
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(pika_params(broker, vhost=unique("no-such-vhost")))
    assert "(530)" in str(info.value) and "NOT_ALLOWED" in str(info.value)


async def test_aio_pika_roundtrip_and_channel_reopen(broker: Node):
    conn = await aio_pika.connect(broker.url(), timeout=5)
    try:
        ch = await conn.channel()
        queue = await ch.declare_queue(exclusive=True)
        await ch.default_exchange.publish(aio_pika.Message(b"aio"), routing_key=queue.name)
        msg = await queue.get(timeout=5)
        assert msg.body == b"aio"
        await msg.ack()
        await ch.close()
        ch2 = await conn.channel()
        declared = await ch2.declare_queue(queue.name, passive=True)
        assert declared.declaration_result.message_count == 0
    finally:
        await conn.close()


def test_handshake_errors_close_silently(broker: Node):
    """Before connection.open-ok RabbitMQ does not trust the client: on a bad tune-ok, an
    unknown mechanism, or bad credentials from a client without the
    authentication_failure_close capability it closes the socket without a frame."""
    cases: dict[str, RawClient] = {}

    def tuned(name: str, **kw: object) -> None:
        c = cases[name] = raw(broker, timeout_s=10)
        c.handshake(open_connection=False, **kw)
        c.send_method(commands.Connection.Open(virtual_host="/"))

    tuned("frame_max below 4096", frame_max=4095)
    tuned("frame_max above the server's", frame_max=server_frame_max(broker) + 1)
    tuned("frame_max 0 (unlimited)", frame_max=0)
    tuned("channel_max above the server's", channel_max=server_channel_max(broker) + 1)
    tuned("channel_max 0 (unlimited)", channel_max=0)
    for name, mech, caps in [("unknown mechanism", "NOPE", None),
                             ("bad password, no capability", "PLAIN", {})]:
        c = cases[name] = raw(broker, timeout_s=10)
        c.send(PROTOCOL_HEADER)
        c.expect(commands.Connection.Start)
        c.send_method(commands.Connection.StartOk(
            client_properties={"capabilities": caps or {}}, mechanism=mech,
            response=plain_response(broker.user, "wrong")))
    try:
        frames = {name: [f.name for f in c.read_until_closed(10)] for name, c in cases.items()}
    finally:
        for c in cases.values():
            c.close()
    assert frames == {name: [] for name in cases}


def server_frame_max(broker: Node) -> int:
    with raw(broker) as c:
        c.handshake(open_connection=False)
        return c.tune.frame_max


def server_channel_max(broker: Node) -> int:
    with raw(broker) as c:
        c.handshake(open_connection=False)
        return c.tune.channel_max


# -- tune negotiation -----------------------------------------------------------------


def test_server_proposes_rabbitmq_defaults(broker: Node):
    with raw(broker) as c:
        c.handshake(open_connection=False)
        assert (c.tune.channel_max, c.tune.frame_max, c.tune.heartbeat) == (2047, 131072, 60)


def test_client_gets_smaller_tune_values(broker: Node):
    conn = pika.BlockingConnection(pika_params(broker, channel_max=10, frame_max=8192,
                                               heartbeat=7))
    try:
        params = conn._impl.params
        assert (params.channel_max, params.frame_max, params.heartbeat) == (10, 8192, 7)
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        body = bytes(range(256)) * 100  # 25600 bytes: several body frames of <= 8192
        ch.basic_publish("", queue, body)
        _, _, got = ch.basic_get(queue, auto_ack=True)
        assert got == body
    finally:
        conn.close()


def test_server_splits_bodies_to_the_negotiated_frame_max(broker: Node):
    body = b"x" * 10000
    with raw(broker) as c:
        c.handshake(frame_max=4096)
        c.open_channel(1)
        c.send_method(commands.Queue.Declare(queue="", exclusive=True), 1)
        queue = c.expect(commands.Queue.DeclareOk).queue
        c.send_method(commands.Basic.Publish(exchange="", routing_key=queue), 1)
        c.send_frame(pheader.ContentHeader(0, len(body), commands.Basic.Properties()), 1)
        for i in range(0, len(body), 4000):
            c.send_frame(pbody.ContentBody(body[i:i + 4000]), 1)
        c.send_method(commands.Basic.Get(queue=queue, no_ack=True), 1)
        c.expect(commands.Basic.GetOk)
        header = c.read_frame()
        assert header.frame.body_size == len(body)
        got, sizes = b"", []
        while len(got) < len(body):
            frame = c.read_frame()
            assert isinstance(frame.frame, pbody.ContentBody)
            got += frame.frame.value
            sizes.append(len(frame.frame.value) + 8)
        assert got == body and max(sizes) <= 4096 and len(sizes) == 3


def test_channel_max_limits_open_channels(broker: Node):
    with raw(broker) as c:
        c.handshake(channel_max=2)
        c.open_channel(1)
        c.open_channel(2)
        c.send_method(commands.Channel.Open(), 3)
        close = c.expect_connection_close()
    assert close_summary(close) == (
        530, 0, 0,
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)")


def test_channel_numbers_above_channel_max_are_accepted(broker: Node):
    """RabbitMQ limits the number of open channels, not the channel numbers."""
    with raw(broker) as c:
        c.handshake(channel_max=2)
        c.open_channel(5)
        c.open_channel(2000)
        c.send_method(commands.Basic.Qos(prefetch_count=1), 2000)
        assert c.read_method().channel == 2000


# -- heartbeats -----------------------------------------------------------------------


def test_heartbeats_negotiated_at_one_second(broker: Node):
    """A silent client is dropped after missing heartbeats; one that sends them stays."""
    silent = raw(broker, timeout_s=10).handshake(heartbeat_s=1)
    active = raw(broker, timeout_s=10).handshake(heartbeat_s=1)
    try:
        started = time.monotonic()
        seen_by_active = 0
        silent_frames: list = []
        silent_closed_at = None
        next_beat = started
        while silent_closed_at is None:
            now = time.monotonic()
            assert now - started < 10, "the silent client was never disconnected"
            if now >= next_beat:
                active.send_frame(heartbeat.Heartbeat())
                next_beat = now + 0.5
            try:
                silent_frames.append(silent.read_frame(0.1).frame)
            except TimeoutError:
                pass
            except ServerClosed:
                silent_closed_at = time.monotonic() - started
            try:
                got = active.read_frame(0.05)
                seen_by_active += isinstance(got.frame, heartbeat.Heartbeat)
            except TimeoutError:
                pass
        assert 1.5 <= silent_closed_at <= 6.0
        assert all(isinstance(f, heartbeat.Heartbeat) for f in silent_frames)
        assert len(silent_frames) >= 1
        assert seen_by_active >= 1
        # the active client is still served
        active.open_channel(1)
    finally:
        silent.close()
        active.close()


def test_heartbeat_value_from_client_wins(broker: Node):
    conn = pika.BlockingConnection(pika_params(broker, heartbeat=3))
    try:
        assert conn._impl.params.heartbeat == 3
    finally:
        conn.close()


# -- channels -------------------------------------------------------------------------


def test_channel_open_twice_is_a_channel_error(broker: Node):
    with raw(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(commands.Channel.Open(), 1)
        close = c.expect_connection_close()
    assert close_summary(close) == (504, 20, 10, "CHANNEL_ERROR - second 'channel.open' seen")


def test_close_and_reopen_a_channel_number(broker: Node):
    with raw(broker) as c:
        c.handshake()
        for _ in range(3):
            c.open_channel(1)
            c.send_method(commands.Channel.Close(200, "done", 0, 0), 1)
            got = c.read_method()
            assert (got.channel, type(got.frame)) == (1, commands.Channel.CloseOk)


def test_reopen_a_channel_after_a_channel_error(broker: Node):
    missing = unique("missing")
    with raw(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(commands.Queue.Declare(queue=missing, passive=True), 1)
        got = c.read_method()
        assert got.channel == 1 and isinstance(got.frame, commands.Channel.Close)
        assert close_summary(got.frame) == (
            404, 50, 10, f"NOT_FOUND - no queue '{missing}' in vhost '/'")
        c.send_method(commands.Channel.CloseOk(), 1)
        c.open_channel(1)
        c.send_method(commands.Queue.Declare(queue="", exclusive=True), 1)
        assert isinstance(c.read_method().frame, commands.Queue.DeclareOk)


def test_pika_closes_and_reopens_channels(broker: Node):
    conn = pika.BlockingConnection(pika_params(broker))
    try:
        first = conn.channel(channel_number=1)
        first.close()
        again = conn.channel(channel_number=1)
        queue = again.queue_declare("", exclusive=True).method.queue
        again.basic_publish("", queue, b"again")
        assert again.basic_get(queue, auto_ack=True)[2] == b"again"
    finally:
        conn.close()


def test_server_discards_methods_until_channel_close_ok(broker: Node):
    """After sending channel.close the server drops the client's methods on that channel
    until channel.close-ok, instead of failing the connection."""
    missing = unique("missing")
    with raw(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(commands.Queue.Declare(queue=missing, passive=True), 1)
        c.send_method(commands.Queue.Declare(queue="", exclusive=True), 1)
        c.send_method(commands.Basic.Qos(prefetch_count=1), 1)
        got = c.read_method()
        assert got.channel == 1 and close_summary(got.frame)[:3] == (404, 50, 10)
        c.send_method(commands.Basic.Qos(prefetch_count=2), 1)
        c.send_method(commands.Channel.CloseOk(), 1)
        c.open_channel(1)
        c.send_method(commands.Basic.Qos(prefetch_count=3), 1)
        assert isinstance(c.read_method().frame, commands.Basic.QosOk)


# -- connection.close -----------------------------------------------------------------


def test_client_initiated_connection_close_handshake(broker: Node):
    with raw(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(commands.Connection.Close(200, "bye", 0, 0))
        c.expect(commands.Connection.CloseOk)
        # RabbitMQ leaves closing the socket to the client (it waits up to 30 s for it).


def test_server_initiated_close_waits_for_close_ok(broker: Node):
    with raw(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(commands.Channel.Open(), 1)
        close = c.expect(commands.Connection.Close)
        assert close.reply_code == 504
        c.send_method(commands.Connection.CloseOk())
        assert [f for f in c.read_until_closed() if not isinstance(f.frame, heartbeat.Heartbeat)] == []


def test_connection_close_deletes_its_exclusive_queues(broker: Node):
    conn = pika.BlockingConnection(pika_params(broker))
    queue = conn.channel().queue_declare(unique("excl"), exclusive=True).method.queue
    conn.close()
    observer = pika.BlockingConnection(pika_params(broker))
    try:
        def gone() -> bool:
            ch = observer.channel()
            try:
                ch.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                return exc.reply_code == 404
            ch.close()
            return False

        wait_for(gone, 5, interval_s=0.05, what="exclusive queue deleted")
    finally:
        observer.close()
