# queue.declare / bind / unbind / purge / delete, as RabbitMQ 3.10 answers them, through pika
# (BlockingConnection) and aio-pika: server-named queues, passive declares and their counts,
# exclusive (405 for other connections), auto-delete, durable, x-arguments equivalence and
# validation (406), reserved names (403), binding errors, and basic.cancel to consumers of a
# deleted queue.

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq.exceptions
import pika
import pika.exceptions
import pytest

from tests.conftest import unique
from tests.support.node import wait_for

from .helpers import aio_reply, assert_reply, pika_alive, pika_reply, pump

pytestmark = pytest.mark.timeout(30)

LOCKED = "cannot obtain exclusive access to locked queue"


def pika_queue_exists(conn: pika.BlockingConnection, queue: str) -> bool:
    ch = conn.channel()
    try:
        ch.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        # 405: an exclusive queue whose owner is gone, not deleted yet (deletion is a
        # metadata command of its own, as in RabbitMQ)
        assert e.reply_code in (404, 405), e
        return e.reply_code == 405
    ch.close()
    return True


async def aio_queue_exists(conn: aio_pika.abc.AbstractConnection, queue: str) -> bool:
    ch = await conn.channel()
    try:
        await ch.declare_queue(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    await ch.close()
    return True


async def aio_wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0,
                       what: str = "condition") -> None:
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}") from None


def pika_publish(ch, queue: str, *bodies: bytes) -> None:
    """Publish with confirms on, so every body is in the queue on return."""
    for body in bodies:
        ch.basic_publish("", queue, body)


def pika_counts(ch, queue: str) -> tuple[int, int]:
    ok = ch.queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count


async def ignore(_message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer callback that leaves messages unacked."""


async def aio_counts(ch: aio_pika.abc.AbstractChannel, queue: str) -> tuple[int, int]:
    ok = (await ch.declare_queue(queue, passive=True)).declaration_result
    return ok.message_count, ok.consumer_count


# ---- queue.declare -------------------------------------------------------------------------


def test_server_named_queue_pika(pconn):
    ch = pconn.channel()
    ch.confirm_delivery()
    ok = ch.queue_declare("", exclusive=True).method
    assert ok.queue.startswith("amq.gen-") and len(ok.queue) > len("amq.gen-")
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    assert ch.queue_declare("", exclusive=True).method.queue != ok.queue
    pika_publish(ch, ok.queue, b"by-name")
    assert ch.basic_get(ok.queue, auto_ack=True)[2] == b"by-name"


async def test_server_named_queue_aio(aconn):
    ch = await aconn.channel()
    q = await ch.declare_queue(exclusive=True)
    assert q.name.startswith("amq.gen-") and q.name == q.declaration_result.queue
    assert (q.declaration_result.message_count, q.declaration_result.consumer_count) == (0, 0)
    await ch.default_exchange.publish(aio_pika.Message(b"by-name"), q.name)
    msg = await q.get(no_ack=True, timeout=5)
    assert msg.body == b"by-name"


def test_declare_ok_counts_pika(pconn, names):
    q = names.queue()
    ch = pconn.channel()
    ch.confirm_delivery()
    ok = ch.queue_declare(q).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    pika_publish(ch, q, b"1", b"2", b"3")
    assert pika_counts(ch, q) == (3, 0)
    got: list[bytes] = []
    consumer_ch = pconn.channel()
    consumer_ch.basic_qos(prefetch_count=1)
    consumer_ch.basic_consume(q, lambda _ch, _m, _p, body: got.append(body))
    pump(pconn, lambda: got, timeout_s=10.0, what="one delivery")
    # message_count counts ready messages only; the unacked one is not among them.
    assert pika_counts(ch, q) == (2, 1)
    ok = ch.queue_declare(q).method  # a non-passive redeclare reports the same
    assert (ok.message_count, ok.consumer_count) == (2, 1)


async def test_declare_ok_counts_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    queue = await ch.declare_queue(q)
    assert (queue.declaration_result.message_count, queue.declaration_result.consumer_count) == (
        0, 0)
    for body in (b"1", b"2", b"3"):
        await ch.default_exchange.publish(aio_pika.Message(body), q)
    assert await aio_counts(ch, q) == (3, 0)
    consumer_ch = await aconn.channel()
    await consumer_ch.set_qos(prefetch_count=1)
    delivered = asyncio.Event()

    async def on_message(_message: aio_pika.abc.AbstractIncomingMessage) -> None:
        delivered.set()

    await (await consumer_ch.get_queue(q)).consume(on_message)
    await asyncio.wait_for(delivered.wait(), 10)
    assert await aio_counts(ch, q) == (2, 1)
    again = await ch.declare_queue(q)
    assert (again.declaration_result.message_count, again.declaration_result.consumer_count) == (
        2, 1)


def test_passive_declare_missing_is_404_pika(pconn, names):
    q = names.queue()
    reply = pika_reply(lambda: pconn.channel().queue_declare(q, passive=True))
    assert_reply(reply, "channel", 404, f"no queue '{q}' in vhost '/'")
    pika_alive(pconn)


async def test_passive_declare_missing_is_404_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    reply = await aio_reply(ch.declare_queue(q, passive=True))
    assert_reply(reply, "channel", 404, f"no queue '{q}' in vhost '/'")


def test_amq_prefix_is_reserved_pika(pconn):
    q = "amq." + unique("q")
    reply = pika_reply(lambda: pconn.channel().queue_declare(q))
    assert_reply(reply, "channel", 403, f"queue name '{q}' contains reserved prefix 'amq.*'")
    # A passive declare of such a name is just a lookup: 404.
    assert_reply(pika_reply(lambda: pconn.channel().queue_declare(q, passive=True)),
                 "channel", 404)
    pika_alive(pconn)


async def test_amq_prefix_is_reserved_aio(aconn):
    q = "amq." + unique("q")
    ch = await aconn.channel()
    reply = await aio_reply(ch.declare_queue(q))
    assert_reply(reply, "channel", 403, f"queue name '{q}' contains reserved prefix 'amq.*'")


def test_durable_queue_pika(pconn, names):
    q = names.queue()
    ch = pconn.channel()
    assert ch.queue_declare(q, durable=True).method.queue == q
    ch.queue_declare(q, durable=True)
    # passive ignores every other property
    ch.queue_declare(q, passive=True, durable=False)
    reply = pika_reply(lambda: ch.queue_declare(q, durable=False))
    assert_reply(reply, "channel", 406, f"inequivalent arg 'durable' for queue '{q}'")


async def test_durable_queue_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    await ch.declare_queue(q, durable=True)
    await ch.declare_queue(q, durable=True)
    reply = await aio_reply(ch.declare_queue(q, durable=False))
    assert_reply(reply, "channel", 406, f"inequivalent arg 'durable' for queue '{q}'")


def test_redeclare_with_different_auto_delete_is_406_pika(pconn, names):
    q = names.queue()
    pconn.channel().queue_declare(q)
    reply = pika_reply(lambda: pconn.channel().queue_declare(q, auto_delete=True))
    assert_reply(reply, "channel", 406, f"inequivalent arg 'auto_delete' for queue '{q}'")


async def test_redeclare_with_different_auto_delete_is_406_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    await ch.declare_queue(q)
    reply = await aio_reply(ch.declare_queue(q, auto_delete=True))
    assert_reply(reply, "channel", 406, f"inequivalent arg 'auto_delete' for queue '{q}'")


# (test id, first arguments, second arguments, the argument named in the 406)
ARG_MISMATCHES = [
    ("ttl-changed", {"x-message-ttl": 1000}, {"x-message-ttl": 2000}, "x-message-ttl"),
    ("ttl-added", {}, {"x-message-ttl": 2000}, "x-message-ttl"),
    ("ttl-removed", {"x-message-ttl": 2000}, {}, "x-message-ttl"),
    ("max-length-changed", {"x-max-length": 10}, {"x-max-length": 20}, "x-max-length"),
]
INVALID_ARGS = [
    ("ttl-negative", "x-message-ttl", -1),
    ("ttl-string", "x-message-ttl", "abc"),
    ("ttl-too-large", "x-message-ttl", 2**40),
    ("max-length-negative", "x-max-length", -1),
    ("max-length-string", "x-max-length", "ten"),
    ("max-length-bytes-negative", "x-max-length-bytes", -1),
    ("expires-zero", "x-expires", 0),
    ("expires-string", "x-expires", "1000"),
    ("max-priority-over-255", "x-max-priority", 256),
    ("overflow-unknown", "x-overflow", "drop-everything"),
    ("queue-mode-unknown", "x-queue-mode", "bogus"),
    ("single-active-consumer-string", "x-single-active-consumer", "yes"),
    ("dead-letter-exchange-int", "x-dead-letter-exchange", 5),
    ("dead-letter-routing-key-without-exchange", "x-dead-letter-routing-key", "k"),
]
VALID_ARGS = [
    {"x-message-ttl": 0}, {"x-max-length": 0}, {"x-max-priority": 10}, {"x-queue-mode": "lazy"},
    {"x-overflow": "reject-publish"}, {"x-overflow": "reject-publish-dlx"},
    {"x-queue-type": "classic"}, {"x-no-such-argument": 1},  # unknown x-args are kept, not checked
]
SAME_ARGS = ({"x-max-length": 10, "x-message-ttl": 100}, {"x-message-ttl": 100, "x-max-length": 10})


@pytest.mark.parametrize(("first", "second", "arg"), [m[1:] for m in ARG_MISMATCHES],
                         ids=[m[0] for m in ARG_MISMATCHES])
def test_redeclare_with_different_arguments_is_406_pika(pconn, names, first, second, arg):
    q = names.queue()
    pconn.channel().queue_declare(q, arguments=first)
    reply = pika_reply(lambda: pconn.channel().queue_declare(q, arguments=second))
    assert_reply(reply, "channel", 406, f"inequivalent arg '{arg}' for queue '{q}'")
    pika_alive(pconn)


@pytest.mark.parametrize(("first", "second", "arg"), [m[1:] for m in ARG_MISMATCHES],
                         ids=[m[0] for m in ARG_MISMATCHES])
async def test_redeclare_with_different_arguments_is_406_aio(aconn, names, first, second, arg):
    q = names.queue()
    ch = await aconn.channel()
    await ch.declare_queue(q, arguments=first)
    reply = await aio_reply(ch.declare_queue(q, arguments=second))
    assert_reply(reply, "channel", 406, f"inequivalent arg '{arg}' for queue '{q}'")


def test_redeclare_with_same_arguments_is_ok_pika(pconn, names):
    q = names.queue()
    ch = pconn.channel()
    ch.queue_declare(q, arguments=SAME_ARGS[0])
    assert ch.queue_declare(q, arguments=SAME_ARGS[1]).method.queue == q
    ch.queue_declare(q, passive=True, arguments={"x-message-ttl": 5})  # passive: not compared


async def test_redeclare_with_same_arguments_is_ok_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    await ch.declare_queue(q, arguments=SAME_ARGS[0])
    assert (await ch.declare_queue(q, arguments=SAME_ARGS[1])).name == q


def _args_id(arguments: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in arguments.items())


@pytest.mark.parametrize("arguments", VALID_ARGS, ids=_args_id)
def test_valid_argument_is_accepted_pika(pconn, names, arguments):
    q = names.queue()
    ch = pconn.channel()
    assert ch.queue_declare(q, arguments=arguments).method.queue == q
    ch.queue_declare(q, arguments=arguments)  # and is equivalent to itself


@pytest.mark.parametrize(("arg", "value"), [a[1:] for a in INVALID_ARGS],
                         ids=[a[0] for a in INVALID_ARGS])
def test_invalid_argument_is_406_pika(pconn, names, arg, value):
    q = names.queue()
    reply = pika_reply(lambda: pconn.channel().queue_declare(q, arguments={arg: value}))
    # Mostly "invalid arg 'x-…' for queue '…'", but "invalid type '…' for arg 'x-…' in
    # queue" for a wrongly typed x-dead-letter-exchange: assert the names only.
    assert_reply(reply, "channel", 406, "invalid ", f"'{arg}'", f"queue '{q}'")
    assert not pika_queue_exists(pconn, q)


@pytest.mark.parametrize(("arg", "value"), [a[1:] for a in INVALID_ARGS],
                         ids=[a[0] for a in INVALID_ARGS])
async def test_invalid_argument_is_406_aio(aconn, names, arg, value):
    q = names.queue()
    ch = await aconn.channel()
    reply = await aio_reply(ch.declare_queue(q, arguments={arg: value}))
    assert_reply(reply, "channel", 406, "invalid ", f"'{arg}'", f"queue '{q}'")
    assert not await aio_queue_exists(aconn, q)


# ---- exclusive queues ----------------------------------------------------------------------

PIKA_OTHER_CONNECTION_OPS: dict[str, Callable[[Any, str], Any]] = {
    "declare": lambda ch, q: ch.queue_declare(q),
    "declare-exclusive": lambda ch, q: ch.queue_declare(q, exclusive=True),
    "passive-declare": lambda ch, q: ch.queue_declare(q, passive=True),
    "consume": lambda ch, q: ch.basic_consume(q, lambda *_: None),
    "get": lambda ch, q: ch.basic_get(q),
    "bind": lambda ch, q: ch.queue_bind(q, "amq.fanout"),
    "unbind": lambda ch, q: ch.queue_unbind(q, "amq.direct", q),
    "purge": lambda ch, q: ch.queue_purge(q),
    "delete": lambda ch, q: ch.queue_delete(q),
}


async def _aio_op(ch: aio_pika.abc.AbstractChannel, op: str, q: str) -> Any:
    queue = await ch.get_queue(q, ensure=False)
    match op:
        case "declare":
            return await ch.declare_queue(q)
        case "declare-exclusive":
            return await ch.declare_queue(q, exclusive=True)
        case "passive-declare":
            return await ch.declare_queue(q, passive=True)
        case "consume":
            return await queue.consume(ignore)
        case "get":
            return await queue.get(fail=False)
        case "bind":
            return await queue.bind("amq.fanout")
        case "unbind":
            return await queue.unbind("amq.direct", q)
        case "purge":
            return await queue.purge()
        case "delete":
            return await ch.queue_delete(q)
    raise ValueError(op)


@pytest.mark.parametrize("op", list(PIKA_OTHER_CONNECTION_OPS))
def test_exclusive_queue_is_locked_for_other_connections_pika(pconnect, names, op):
    owner, other = pconnect(), pconnect()
    q = names.queue("excl")
    owner_ch = owner.channel()
    owner_ch.queue_declare(q, exclusive=True)
    owner_ch.queue_bind(q, "amq.direct", q)
    reply = pika_reply(lambda: PIKA_OTHER_CONNECTION_OPS[op](other.channel(), q))
    assert_reply(reply, "channel", 405, f"{LOCKED} '{q}'")
    pika_alive(other)
    assert pika_counts(owner_ch, q) == (0, 0)  # still the owner's, untouched


@pytest.mark.parametrize("op", list(PIKA_OTHER_CONNECTION_OPS))
async def test_exclusive_queue_is_locked_for_other_connections_aio(aconnect, names, op):
    owner, other = await aconnect(), await aconnect()
    q = names.queue("excl")
    owner_ch = await owner.channel()
    queue = await owner_ch.declare_queue(q, exclusive=True)
    await queue.bind("amq.direct", q)
    reply = await aio_reply(_aio_op(await other.channel(), op, q))
    assert_reply(reply, "channel", 405, f"{LOCKED} '{q}'")
    assert await aio_counts(owner_ch, q) == (0, 0)


def test_exclusive_queue_accepts_publishes_and_goes_with_its_connection_pika(pconnect, names):
    owner, other = pconnect(), pconnect()
    q = names.queue("excl")
    owner_ch = owner.channel()
    owner_ch.queue_declare(q, exclusive=True)
    other_ch = other.channel()
    other_ch.confirm_delivery()
    other_ch.basic_publish("", q, b"from-other", mandatory=True)  # routing is not locked
    assert owner_ch.basic_get(q, auto_ack=True)[2] == b"from-other"
    owner.close()
    wait_for(lambda: not pika_queue_exists(other, q), what="exclusive queue to go")


async def test_exclusive_queue_goes_with_its_connection_aio(aconnect, names):
    owner, other = await aconnect(), await aconnect()
    q = names.queue("excl")
    await (await owner.channel()).declare_queue(q, exclusive=True)
    assert await aio_queue_exists(owner, q)
    await owner.close()
    await aio_wait_for(lambda: _not(aio_queue_exists(other, q)), what="exclusive queue to go")


@pytest.mark.parametrize("first_exclusive", [False, True])
def test_exclusive_flag_mismatch_on_the_same_connection_is_405_pika(pconn, names,
                                                                    first_exclusive):
    q = names.queue("excl")
    pconn.channel().queue_declare(q, exclusive=first_exclusive)
    reply = pika_reply(lambda: pconn.channel().queue_declare(q, exclusive=not first_exclusive))
    assert_reply(reply, "channel", 405, f"{LOCKED} '{q}'")
    pika_alive(pconn)


@pytest.mark.parametrize("first_exclusive", [False, True])
async def test_exclusive_flag_mismatch_on_the_same_connection_is_405_aio(aconn, names,
                                                                         first_exclusive):
    q = names.queue("excl")
    await (await aconn.channel()).declare_queue(q, exclusive=first_exclusive)
    ch = await aconn.channel()
    reply = await aio_reply(ch.declare_queue(q, exclusive=not first_exclusive))
    assert_reply(reply, "channel", 405, f"{LOCKED} '{q}'")


async def _not(aw: Awaitable[bool]) -> bool:
    return not await aw


# ---- auto-delete queues --------------------------------------------------------------------


def test_auto_delete_queue_goes_with_its_last_consumer_pika(pconn, names):
    q = names.queue("ad")
    ch = pconn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q, auto_delete=True)
    pika_publish(ch, q, b"m")
    assert ch.basic_get(q, auto_ack=True)[2] == b"m"  # basic.get is no consumer
    assert pika_counts(ch, q) == (0, 0)  # never had a consumer: still there
    tag1 = ch.basic_consume(q, lambda *_: None)
    tag2 = ch.basic_consume(q, lambda *_: None)
    ch.basic_cancel(tag1)
    assert pika_counts(ch, q) == (0, 1)
    ch.basic_cancel(tag2)
    wait_for(lambda: not pika_queue_exists(pconn, q), what="auto-delete queue to go")


async def test_auto_delete_queue_goes_with_its_last_consumer_aio(aconn, names):
    q = names.queue("ad")
    ch = await aconn.channel()
    queue = await ch.declare_queue(q, auto_delete=True)
    assert await aio_counts(ch, q) == (0, 0)
    tag1 = await queue.consume(ignore)
    tag2 = await queue.consume(ignore)
    await queue.cancel(tag1)
    assert await aio_counts(ch, q) == (0, 1)
    await queue.cancel(tag2)
    await aio_wait_for(lambda: _not(aio_queue_exists(aconn, q)), what="auto-delete queue to go")


def test_auto_delete_queue_goes_when_its_consumers_connection_closes_pika(pconnect, names):
    watcher, consumer = pconnect(), pconnect()
    q = names.queue("ad")
    ch = consumer.channel()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_consume(q, lambda *_: None)
    assert pika_counts(watcher.channel(), q) == (0, 1)
    consumer.close()
    wait_for(lambda: not pika_queue_exists(watcher, q), what="auto-delete queue to go")


# ---- queue.bind / queue.unbind -------------------------------------------------------------


def test_bind_errors_pika(pconn, names):
    missing_q, missing_x = names.queue("missing"), names.exchange("missing")
    q = pconn.channel().queue_declare("", exclusive=True).method.queue
    reply = pika_reply(lambda: pconn.channel().queue_bind(q, missing_x, "k"))
    assert_reply(reply, "channel", 404, f"no exchange '{missing_x}' in vhost '/'")
    reply = pika_reply(lambda: pconn.channel().queue_bind(missing_q, "amq.direct", "k"))
    assert_reply(reply, "channel", 404, f"no queue '{missing_q}' in vhost '/'")
    reply = pika_reply(lambda: pconn.channel().queue_bind(q, "", "k"))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")
    reply = pika_reply(lambda: pconn.channel().queue_unbind(q, "", q))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")
    pika_alive(pconn)


async def test_bind_errors_aio(aconn, names):
    missing_q, missing_x = names.queue("missing"), names.exchange("missing")
    ch = await aconn.channel()
    q = await ch.declare_queue(exclusive=True)
    reply = await aio_reply(q.bind(missing_x, "k"))
    assert_reply(reply, "channel", 404, f"no exchange '{missing_x}' in vhost '/'")
    ch = await aconn.channel()
    reply = await aio_reply((await ch.get_queue(missing_q, ensure=False)).bind("amq.direct", "k"))
    assert_reply(reply, "channel", 404, f"no queue '{missing_q}' in vhost '/'")
    ch = await aconn.channel()
    q = await ch.get_queue(q.name, ensure=False)
    reply = await aio_reply(q.bind(ch.default_exchange, "k"))
    assert_reply(reply, "channel", 403, "operation not permitted on the default exchange")


def test_unbind_what_does_not_exist_is_ok_pika(pconn, names):
    ch = pconn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert isinstance(ch.queue_unbind(q, "amq.direct", "never-bound").method,
                      pika.spec.Queue.UnbindOk)
    # RabbitMQ 3.x answers unbind-ok even when the exchange or the queue is missing.
    ch.queue_unbind(q, names.exchange("missing"), "k")
    ch.queue_unbind(names.queue("missing"), "amq.direct", "k")


async def test_unbind_what_does_not_exist_is_ok_aio(aconn):
    ch = await aconn.channel()
    q = await ch.declare_queue(exclusive=True)
    assert isinstance(await q.unbind("amq.direct", "never-bound"), aiormq.spec.Queue.UnbindOk)


def test_bind_is_idempotent_and_unbind_removes_it_pika(pconn):
    ch = pconn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    key = unique("k")
    ch.queue_bind(q, "amq.direct", key)
    ch.queue_bind(q, "amq.direct", key)  # the same binding twice is one binding
    ch.basic_publish("amq.direct", key, b"once")
    assert pika_counts(ch, q) == (1, 0)
    ch.queue_unbind(q, "amq.direct", key)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", key, b"gone", mandatory=True)


async def test_bind_is_idempotent_and_unbind_removes_it_aio(aconn):
    ch = await aconn.channel()
    q = await ch.declare_queue(exclusive=True)
    key = unique("k")
    direct = await ch.get_exchange("amq.direct")
    await q.bind(direct, key)
    await q.bind(direct, key)
    await direct.publish(aio_pika.Message(b"once"), key)
    assert await aio_counts(ch, q.name) == (1, 0)
    await q.unbind(direct, key)
    returned = await direct.publish(aio_pika.Message(b"gone"), key, mandatory=True)
    assert returned.delivery.reply_code == 312


def test_empty_queue_name_means_the_channels_last_declared_queue_pika(pconn):
    ch = pconn.channel()
    ch.confirm_delivery()
    reply = pika_reply(lambda: ch.queue_bind("", "amq.direct", "k"))
    assert_reply(reply, "channel", 404, "no previously declared queue")
    ch = pconn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    key = unique("k")
    ch.queue_bind("", "amq.direct", key)  # binds q
    ch.basic_publish("amq.direct", key, b"m")
    assert pika_counts(ch, q) == (1, 0)
    assert ch.queue_purge("").method.message_count == 1
    # ...but a passive queue.declare does not expand "": it looks up a queue named "".
    reply = pika_reply(lambda: ch.queue_declare("", passive=True))
    assert_reply(reply, "channel", 404, "no queue '' in vhost '/'")


async def test_empty_queue_name_means_the_channels_last_declared_queue_aio(aconn):
    ch = await aconn.channel()
    q = await ch.declare_queue(exclusive=True)
    key = unique("k")
    await (await ch.get_queue("", ensure=False)).bind("amq.direct", key)
    await (await ch.get_exchange("amq.direct")).publish(aio_pika.Message(b"m"), key)
    assert await aio_counts(ch, q.name) == (1, 0)


# ---- queue.purge ---------------------------------------------------------------------------


def test_purge_returns_count_and_keeps_unacked_pika(pconn, names):
    q = names.queue()
    ch = pconn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q)
    pika_publish(ch, q, b"0", b"1", b"2", b"3", b"4")
    held = [ch.basic_get(q)[0], ch.basic_get(q)[0]]  # two unacked
    assert ch.queue_purge(q).method.message_count == 3
    assert pika_counts(ch, q) == (0, 0)
    assert ch.queue_purge(q).method.message_count == 0
    for method in held:
        ch.basic_nack(method.delivery_tag, requeue=True)
    wait_for(lambda: pika_counts(ch, q)[0] == 2, what="requeued messages")
    bodies = {ch.basic_get(q, auto_ack=True)[2] for _ in range(2)}
    assert bodies == {b"0", b"1"}


async def test_purge_returns_count_and_keeps_unacked_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    queue = await ch.declare_queue(q)
    for i in range(5):
        await ch.default_exchange.publish(aio_pika.Message(str(i).encode()), q)
    held = [await queue.get(no_ack=False, timeout=5) for _ in range(2)]
    assert (await queue.purge()).message_count == 3
    assert await aio_counts(ch, q) == (0, 0)
    for msg in held:
        await msg.nack(requeue=True)

    async def requeued() -> bool:
        return (await aio_counts(ch, q))[0] == 2

    await aio_wait_for(requeued, what="requeued messages")


def test_purge_missing_queue_is_404_pika(pconn, names):
    q = names.queue()
    reply = pika_reply(lambda: pconn.channel().queue_purge(q))
    assert_reply(reply, "channel", 404, f"no queue '{q}'")


async def test_purge_missing_queue_is_404_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    reply = await aio_reply((await ch.get_queue(q, ensure=False)).purge())
    assert_reply(reply, "channel", 404, f"no queue '{q}'")


# ---- queue.delete --------------------------------------------------------------------------


def test_delete_returns_ready_count_pika(pconn, names):
    q = names.queue()
    ch = pconn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q)
    pika_publish(ch, q, b"0", b"1", b"2", b"3")
    ch.basic_get(q)  # one unacked: not counted
    assert ch.queue_delete(q).method.message_count == 3
    assert not pika_queue_exists(pconn, q)


async def test_delete_returns_ready_count_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    queue = await ch.declare_queue(q)
    for i in range(4):
        await ch.default_exchange.publish(aio_pika.Message(str(i).encode()), q)
    ok = await queue.delete(if_unused=False, if_empty=False)
    assert ok.message_count == 4
    assert not await aio_queue_exists(aconn, q)


def test_delete_if_unused_with_a_consumer_is_406_pika(pconn, names):
    q = names.queue()
    ch = pconn.channel()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *_: None)
    reply = pika_reply(lambda: pconn.channel().queue_delete(q, if_unused=True))
    assert_reply(reply, "channel", 406, f"queue '{q}' in vhost '/' in use")
    assert pika_counts(ch, q) == (0, 1)


async def test_delete_if_unused_with_a_consumer_is_406_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    queue = await ch.declare_queue(q)
    await queue.consume(ignore)
    other = await aconn.channel()
    reply = await aio_reply(other.queue_delete(q, if_unused=True))
    assert_reply(reply, "channel", 406, f"queue '{q}' in vhost '/' in use")
    assert await aio_counts(ch, q) == (0, 1)


def test_delete_if_empty_pika(pconn, names):
    q = names.queue()
    ch = pconn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q)
    pika_publish(ch, q, b"m")
    reply = pika_reply(lambda: pconn.channel().queue_delete(q, if_empty=True))
    assert_reply(reply, "channel", 406, f"queue '{q}' in vhost '/' not empty")
    assert pika_counts(ch, q) == (1, 0)
    ch.basic_get(q)  # only an unacked message left: the queue counts as empty
    assert ch.queue_delete(q, if_empty=True).method.message_count == 0
    assert not pika_queue_exists(pconn, q)


async def test_delete_if_empty_aio(aconn, names):
    q = names.queue()
    ch = await aconn.channel()
    queue = await ch.declare_queue(q)
    await ch.default_exchange.publish(aio_pika.Message(b"m"), q)
    reply = await aio_reply(queue.delete(if_unused=False, if_empty=True))
    assert_reply(reply, "channel", 406, f"queue '{q}' in vhost '/' not empty")


def test_delete_missing_queue_is_ok_pika(pconn, names):
    ok = pconn.channel().queue_delete(names.queue()).method
    assert isinstance(ok, pika.spec.Queue.DeleteOk) and ok.message_count == 0


async def test_delete_missing_queue_is_ok_aio(aconn, names):
    ch = await aconn.channel()
    ok = await ch.queue_delete(names.queue())
    assert isinstance(ok, aiormq.spec.Queue.DeleteOk) and ok.message_count == 0


# ---- basic.cancel from the broker when a consumed queue is deleted -------------------------


def test_deleted_queue_cancels_its_consumers_pika(pconnect, names):
    conn, deleter = pconnect(), pconnect()
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    cancelled: list[Any] = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    tag = ch.basic_consume(q, lambda *_: None)
    deleter.channel().queue_delete(q)
    pump(conn, lambda: cancelled, timeout_s=10.0, what="basic.cancel from the broker")
    assert isinstance(cancelled[0], pika.spec.Basic.Cancel)
    assert cancelled[0].consumer_tag == tag
    assert tag not in ch.consumer_tags
    pika_alive(conn)


def test_deleted_queue_ends_the_consume_generator_pika(pconnect, names):
    conn, deleter = pconnect(), pconnect()
    q = names.queue()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q)
    pika_publish(ch, q, b"first")
    events = []
    # inactivity_timeout yields None instead of blocking forever if no cancel arrives.
    for event in ch.consume(q, inactivity_timeout=5):
        events.append(event)
        if len(events) == 1:
            ch.basic_ack(event[0].delivery_tag)
            deleter.channel().queue_delete(q)
        if len(events) > 1:
            break
    assert len(events) == 1 and events[0][2] == b"first"


async def test_deleted_queue_cancels_its_consumers_aio(aconnect, names):
    conn, deleter = await aconnect(), await aconnect()
    q = names.queue()
    ch = await conn.channel()
    queue = await ch.declare_queue(q)
    underlay = await ch.get_underlay_channel()
    cancelled: asyncio.Future = asyncio.get_running_loop().create_future()
    underlay.on_consumer_cancel_callbacks.add(
        lambda frame: cancelled.done() or cancelled.set_result(frame))
    tag = await queue.consume(ignore)
    assert tag in underlay.consumers
    await (await deleter.channel()).queue_delete(q)
    frame = await asyncio.wait_for(cancelled, 10)
    assert isinstance(frame, aiormq.spec.Basic.Cancel) and frame.consumer_tag == tag
    assert tag not in underlay.consumers
    assert not ch.is_closed
