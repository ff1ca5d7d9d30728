"""Message content as RabbitMQ 3.10 carries it: bodies of every size, properties, names.

Bodies of 0 and 1 bytes, exactly frame_max-8 (one body frame) and frame_max-7 (two),
1 MiB and 16 MiB, with a client that negotiates frame_max=4096 so the content is split
both ways; every basic property round-trips (headers with nested tables and arrays and
every field type, byte for byte on the wire); user_id must be the connection's user (406
otherwise); unicode and 255-byte queue names and routing keys.
"""

from __future__ import annotations

import datetime
import decimal
import struct

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
from tests.support.rawamqp import RawClient, raw_frame

TIMEOUT_S = 10.0
FRAME_MAX = 4096
FRAME_OVERHEAD = 8  # type (1) + channel (2) + size (4) + frame-end (1)
MiB = 1024 * 1024

SIZES = [0, 1, FRAME_MAX - FRAME_OVERHEAD, FRAME_MAX - FRAME_OVERHEAD + 1, MiB, 16 * MiB]


def body_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


# -- helpers -----------------------------------------------------------------


@pytest.fixture
def small_frames(broker):
    """A pika connection that negotiates frame_max=4096, the smallest AMQP allows."""
    connection = pika.BlockingConnection(
        pika.URLParameters(f"{broker.url()}?frame_max={FRAME_MAX}"))
    assert connection._impl.params.frame_max == FRAME_MAX
    yield connection
    if connection.is_open:
        connection.close()


def get_one(channel, queue: str) -> tuple:
    """basic.get until the message is there (publishes are async), with a deadline."""
    return wait_for(lambda: (lambda got: got if got[0] is not None else None)(
        channel.basic_get(queue, auto_ack=True)), TIMEOUT_S, what="a message")


def temp_queue(channel) -> str:
    return channel.queue_declare("", exclusive=True).method.queue


def raw_client(broker, frame_max: int | None = None) -> RawClient:
    client = RawClient(broker.host, broker.port, timeout_s=TIMEOUT_S)
    client.handshake(user=broker.user, password=broker.password, frame_max=frame_max)
    client.open_channel(1)
    return client


def read_raw_frame(raw: RawClient) -> tuple[int, int, bytes]:
    """(type, channel, payload) of the next frame, bytes as sent."""
    frame_type, channel, size = struct.unpack(">BHI", raw.read_bytes(7))
    payload = raw.read_bytes(size)
    assert raw.read_bytes(1) == b"\xce"
    return frame_type, channel, payload


def read_content(raw: RawClient) -> tuple[bytes, list[bytes]]:
    """After a deliver/get-ok: the content header's payload and each body frame's payload."""
    frame_type, _, header = read_raw_frame(raw)
    assert frame_type == 2
    (body_size,) = struct.unpack_from(">Q", header, 4)
    bodies: list[bytes] = []
    while sum(map(len, bodies)) < body_size:
        frame_type, _, payload = read_raw_frame(raw)
        assert frame_type == 3
        bodies.append(payload)
    return header, bodies


# -- body sizes ----------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=[str(s) for s in SIZES])
def test_body_sizes_round_trip_with_small_frames(small_frames, size):
    channel = small_frames.channel()
    queue = temp_queue(channel)
    body = body_of(size)
    channel.basic_publish("", queue, body)
    method, properties, got = get_one(channel, queue)
    assert len(got) == size and got == body


@pytest.mark.parametrize("size", SIZES, ids=[str(s) for s in SIZES])
def test_body_sizes_round_trip_to_a_consumer_with_small_frames(small_frames, conn, size):
    queue = temp_queue(small_frames.channel())
    body = body_of(size)
    conn.channel().basic_publish("", queue, body)  # published with large frames
    channel = small_frames.channel()
    got: list[bytes] = []
    channel.basic_consume(queue, lambda ch, m, p, b: got.append(b), auto_ack=True)
    wait_for(lambda: got or small_frames.process_data_events(time_limit=0.05),
             TIMEOUT_S, what="the delivery")  # process_data_events returns None
    assert got == [body]


@pytest.mark.parametrize("size", SIZES, ids=[str(s) for s in SIZES])
async def test_body_sizes_round_trip_aio(aconn, size):
    channel = await aconn.channel()
    queue = await channel.declare_queue("", exclusive=True)
    body = body_of(size)
    await channel.default_exchange.publish(aio_pika.Message(body), queue.name)
    message = await queue.get(no_ack=True, timeout=TIMEOUT_S)
    assert message.body_size == size and message.body == body


@pytest.mark.parametrize(("size", "frames"), [
    (0, []),
    (1, [1]),
    (FRAME_MAX - FRAME_OVERHEAD, [FRAME_MAX - FRAME_OVERHEAD]),
    (FRAME_MAX - FRAME_OVERHEAD + 1, [FRAME_MAX - FRAME_OVERHEAD, 1]),
    (3 * (FRAME_MAX - FRAME_OVERHEAD) + 5, [FRAME_MAX - FRAME_OVERHEAD] * 3 + [5]),
])
def test_server_splits_content_at_the_negotiated_frame_max_raw(broker, size, frames):
    """A body frame carries at most frame_max-8 bytes; the server fills each one."""
    body = body_of(size)
    with raw_client(broker, frame_max=FRAME_MAX) as raw:
        raw.send_method(commands.Queue.Declare(queue="", exclusive=True), 1)
        queue = raw.expect(commands.Queue.DeclareOk).queue
        chunk = FRAME_MAX - FRAME_OVERHEAD
        raw.send(b"".join([
            frame.marshal(commands.Basic.Publish(routing_key=queue), 1),
            frame.marshal(ContentHeader(body_size=size), 1),
            *[frame.marshal(ContentBody(body[i:i + chunk]), 1)
              for i in range(0, size, chunk)],
        ]))
        raw.send_method(commands.Basic.Consume(queue=queue, no_ack=True), 1)
        raw.expect(commands.Basic.ConsumeOk)
        raw.expect(commands.Basic.Deliver)
        _, bodies = read_content(raw)
        assert [len(b) for b in bodies] == frames
        assert b"".join(bodies) == body


# -- properties -------------------------------------------------------------------

HEADERS = {
    "str": "s",
    "empty": "",
    "int": 42,
    "neg": -7,
    "big": 2**40,
    "true": True,
    "false": False,
    "dec": decimal.Decimal("3.14"),
    "ts": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    "bytes": b"\x00\x01\xff",
    "list": [1, "two", [3], {"four": 4}, []],
    "table": {"nested": {"deeper": [True, None]}, "empty": {}},
    "none": None,
    "unicode-ключ": "значение ☃",
}


def pika_properties(user: str) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", headers=HEADERS,
        delivery_mode=2, priority=7, correlation_id="corr-1", reply_to="reply.q",
        expiration="60000", message_id="msg-1", timestamp=1700000000, type="kind",
        user_id=user, app_id="tests")


def test_all_basic_properties_round_trip(conn, broker):
    channel = conn.channel()
    queue = temp_queue(channel)
    sent = pika_properties(broker.user)
    channel.basic_publish("", queue, b"props", sent)
    _, got, body = get_one(channel, queue)
    assert body == b"props"
    for name in ("content_type", "content_encoding", "delivery_mode", "priority",
                 "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                 "type", "user_id", "app_id", "headers"):
        assert getattr(got, name) == getattr(sent, name), name
    assert got.cluster_id is None


def test_absent_properties_stay_absent(conn):
    channel = conn.channel()
    queue = temp_queue(channel)
    channel.basic_publish("", queue, b"bare")
    _, got, _ = get_one(channel, queue)
    assert all(getattr(got, name) is None for name in (
        "content_type", "content_encoding", "headers", "delivery_mode", "priority",
        "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
        "user_id", "app_id"))


async def test_all_basic_properties_round_trip_aio(aconn, broker):
    channel = await aconn.channel()
    queue = await channel.declare_queue("", exclusive=True)
    headers = {**HEADERS, "float": 1.5, "bytes": bytearray(b"\x00\x01\xff")}
    properties = commands.Basic.Properties(
        content_type="text/plain", content_encoding="utf-8", headers=headers,
        delivery_mode=1, priority=0, correlation_id="c" * 255, reply_to="reply.queue",
        expiration="86400000", message_id="id", message_type="t", user_id=broker.user, app_id="app",
        timestamp=datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.UTC))
    underlay = await channel.get_underlay_channel()
    await underlay.basic_publish(b"props", routing_key=queue.name, properties=properties)
    message = await queue.get(no_ack=True, timeout=TIMEOUT_S)
    assert message.body == b"props"
    assert message.content_type == "text/plain" and message.content_encoding == "utf-8"
    assert message.headers == headers
    assert message.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
    assert message.priority == 0 and message.correlation_id == "c" * 255
    assert message.reply_to == "reply.queue"
    assert message.message_id == "id" and message.type == "t" and message.app_id == "app"
    assert message.user_id == broker.user
    assert message.timestamp == datetime.datetime(2030, 5, 6, 7, 8, 9,
                                                  tzinfo=datetime.UTC)
    assert message.expiration == 86400


async def test_message_properties_round_trip_through_aio_pika_message(aconn, broker):
    channel = await aconn.channel()
    queue = await channel.declare_queue("", exclusive=True)
    sent = aio_pika.Message(
        b"m", headers={"a": 1, "nested": {"b": [1, 2]}}, content_type="application/x",
        content_encoding="br", delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=3,
        correlation_id="corr", reply_to="r", expiration=30, message_id="mid",
        timestamp=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        type="ty", user_id=broker.user, app_id="ap")
    await channel.default_exchange.publish(sent, queue.name)
    got = await queue.get(no_ack=True, timeout=TIMEOUT_S)
    for name in ("body", "headers", "content_type", "content_encoding", "delivery_mode",
                 "priority", "correlation_id", "reply_to", "expiration", "message_id",
                 "timestamp", "type", "user_id", "app_id"):
        assert getattr(got, name) == getattr(sent, name), name
    assert got.expiration == 30


def field(tag: bytes, payload: bytes) -> bytes:
    return tag + payload


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def table(entries: list[tuple[str, bytes]]) -> bytes:
    data = b"".join(bytes([len(k.encode())]) + k.encode() + v for k, v in entries)
    return struct.pack(">I", len(data)) + data


#: a field table with every field type RabbitMQ's parser knows, built by hand
EVERY_FIELD_TYPE = table([
    ("t", b"t\x01"),
    ("b", b"b" + struct.pack(">b", -5)),
    ("B", b"B" + struct.pack(">B", 250)),
    ("s", b"s" + struct.pack(">h", -300)),
    ("u", b"u" + struct.pack(">H", 60000)),
    ("I", b"I" + struct.pack(">i", -70000)),
    ("i", b"i" + struct.pack(">I", 4000000000)),
    ("l", b"l" + struct.pack(">q", -(2**40))),
    ("f", b"f" + struct.pack(">f", 1.5)),
    ("d", b"d" + struct.pack(">d", -2.25)),
    ("D", b"D" + struct.pack(">BI", 2, 314)),
    ("S", b"S" + longstr("ünïcode".encode())),
    ("x", b"x" + longstr(b"\x00\xff\x10")),
    ("T", b"T" + struct.pack(">Q", 1700000000)),
    ("V", b"V"),
    ("A", b"A" + longstr(b"I" + struct.pack(">i", 1) + b"S" + longstr(b"two") + b"V")),
    ("F", b"F" + table([("inner", b"F" + table([("deep", b"t\x00")]))])),
])


def test_headers_with_every_field_type_round_trip_byte_for_byte_raw(broker):
    """The delivered content header carries exactly the property bytes that were published."""
    flags = 0
    props = b""
    # content_type (bit 15), headers (bit 13), delivery_mode (bit 12), app_id (bit 3)
    flags |= 1 << 15
    props += bytes([len(b"a/b")]) + b"a/b"
    flags |= 1 << 13
    props += EVERY_FIELD_TYPE
    flags |= 1 << 12
    props += b"\x02"
    flags |= 1 << 3
    props += bytes([len(b"raw")]) + b"raw"
    published_tail = struct.pack(">H", flags) + props
    body = b"payload"
    with raw_client(broker) as raw:
        raw.send_method(commands.Queue.Declare(queue="", exclusive=True), 1)
        queue = raw.expect(commands.Queue.DeclareOk).queue
        header_payload = struct.pack(">HHQ", 60, 0, len(body)) + published_tail
        raw.send(frame.marshal(commands.Basic.Publish(routing_key=queue), 1)
                 + raw_frame(2, 1, header_payload) + frame.marshal(ContentBody(body), 1))
        raw.send_method(commands.Basic.Consume(queue=queue, no_ack=True), 1)
        raw.expect(commands.Basic.ConsumeOk)
        raw.expect(commands.Basic.Deliver)
        header, bodies = read_content(raw)
        assert header == header_payload
        assert b"".join(bodies) == body


def test_user_id_must_be_the_connections_user(conn, broker):
    channel = conn.channel()
    queue = temp_queue(channel)
    channel.basic_publish("", queue, b"x", pika.BasicProperties(user_id="mallory"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.basic_qos(prefetch_count=0)
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user "
        f"was '{broker.user}'")
    assert conn.is_open
    check = conn.channel()
    assert check.queue_declare(queue, passive=True).method.message_count == 0


async def test_user_id_must_be_the_connections_user_aio(aconn, broker):
    channel = await aconn.channel()
    queue = await channel.declare_queue("", exclusive=True)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
        await channel.default_exchange.publish(aio_pika.Message(b"x", user_id="mallory"),
                                               queue.name)
        await channel.set_qos(prefetch_count=0)
    assert info.value.args[0] == (
        f"PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user "
        f"was '{broker.user}'")


# -- names ------------------------------------------------------------------------


def name_of_bytes(prefix: str, size: int, filler: str = "x") -> str:
    base = unique(prefix)
    name = base + filler * ((size - len(base.encode())) // len(filler.encode()))
    name += "x" * (size - len(name.encode()))
    assert len(name.encode()) == size
    return name


def test_unicode_routing_keys(conn):
    channel = conn.channel()
    queue = temp_queue(channel)
    key = unique("ключ.☃.é")
    channel.queue_bind(queue, "amq.direct", routing_key=key)
    channel.basic_publish("amq.direct", key, b"via amq.direct")
    method, _, body = get_one(channel, queue)
    assert (method.exchange, method.routing_key, body) == ("amq.direct", key, b"via amq.direct")


def test_unicode_queue_names(conn):
    channel = conn.channel()
    queue = unique("очередь-ü-☃")
    assert channel.queue_declare(queue, exclusive=True).method.queue == queue
    channel.basic_publish("", queue, b"via default")
    method, _, body = get_one(channel, queue)
    assert (method.exchange, method.routing_key, body) == ("", queue, b"via default")
    assert channel.queue_declare(queue, passive=True).method.queue == queue


async def test_unicode_routing_keys_aio(aconn):
    # pamqp refuses queue names outside the spec's [a-zA-Z0-9-_.:] (RabbitMQ takes them)
    channel = await aconn.channel()
    queue = await channel.declare_queue("", exclusive=True)
    key = unique("ключ.☃.é")
    await queue.bind("amq.topic", routing_key=key)
    await (await channel.get_exchange("amq.topic")).publish(aio_pika.Message(b"t"), key)
    message = await queue.get(no_ack=True, timeout=TIMEOUT_S)
    assert (message.exchange, message.routing_key, message.body) == ("amq.topic", key, b"t")


def test_routing_key_of_255_bytes(conn):
    channel = conn.channel()
    queue = temp_queue(channel)
    key = name_of_bytes("rk255", 255, "☃")
    channel.queue_bind(queue, "amq.direct", routing_key=key)
    channel.basic_publish("amq.direct", key, b"long key")
    method, _, body = get_one(channel, queue)
    assert method.routing_key == key and body == b"long key"


@pytest.mark.parametrize("filler", ["x", "é"], ids=["ascii", "unicode"])
def test_queue_name_of_255_bytes(conn, filler):
    channel = conn.channel()
    queue = name_of_bytes("q255", 255, filler)
    assert channel.queue_declare(queue, exclusive=True).method.queue == queue
    channel.basic_publish("", queue, b"long name")
    method, _, body = get_one(channel, queue)
    assert method.routing_key == queue and body == b"long name"


async def test_routing_key_of_255_bytes_aio(aconn):
    channel = await aconn.channel()
    queue = await channel.declare_queue("", exclusive=True)
    key = name_of_bytes("rk255", 255)
    await queue.bind("amq.direct", routing_key=key)
    await (await channel.get_exchange("amq.direct")).publish(aio_pika.Message(b"k"), key)
    message = await queue.get(no_ack=True, timeout=TIMEOUT_S)
    assert message.routing_key == key and message.body == b"k"
