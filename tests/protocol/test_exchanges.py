# exchange.declare / exchange.delete / exchange.bind / exchange.unbind, as RabbitMQ 3.10
# answers them, through pika (BlockingConnection) and aio-pika: types, passive, durable,
# auto-delete, internal, equivalence checks (406), reserved names (403), unknown types
# (503 on the connection), the predeclared amq.* exchanges, and exchange-to-exchange routing.

from __future__ import annotations

import aio_pika
import aiormq
import pika
import pika.exceptions
import pytest

from tests.conftest import unique

from .helpers import aio_reply, assert_reply, pika_alive, pika_reply

pytestmark = pytest.mark.timeout(30)

EXCHANGE_TYPES = ["direct", "fanout", "topic", "headers"]
PREDECLARED = ["amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"]


async def aio_alive(conn: aio_pika.abc.AbstractConnection) -> None:
    assert not conn.is_closed
    ch = await conn.channel()
    await ch.get_exchange("amq.direct", ensure=True)
    await ch.close()


def pika_get_body(ch, queue: str) -> bytes | None:
    _method, _props, body = ch.basic_get(queue, auto_ack=True)
    return body


async def aio_get_body(queue: aio_pika.abc.AbstractQueue) -> bytes | None:
    msg = await queue.get(no_ack=True, fail=False, timeout=5)
    return msg.body if msg else None


# ---- exchange.declare ----------------------------------------------------------------------


@pytest.mark.parametrize("exchange_type", EXCHANGE_TYPES)
def test_declare_each_type_pika(pconn, names, exchange_type):
    x = names.exchange()
    ch = pconn.channel()
    assert isinstance(ch.exchange_declare(x, exchange_type).method, pika.spec.Exchange.DeclareOk)
    assert isinstance(ch.exchange_declare(x, passive=True).method, pika.spec.Exchange.DeclareOk)
    ch.exchange_declare(x, exchange_type)  # same properties again: ok
    assert isinstance(ch.exchange_delete(x).method, pika.spec.Exchange.DeleteOk)
    assert_reply(pika_reply(lambda: ch.exchange_declare(x, passive=True)), "channel", 404, x)


@pytest.mark.parametrize("exchange_type", EXCHANGE_TYPES)
async def test_declare_each_type_aio(aconn, names, exchange_type):
    x = names.exchange()
    ch = await aconn.channel()
    ex = await ch.declare_exchange(x, exchange_type)
    await ch.declare_exchange(x, exchange_type)
    await ch.get_exchange(x, ensure=True)
    assert isinstance(await ex.delete(), aiormq.spec.Exchange.DeleteOk)
    assert_reply(await aio_reply(ch.get_exchange(x, ensure=True)), "channel", 404, x)


def test_passive_declare_missing_is_404_channel_error_pika(pconn, names):
    x = names.exchange()
    reply = pika_reply(lambda: pconn.channel().exchange_declare(x, passive=True))
    assert_reply(reply, "channel", 404, f"no exchange '{x}' in vhost '/'")
    pika_alive(pconn)


async def test_passive_declare_missing_is_404_channel_error_aio(aconn, names):
    x = names.exchange()
    ch = await aconn.channel()
    reply = await aio_reply(ch.declare_exchange(x, passive=True))
    assert_reply(reply, "channel", 404, f"no exchange '{x}' in vhost '/'")
    await aio_alive(aconn)


def test_durable_exchange_pika(pconn, names):
    x = names.exchange()
    ch = pconn.channel()
    ch.exchange_declare(x, "topic", durable=True)
    ch.exchange_declare(x, "topic", durable=True)
    ch.exchange_declare(x, passive=True)


async def test_durable_exchange_aio(aconn, names):
    x = names.exchange()
    ch = await aconn.channel()
    await ch.declare_exchange(x, "topic", durable=True)
    await ch.declare_exchange(x, "topic", durable=True)
    await ch.declare_exchange(x, passive=True)


# (what differs, first declare kwargs, second declare kwargs) in pika's keyword names
MISMATCHES = [
    ("type", {"exchange_type": "direct"}, {"exchange_type": "fanout"}),
    ("durable", {"durable": False}, {"durable": True}),
    ("auto_delete", {"auto_delete": False}, {"auto_delete": True}),
    ("internal", {"internal": False}, {"internal": True}),
]


@pytest.mark.parametrize(("arg", "first", "second"), MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_redeclare_with_different_property_is_406_pika(pconn, names, arg, first, second):
    x = names.exchange()
    pconn.channel().exchange_declare(x, **first)
    reply = pika_reply(lambda: pconn.channel().exchange_declare(x, **second))
    assert_reply(reply, "channel", 406, f"inequivalent arg '{arg}' for exchange '{x}'")
    pika_alive(pconn)
    pconn.channel().exchange_declare(x, passive=True)  # the original is untouched


@pytest.mark.parametrize(("arg", "first", "second"), MISMATCHES, ids=[m[0] for m in MISMATCHES])
async def test_redeclare_with_different_property_is_406_aio(aconn, names, arg, first, second):
    def kwargs(d: dict) -> dict:
        d = dict(d)
        return {"type": d.pop("exchange_type", "direct"), **d}

    x = names.exchange()
    ch = await aconn.channel()
    await ch.declare_exchange(x, **kwargs(first))
    reply = await aio_reply(ch.declare_exchange(x, **kwargs(second)))
    assert_reply(reply, "channel", 406, f"inequivalent arg '{arg}' for exchange '{x}'")
    await aio_alive(aconn)


def test_exchange_arguments_equivalence_pika(pconn, names):
    # RabbitMQ compares only alternate-exchange among exchange arguments.
    x = names.exchange()
    ch = pconn.channel()
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": "ae-1", "x-other": 1})
    ch.exchange_declare(x, "direct", arguments={"x-other": 2, "alternate-exchange": "ae-1"})
    reply = pika_reply(lambda: ch.exchange_declare(x, "direct",
                                                   arguments={"alternate-exchange": "ae-2"}))
    assert_reply(reply, "channel", 406, f"inequivalent arg 'alternate-exchange' for exchange '{x}'")
    reply = pika_reply(lambda: pconn.channel().exchange_declare(x, "direct"))
    assert_reply(reply, "channel", 406, "inequivalent arg 'alternate-exchange'")


async def test_exchange_arguments_equivalence_aio(aconn, names):
    x = names.exchange()
    ch = await aconn.channel()
    await ch.declare_exchange(x, "direct", arguments={"alternate-exchange": "ae-1"})
    reply = await aio_reply(ch.declare_exchange(x, "direct",
                                                arguments={"alternate-exchange": "ae-2"}))
    assert_reply(reply, "channel", 406, f"inequivalent arg 'alternate-exchange' for exchange '{x}'")


def test_passive_declare_ignores_other_properties_pika(pconn, names):
    x = names.exchange()
    ch = pconn.channel()
    ch.exchange_declare(x, "direct")
    ok = ch.exchange_declare(x, "fanout", passive=True, durable=True, auto_delete=True)
    assert isinstance(ok.method, pika.spec.Exchange.DeclareOk)


def test_unknown_type_is_503_connection_error_pika(pconn, names):
    x = names.exchange()
    reply = pika_reply(lambda: pconn.channel().exchange_declare(x, "no-such-type"))
    # RabbitMQ says "unknown" or "invalid" depending on its atom table; both name the type.
    assert_reply(reply, "connection", 503, "exchange type 'no-such-type'")
    assert not pconn.is_open


async def test_unknown_type_is_503_connection_error_aio(aconn, names):
    x = names.exchange()
    ch = await aconn.channel()
    reply = await aio_reply(ch.declare_exchange(x, "no-such-type"))
    assert_reply(reply, "connection", 503, "exchange type 'no-such-type'")


def test_amq_prefix_is_reserved_pika(pconn, names):
    x = "amq." + unique("x")  # never created, so nothing to clean up
    reply = pika_reply(lambda: pconn.channel().exchange_declare(x, "direct"))
    assert_reply(reply, "channel", 403, f"exchange name '{x}' contains reserved prefix 'amq.*'")
    pika_alive(pconn)
    reply = pika_reply(lambda: pconn.channel().exchange_declare(x, passive=True))
    assert_reply(reply, "channel", 404)


async def test_amq_prefix_is_reserved_aio(aconn, names):
    x = "amq." + unique("x")  # never created, so nothing to clean up
    ch = await aconn.channel()
    reply = await aio_reply(ch.declare_exchange(x, "direct"))
    assert_reply(reply, "channel", 403, f"exchange name '{x}' contains reserved prefix 'amq.*'")
    await aio_alive(aconn)


@pytest.mark.parametrize("passive", [False, True])
def test_declare_default_exchange_is_403_pika(pconn, passive):
    reply = pika_reply(lambda: pconn.channel().exchange_declare("", "direct", passive=passive))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")
    pika_alive(pconn)


@pytest.mark.parametrize("passive", [False, True])
async def test_declare_default_exchange_is_403_aio(aconn, passive):
    ch = await aconn.channel()
    reply = await aio_reply(ch.declare_exchange("", "direct", passive=passive))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")
    await aio_alive(aconn)


@pytest.mark.parametrize("name", PREDECLARED)
def test_predeclared_exchange_exists_pika(pconn, name):
    ok = pconn.channel().exchange_declare(name, passive=True)
    assert isinstance(ok.method, pika.spec.Exchange.DeclareOk)


@pytest.mark.parametrize("name", PREDECLARED)
async def test_predeclared_exchange_exists_aio(aconn, name):
    ch = await aconn.channel()
    await ch.get_exchange(name, ensure=True)


def test_redeclare_amq_direct_pika(pconn):
    ch = pconn.channel()
    ch.exchange_declare("amq.direct", "direct", durable=True)  # equivalent: ok
    reply = pika_reply(lambda: ch.exchange_declare("amq.direct", "direct", durable=False))
    assert_reply(reply, "channel", 406, "inequivalent arg 'durable' for exchange 'amq.direct'")
    reply = pika_reply(lambda: pconn.channel().exchange_declare("amq.direct", "fanout",
                                                                durable=True))
    assert_reply(reply, "channel", 406, "inequivalent arg 'type' for exchange 'amq.direct'")


async def test_redeclare_amq_direct_aio(aconn):
    ch = await aconn.channel()
    await ch.declare_exchange("amq.direct", "direct", durable=True)
    reply = await aio_reply(ch.declare_exchange("amq.direct", "direct", durable=False))
    assert_reply(reply, "channel", 406, "inequivalent arg 'durable' for exchange 'amq.direct'")


def test_auto_delete_exchange_goes_with_its_last_binding_pika(pconn, names):
    x = names.exchange()
    ch = pconn.channel()
    ch.exchange_declare(x, "direct", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_declare(x, passive=True)  # never bound: not deleted
    ch.queue_bind(q, x, "a")
    ch.queue_bind(q, x, "b")
    ch.queue_unbind(q, x, "a")
    ch.exchange_declare(x, passive=True)  # one binding left
    ch.queue_unbind(q, x, "b")
    assert_reply(pika_reply(lambda: ch.exchange_declare(x, passive=True)), "channel", 404, x)


async def test_auto_delete_exchange_goes_with_its_last_binding_aio(aconn, names):
    x = names.exchange()
    ch = await aconn.channel()
    ex = await ch.declare_exchange(x, "direct", auto_delete=True)
    q = await ch.declare_queue(exclusive=True)
    await ch.get_exchange(x, ensure=True)
    await q.bind(ex, "a")
    await q.bind(ex, "b")
    await q.unbind(ex, "a")
    await ch.get_exchange(x, ensure=True)
    await q.unbind(ex, "b")
    assert_reply(await aio_reply(ch.get_exchange(x, ensure=True)), "channel", 404, x)


def test_auto_delete_exchange_goes_when_its_bound_queue_is_deleted_pika(pconn, names):
    x, q = names.exchange(), names.queue()
    ch = pconn.channel()
    ch.exchange_declare(x, "fanout", auto_delete=True)
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    ch.queue_delete(q)
    assert_reply(pika_reply(lambda: ch.exchange_declare(x, passive=True)), "channel", 404, x)


def test_auto_delete_source_exchange_goes_with_its_last_exchange_binding_pika(pconn, names):
    src, dst = names.exchange("src"), names.exchange("dst")
    ch = pconn.channel()
    ch.exchange_declare(src, "fanout", auto_delete=True)
    ch.exchange_declare(dst, "fanout", auto_delete=True)
    ch.exchange_bind(dst, src)
    ch.exchange_unbind(dst, src)
    # Only the source side of a binding counts: dst never had a binding of its own.
    ch.exchange_declare(dst, passive=True)
    assert_reply(pika_reply(lambda: ch.exchange_declare(src, passive=True)), "channel", 404, src)


def test_publish_to_internal_exchange_is_403_pika(pconn, names):
    x = names.exchange()
    ch = pconn.channel()
    ch.exchange_declare(x, "fanout", internal=True)
    ch.confirm_delivery()
    reply = pika_reply(lambda: ch.basic_publish(x, "k", b"m"))
    assert_reply(reply, "channel", 403, f"cannot publish to internal exchange '{x}'")
    pika_alive(pconn)


async def test_publish_to_internal_exchange_is_403_aio(aconn, names):
    x = names.exchange()
    ch = await aconn.channel()
    await ch.declare_exchange(x, "fanout", internal=True)
    # A non-declaring handle: aio-pika refuses internal exchanges on the client side.
    ex = await ch.get_exchange(x, ensure=False)
    reply = await aio_reply(ex.publish(aio_pika.Message(b"m"), "k", mandatory=False))
    assert_reply(reply, "channel", 403, f"cannot publish to internal exchange '{x}'")
    await aio_alive(aconn)


def test_internal_exchange_routes_from_a_bound_exchange_pika(pconn, names):
    front, inner = names.exchange("front"), names.exchange("inner")
    ch = pconn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(front, "fanout")
    ch.exchange_declare(inner, "fanout", internal=True)
    ch.exchange_bind(inner, front)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, inner)
    ch.basic_publish(front, "", b"through")
    assert pika_get_body(ch, q) == b"through"


# ---- exchange.delete -----------------------------------------------------------------------


def test_delete_if_unused_pika(pconn, names):
    x = names.exchange()
    ch = pconn.channel()
    ch.exchange_declare(x, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, "k")
    reply = pika_reply(lambda: ch.exchange_delete(x, if_unused=True))
    assert_reply(reply, "channel", 406, f"exchange '{x}' in vhost '/' in use")
    ch = pconn.channel()
    ch.exchange_declare(x, passive=True)  # still there
    ch.queue_unbind(q, x, "k")
    ch.exchange_delete(x, if_unused=True)
    assert_reply(pika_reply(lambda: ch.exchange_declare(x, passive=True)), "channel", 404)


async def test_delete_if_unused_aio(aconn, names):
    x = names.exchange()
    ch = await aconn.channel()
    ex = await ch.declare_exchange(x, "direct")
    q = await ch.declare_queue(exclusive=True)
    await q.bind(ex, "k")
    reply = await aio_reply(ch.exchange_delete(x, if_unused=True))
    assert_reply(reply, "channel", 406, f"exchange '{x}' in vhost '/' in use")
    ch = await aconn.channel()
    await ch.get_exchange(x, ensure=True)
    await ch.exchange_delete(x)  # without if_unused it goes, bindings and all
    assert_reply(await aio_reply(ch.get_exchange(x, ensure=True)), "channel", 404)


def test_delete_missing_exchange_is_ok_pika(pconn, names):
    ok = pconn.channel().exchange_delete(names.exchange())
    assert isinstance(ok.method, pika.spec.Exchange.DeleteOk)


async def test_delete_missing_exchange_is_ok_aio(aconn, names):
    ch = await aconn.channel()
    assert isinstance(await ch.exchange_delete(names.exchange()), aiormq.spec.Exchange.DeleteOk)


@pytest.mark.parametrize("name", PREDECLARED)
def test_delete_system_exchange_is_403_pika(pconn, name):
    reply = pika_reply(lambda: pconn.channel().exchange_delete(name))
    assert_reply(reply, "channel", 403, f"deletion of system exchange '{name}'")
    pconn.channel().exchange_declare(name, passive=True)


@pytest.mark.parametrize("name", PREDECLARED)
async def test_delete_system_exchange_is_403_aio(aconn, name):
    ch = await aconn.channel()
    reply = await aio_reply(ch.exchange_delete(name))
    assert_reply(reply, "channel", 403, f"deletion of system exchange '{name}'")


def test_delete_missing_amq_prefixed_exchange_is_403_pika(pconn):
    # The reserved prefix is checked before the lookup: even a missing amq.* name is refused.
    x = "amq." + unique("x")
    reply = pika_reply(lambda: pconn.channel().exchange_delete(x))
    assert_reply(reply, "channel", 403, f"deletion of system exchange '{x}'")


async def test_delete_missing_amq_prefixed_exchange_is_403_aio(aconn):
    x = "amq." + unique("x")
    ch = await aconn.channel()
    reply = await aio_reply(ch.exchange_delete(x))
    assert_reply(reply, "channel", 403, f"deletion of system exchange '{x}'")


def test_delete_default_exchange_is_403_pika(pconn):
    reply = pika_reply(lambda: pconn.channel().exchange_delete(""))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")


async def test_delete_default_exchange_is_403_aio(aconn):
    ch = await aconn.channel()
    reply = await aio_reply(ch.exchange_delete(""))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")


# ---- exchange-to-exchange bindings ---------------------------------------------------------


def test_exchange_chain_routes_and_unbind_stops_it_pika(pconn, names):
    a, b, c = names.exchange("a"), names.exchange("b"), names.exchange("c")
    ch = pconn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(a, "topic")
    ch.exchange_declare(b, "direct")
    ch.exchange_declare(c, "fanout")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_bind(b, a, "x.*")  # a -> b for x.*
    ch.exchange_bind(c, b, "x.y")  # b -> c for x.y only
    ch.queue_bind(q, c)
    ch.basic_publish(a, "x.y", b"1")
    ch.basic_publish(a, "x.z", b"2")  # passes a, stops at b
    ch.basic_publish(a, "y.y", b"3")  # stops at a
    assert pika_get_body(ch, q) == b"1"
    assert pika_get_body(ch, q) is None
    ch.exchange_unbind(c, b, "x.y")
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(a, "x.y", b"4", mandatory=True)
    assert pika_get_body(ch, q) is None


async def test_exchange_chain_routes_and_unbind_stops_it_aio(aconn, names):
    ch = await aconn.channel()
    a = await ch.declare_exchange(names.exchange("a"), "topic")
    b = await ch.declare_exchange(names.exchange("b"), "direct")
    c = await ch.declare_exchange(names.exchange("c"), "fanout")
    q = await ch.declare_queue(exclusive=True)
    await b.bind(a, "x.*")
    await c.bind(b, "x.y")
    await q.bind(c)
    for key, body in (("x.y", b"1"), ("x.z", b"2"), ("y.y", b"3")):
        await a.publish(aio_pika.Message(body), key, mandatory=False)
    assert await aio_get_body(q) == b"1"
    assert await aio_get_body(q) is None
    await c.unbind(b, "x.y")
    returned = await a.publish(aio_pika.Message(b"4"), "x.y", mandatory=True)
    assert isinstance(returned.delivery, aiormq.spec.Basic.Return)
    assert returned.delivery.reply_code == 312
    assert await aio_get_body(q) is None


def test_exchange_cycle_delivers_once_pika(pconn, names):
    a, b = names.exchange("a"), names.exchange("b")
    ch = pconn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(a, "fanout")
    ch.exchange_declare(b, "fanout")
    ch.exchange_bind(b, a)
    ch.exchange_bind(a, b)  # a <-> b
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, a)
    ch.queue_bind(q, b)  # reachable twice through the cycle
    ch.basic_publish(a, "", b"once")
    # The confirm means routing is over: exactly one copy, and the broker still answers.
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    assert pika_get_body(ch, q) == b"once"
    ch.basic_publish(b, "", b"again")
    assert ch.queue_declare(q, passive=True).method.message_count == 1


async def test_exchange_cycle_delivers_once_aio(aconn, names):
    ch = await aconn.channel()
    a = await ch.declare_exchange(names.exchange("a"), "fanout")
    b = await ch.declare_exchange(names.exchange("b"), "fanout")
    await b.bind(a)
    await a.bind(b)
    q = await ch.declare_queue(exclusive=True)
    await q.bind(a)
    await q.bind(b)
    await a.publish(aio_pika.Message(b"once"), "")
    assert (await ch.declare_queue(q.name, passive=True)).declaration_result.message_count == 1
    assert await aio_get_body(q) == b"once"
    assert await aio_get_body(q) is None


def test_exchange_bind_errors_pika(pconn, names):
    missing = names.exchange("missing")
    reply = pika_reply(lambda: pconn.channel().exchange_bind("amq.direct", missing, "k"))
    assert_reply(reply, "channel", 404, f"no exchange '{missing}'")
    reply = pika_reply(lambda: pconn.channel().exchange_bind(missing, "amq.direct", "k"))
    assert_reply(reply, "channel", 404, f"no exchange '{missing}'")
    reply = pika_reply(lambda: pconn.channel().exchange_bind("amq.direct", "", "k"))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")
    reply = pika_reply(lambda: pconn.channel().exchange_bind("", "amq.direct", "k"))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")
    # Unbinding what was never bound is fine.
    ok = pconn.channel().exchange_unbind("amq.direct", "amq.fanout", unique("never"))
    assert isinstance(ok.method, pika.spec.Exchange.UnbindOk)


async def test_exchange_bind_errors_aio(aconn, names):
    missing = names.exchange("missing")
    ch = await aconn.channel()
    direct = await ch.get_exchange("amq.direct")
    reply = await aio_reply(direct.bind(missing, "k"))
    assert_reply(reply, "channel", 404, f"no exchange '{missing}'")
    ch = await aconn.channel()
    reply = await aio_reply((await ch.get_exchange(missing, ensure=False)).bind("amq.direct", "k"))
    assert_reply(reply, "channel", 404, f"no exchange '{missing}'")
    ch = await aconn.channel()
    direct = await ch.get_exchange("amq.direct")
    assert isinstance(await direct.unbind("amq.fanout", unique("never")),
                      aiormq.spec.Exchange.UnbindOk)
