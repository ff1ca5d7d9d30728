# Message routing as RabbitMQ 3.10 does it, through pika (BlockingConnection) and aio-pika:
# the default exchange, direct, fanout, topic (a table of patterns and keys) and headers
# (x-match all / any / all-with-x / any-with-x, typed values); mandatory publishes with no
# route (basic.return 312 NO_ROUTE) and publishes to a missing exchange (404).
#
# Every publish waits for its confirm: RabbitMQ confirms only after routing and enqueueing,
# so a basic.get right after it sees exactly what was routed, with no sleep.

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiormq
import pika
import pika.exceptions
import pytest

from tests.conftest import unique
from tests.support.node import wait_for

from .helpers import Names, aio_reply, assert_reply, pika_reply

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def exchanges(names: Names) -> list[str]:
    """Names appended here are deleted at teardown."""
    return names.exchanges


@pytest.fixture
def pch(pconnect) -> Any:
    """A pika channel in confirm mode; its connection is closed at teardown."""
    ch = pconnect().channel()
    ch.confirm_delivery()
    return ch


@pytest.fixture
async def ach(aconn) -> aio_pika.abc.AbstractChannel:
    """An aio-pika channel; publisher confirms are on by default."""
    return await aconn.channel()


def pika_queue(ch, exchange: str = "", *binding_keys: str, arguments: dict | None = None) -> str:
    q = ch.queue_declare("", exclusive=True).method.queue
    for key in binding_keys:
        ch.queue_bind(q, exchange, key, arguments=arguments)
    return q


def pika_drain(ch, queue: str) -> list[bytes]:
    bodies = []
    while (body := ch.basic_get(queue, auto_ack=True)[2]) is not None:
        bodies.append(body)
    return bodies


async def aio_queue(ch: aio_pika.abc.AbstractChannel, exchange: Any = None, *binding_keys: str,
                    arguments: dict | None = None) -> aio_pika.abc.AbstractQueue:
    q = await ch.declare_queue(exclusive=True)
    for key in binding_keys:
        await q.bind(exchange, key, arguments=arguments)
    return q


async def aio_drain(queue: aio_pika.abc.AbstractQueue) -> list[bytes]:
    bodies = []
    while (msg := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
        bodies.append(msg.body)
    return bodies


async def aio_publish(exchange: aio_pika.abc.AbstractExchange, key: str, body: bytes,
                      **props: Any) -> None:
    await exchange.publish(aio_pika.Message(body, **props), key, mandatory=False)


# ---- default, direct, fanout ---------------------------------------------------------------


def test_default_exchange_routes_by_queue_name_pika(pch):
    q1, q2 = pika_queue(pch), pika_queue(pch)
    pch.basic_publish("", q1, b"to-q1")
    pch.basic_publish("", q2, b"to-q2")
    pch.basic_publish("", q1.upper(), b"nowhere")  # names are case-sensitive
    assert pika_drain(pch, q1) == [b"to-q1"]
    assert pika_drain(pch, q2) == [b"to-q2"]


async def test_default_exchange_routes_by_queue_name_aio(ach):
    q1, q2 = await aio_queue(ach), await aio_queue(ach)
    await aio_publish(ach.default_exchange, q1.name, b"to-q1")
    await aio_publish(ach.default_exchange, q2.name, b"to-q2")
    await aio_publish(ach.default_exchange, q1.name.upper(), b"nowhere")
    assert await aio_drain(q1) == [b"to-q1"]
    assert await aio_drain(q2) == [b"to-q2"]


# queue -> its binding keys on one direct exchange; key -> the queues that get it
DIRECT_BINDINGS = {"q1": ["a", "b"], "q2": ["b", "c"], "q3": ["c"]}
DIRECT_EXPECT = {"a": {"q1"}, "b": {"q1", "q2"}, "c": {"q2", "q3"}, "d": set(), "A": set()}


def test_direct_with_several_queues_and_keys_pika(pch, exchanges):
    x = unique("direct")
    exchanges.append(x)
    pch.exchange_declare(x, "direct")
    queues = {name: pika_queue(pch, x, *keys) for name, keys in DIRECT_BINDINGS.items()}
    for key in DIRECT_EXPECT:
        pch.basic_publish(x, key, key.encode())
    for name, q in queues.items():
        got = sorted(pika_drain(pch, q))
        assert got == sorted(k.encode() for k, to in DIRECT_EXPECT.items() if name in to), name


async def test_direct_with_several_queues_and_keys_aio(ach, exchanges):
    x = await ach.declare_exchange(unique("direct"), "direct")
    exchanges.append(x.name)
    queues = {name: await aio_queue(ach, x, *keys) for name, keys in DIRECT_BINDINGS.items()}
    for key in DIRECT_EXPECT:
        await aio_publish(x, key, key.encode())
    for name, q in queues.items():
        got = sorted(await aio_drain(q))
        assert got == sorted(k.encode() for k, to in DIRECT_EXPECT.items() if name in to), name


def test_fanout_ignores_the_routing_key_pika(pch, exchanges):
    x = unique("fanout")
    exchanges.append(x)
    pch.exchange_declare(x, "fanout")
    q1, q2 = pika_queue(pch, x, ""), pika_queue(pch, x, "some-key")
    pch.basic_publish(x, "", b"1")
    pch.basic_publish(x, "anything.at.all", b"2")
    assert pika_drain(pch, q1) == [b"1", b"2"]
    assert pika_drain(pch, q2) == [b"1", b"2"]


async def test_fanout_ignores_the_routing_key_aio(ach, exchanges):
    x = await ach.declare_exchange(unique("fanout"), "fanout")
    exchanges.append(x.name)
    q1, q2 = await aio_queue(ach, x, ""), await aio_queue(ach, x, "some-key")
    await aio_publish(x, "", b"1")
    await aio_publish(x, "anything.at.all", b"2")
    assert await aio_drain(q1) == [b"1", b"2"]
    assert await aio_drain(q2) == [b"1", b"2"]


def test_one_copy_per_queue_whatever_the_number_of_matching_bindings_pika(pch, exchanges):
    x = unique("topic")
    exchanges.append(x)
    pch.exchange_declare(x, "topic")
    q = pika_queue(pch, x, "a.*", "*.b", "#", "a.b")
    pch.basic_publish(x, "a.b", b"once")
    assert pika_drain(pch, q) == [b"once"]


async def test_one_copy_per_queue_whatever_the_number_of_matching_bindings_aio(ach, exchanges):
    x = await ach.declare_exchange(unique("topic"), "topic")
    exchanges.append(x.name)
    q = await aio_queue(ach, x, "a.*", "*.b", "#", "a.b")
    await aio_publish(x, "a.b", b"once")
    assert await aio_drain(q) == [b"once"]


# ---- topic ---------------------------------------------------------------------------------

# binding pattern -> {routing key: routed?}; checked against RabbitMQ 3.10. An empty routing
# key has no words at all, while "a." has two ("a" and "").
TOPIC_CASES: dict[str, dict[str, bool]] = {
    "#": {"": True, "a": True, "a.b.c": True, "..": True},
    "*": {"": False, "a": True, "a.b": False, ".": False},
    "": {"": True, "a": False, ".": False},
    "a": {"a": True, "A": False, "a.b": False, "b": False},
    "a.b": {"a.b": True, "a.b.c": False, "a": False, "ab": False},
    "*.b.#": {"a.b": True, "a.b.c": True, "a.b.c.d": True, "b": False, "x.a.b": False,
              ".b": True},
    "a.#.b": {"a.b": True, "a.x.b": True, "a.x.y.b": True, "a..b": True, "a.b.b": True,
              "a.bb": False, "ab": False},
    "a..b": {"a..b": True, "a.b": False, "a.x.b": False},
    "a.*.b": {"a..b": True, "a.x.b": True, "a.b": False, "a.x.y.b": False},
    "#.a": {"a": True, "x.a": True, "x.y.a": True, "xa": False, "a.x": False},
    "a.#": {"a": True, "a.b": True, "a.b.c": True, "ab": False, "b.a": False},
    "a.*": {"a": False, "a.b": True, "a.": True, "a.b.c": False},
    "#.#": {"": True, "a": True, "a.b": True},
    "*.*": {"a": False, "a.b": True, "a.": True, ".": True, "a.b.c": False},
    "a.*.#": {"a": False, "a.b": True, "a.b.c": True},
    "#.*": {"": False, "a": True, "a.b": True},
    "#.b.#": {"b": True, "a.b": True, "b.c": True, "a.b.c": True, "ab": False, "a.c": False},
}


@pytest.mark.parametrize("pattern", list(TOPIC_CASES), ids=lambda p: repr(p))
def test_topic_pattern_pika(pch, exchanges, pattern):
    x = unique("topic")
    exchanges.append(x)
    pch.exchange_declare(x, "topic")
    q = pika_queue(pch, x, pattern)
    routed = {}
    for key in TOPIC_CASES[pattern]:
        pch.basic_publish(x, key, b"m")
        routed[key] = pika_drain(pch, q) == [b"m"]
    assert routed == TOPIC_CASES[pattern]


@pytest.mark.parametrize("pattern", list(TOPIC_CASES), ids=lambda p: repr(p))
async def test_topic_pattern_aio(ach, exchanges, pattern):
    x = await ach.declare_exchange(unique("topic"), "topic")
    exchanges.append(x.name)
    q = await aio_queue(ach, x, pattern)
    routed = {}
    for key in TOPIC_CASES[pattern]:
        await aio_publish(x, key, b"m")
        routed[key] = await aio_drain(q) == [b"m"]
    assert routed == TOPIC_CASES[pattern]


def test_topic_unbind_stops_routing_pika(pch, exchanges):
    x = unique("topic")
    exchanges.append(x)
    pch.exchange_declare(x, "topic")
    q = pika_queue(pch, x, "a.#", "#.z")
    pch.queue_unbind(q, x, "a.#")
    pch.basic_publish(x, "a.b", b"gone")
    pch.basic_publish(x, "a.z", b"kept")
    assert pika_drain(pch, q) == [b"kept"]


# ---- headers -------------------------------------------------------------------------------

# (id, binding arguments, message headers or None, routed?); checked against RabbitMQ 3.10.
HEADERS_CASES: list[tuple[str, dict, dict | None, bool]] = [
    ("all-match", {"x-match": "all", "a": "1", "b": 2}, {"a": "1", "b": 2}, True),
    ("all-extra-headers", {"x-match": "all", "a": "1"}, {"a": "1", "c": 3}, True),
    ("all-one-missing", {"x-match": "all", "a": "1", "b": 2}, {"a": "1"}, False),
    ("all-one-differs", {"x-match": "all", "a": "1", "b": 2}, {"a": "1", "b": 3}, False),
    ("default-is-all", {"a": "1", "b": 2}, {"a": "1"}, False),
    ("default-is-all-match", {"a": "1", "b": 2}, {"b": 2, "a": "1"}, True),
    ("any-one", {"x-match": "any", "a": "1", "b": 2}, {"a": "1"}, True),
    ("any-none", {"x-match": "any", "a": "1", "b": 2}, {"a": "2", "b": "2"}, False),
    ("int-vs-string", {"x-match": "all", "n": 1}, {"n": "1"}, False),
    ("int-vs-int", {"x-match": "all", "n": 1}, {"n": 1}, True),
    ("bool-true", {"x-match": "all", "f": True}, {"f": True}, True),
    ("bool-vs-false", {"x-match": "all", "f": True}, {"f": False}, False),
    ("bool-vs-int", {"x-match": "all", "f": True}, {"f": 1}, False),
    ("empty-string", {"x-match": "all", "a": ""}, {"a": ""}, True),
    # a string binding value matches a byte-array header with the same bytes
    ("string-vs-bytes", {"x-match": "all", "s": "v"}, {"s": b"v"}, True),
    ("nested-table", {"x-match": "all", "t": {"k": "v"}}, {"t": {"k": "v"}}, True),
    ("nested-table-differs", {"x-match": "all", "t": {"k": "v"}}, {"t": {"k": "w"}}, False),
    ("array", {"x-match": "all", "l": [1, "a"]}, {"l": [1, "a"]}, True),
    ("void-means-present", {"x-match": "all", "a": None}, {"a": "anything"}, True),
    ("void-absent", {"x-match": "all", "a": None}, {"b": "x"}, False),
    ("all-no-pattern", {"x-match": "all"}, {"a": 1}, True),
    ("all-no-pattern-no-headers", {"x-match": "all"}, None, True),
    ("any-no-pattern", {"x-match": "any"}, {"a": 1}, False),
    ("all-no-headers", {"x-match": "all", "a": "1"}, None, False),
    ("any-no-headers", {"x-match": "any", "a": "1"}, None, False),
    # x- keys are ignored by all/any, and compared by all-with-x/any-with-x
    ("all-ignores-x", {"x-match": "all", "x-k": "1"}, {}, True),
    ("any-ignores-x", {"x-match": "any", "x-k": "1"}, {"x-k": "1"}, False),
    ("all-with-x-absent", {"x-match": "all-with-x", "x-k": "1"}, {}, False),
    ("all-with-x-match", {"x-match": "all-with-x", "x-k": "1"}, {"x-k": "1"}, True),
    ("all-with-x-differs", {"x-match": "all-with-x", "x-k": "1"}, {"x-k": "2"}, False),
    ("any-with-x-match", {"x-match": "any-with-x", "x-k": "1"}, {"x-k": "1"}, True),
    ("any-with-x-plain", {"x-match": "any-with-x", "x-k": "1", "a": "2"}, {"a": "2"}, True),
]


@pytest.fixture
def pika_headers_exchange(pch, exchanges) -> str:
    x = unique("headers")
    exchanges.append(x)
    pch.exchange_declare(x, "headers")
    return x


@pytest.mark.parametrize(("binding", "headers", "routed"), [c[1:] for c in HEADERS_CASES],
                         ids=[c[0] for c in HEADERS_CASES])
def test_headers_exchange_pika(pch, pika_headers_exchange, binding, headers, routed):
    x = pika_headers_exchange
    q = pika_queue(pch, x, "", arguments=binding)
    pch.basic_publish(x, "ignored", b"m", pika.BasicProperties(headers=headers))
    assert pika_drain(pch, q) == ([b"m"] if routed else [])


@pytest.mark.parametrize(("binding", "headers", "routed"), [c[1:] for c in HEADERS_CASES],
                         ids=[c[0] for c in HEADERS_CASES])
async def test_headers_exchange_aio(ach, exchanges, binding, headers, routed):
    x = await ach.declare_exchange(unique("headers"), "headers")
    exchanges.append(x.name)
    q = await aio_queue(ach, x, "", arguments=binding)
    # pamqp encodes a byte array ('x') from a bytearray, and refuses bytes.
    if headers:
        headers = {k: bytearray(v) if isinstance(v, bytes) else v for k, v in headers.items()}
    await aio_publish(x, "ignored", b"m", headers=headers)
    assert await aio_drain(q) == ([b"m"] if routed else [])


async def test_headers_int_widths_match_across_clients(pch, pika_headers_exchange, ach):
    # pika encodes 1 as a 32-bit 'I', aio-pika (pamqp) as an 8-bit 'b': RabbitMQ treats both
    # as the same signed integer, so the binding matches.
    x = pika_headers_exchange
    q = pika_queue(pch, x, "", arguments={"x-match": "all", "n": 1, "big": 100_000})
    exchange = await ach.get_exchange(x)
    await aio_publish(exchange, "", b"cross", headers={"n": 1, "big": 100_000})
    assert pika_drain(pch, q) == [b"cross"]


def test_headers_unbind_needs_the_same_arguments_pika(pch, pika_headers_exchange):
    x = pika_headers_exchange
    q = pika_queue(pch, x, "", arguments={"x-match": "any", "a": "1"})
    pch.queue_bind(q, x, "", arguments={"x-match": "any", "b": "2"})
    pch.queue_unbind(q, x, "", arguments={"x-match": "any", "a": "1"})
    props = pika.BasicProperties
    pch.basic_publish(x, "", b"a", props(headers={"a": "1"}))
    pch.basic_publish(x, "", b"b", props(headers={"b": "2"}))
    assert pika_drain(pch, q) == [b"b"]


def test_headers_invalid_x_match_is_406_pika(pch, pika_headers_exchange):
    q = pika_queue(pch)
    reply = pika_reply(lambda: pch.queue_bind(q, pika_headers_exchange, "",
                                              arguments={"x-match": "some"}))
    assert_reply(reply, "channel", 406, "x-match")


async def test_headers_invalid_x_match_is_406_aio(ach, exchanges):
    x = await ach.declare_exchange(unique("headers"), "headers")
    exchanges.append(x.name)
    q = await ach.declare_queue(exclusive=True)
    reply = await aio_reply(q.bind(x, "", arguments={"x-match": "some"}))
    assert_reply(reply, "channel", 406, "x-match")


# ---- mandatory, returns, missing exchanges -------------------------------------------------


def test_mandatory_without_route_is_returned_pika(pch, exchanges):
    x = unique("direct")
    exchanges.append(x)
    pch.exchange_declare(x, "direct")
    with pytest.raises(pika.exceptions.UnroutableError) as ei:
        pch.basic_publish(x, "no-such-key", b"back", mandatory=True)
    [returned] = ei.value.messages
    assert (returned.method.reply_code, returned.method.reply_text) == (312, "NO_ROUTE")
    assert (returned.method.exchange, returned.method.routing_key) == (x, "no-such-key")
    assert returned.body == b"back"
    pch.basic_publish(x, "no-such-key", b"dropped")  # not mandatory: silently dropped
    assert pch.is_open


def test_mandatory_return_without_confirms_pika(broker, exchanges):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url()))
    try:
        ch = conn.channel()
        returns: list[tuple[Any, bytes]] = []
        ch.add_on_return_callback(lambda _ch, method, _props, body: returns.append((method, body)))
        ch.basic_publish("", unique("no-such-queue"), b"back", mandatory=True)
        wait_for(lambda: conn.process_data_events(time_limit=0.02) or returns,
                 what="basic.return")
        method, body = returns[0]
        assert (method.reply_code, method.reply_text, body) == (312, "NO_ROUTE", b"back")
    finally:
        conn.close()


async def test_mandatory_without_route_is_returned_aio(ach):
    returned: asyncio.Future = asyncio.get_running_loop().create_future()
    ach.return_callbacks.add(lambda _ch, msg: returned.done() or returned.set_result(msg))
    key = unique("no-such-queue")
    result = await ach.default_exchange.publish(aio_pika.Message(b"back"), key, mandatory=True)
    # aio-pika hands the return to the publisher and to the channel's return callbacks.
    assert isinstance(result.delivery, aiormq.spec.Basic.Return)
    assert (result.delivery.reply_code, result.delivery.reply_text) == (312, "NO_ROUTE")
    assert result.body == b"back"
    msg = await asyncio.wait_for(returned, 10)
    assert (msg.body, msg.routing_key, msg.exchange) == (b"back", key, "")


async def test_mandatory_without_route_raises_with_on_return_raises_aio(aconn):
    ch = await aconn.channel(on_return_raises=True)
    with pytest.raises(aio_pika.exceptions.DeliveryError) as ei:
        await ch.default_exchange.publish(aio_pika.Message(b"back"), unique("nowhere"),
                                          mandatory=True)
    assert isinstance(ei.value.frame, aiormq.spec.Basic.Return)
    assert ei.value.frame.reply_code == 312


def test_publish_to_missing_exchange_is_404_pika(pch):
    x = unique("missing")
    reply = pika_reply(lambda: pch.basic_publish(x, "k", b"m"))
    assert_reply(reply, "channel", 404, f"no exchange '{x}' in vhost '/'")
    assert pch.connection.is_open


async def test_publish_to_missing_exchange_is_404_aio(aconn, ach):
    x = unique("missing")
    exchange = await ach.get_exchange(x, ensure=False)
    reply = await aio_reply(exchange.publish(aio_pika.Message(b"m"), "k"))
    assert_reply(reply, "channel", 404, f"no exchange '{x}' in vhost '/'")
    assert not aconn.is_closed
