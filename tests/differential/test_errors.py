"""Differential: reply codes, class/method ids and reply texts of common errors, and whether
each closes the channel or the whole connection, compared with RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pamqp import commands

from tests.differential.harness import (
    BrokerClosed,
    Names,
    call,
    outcome,
    ping,
    publish,
    raw_client,
    reply,
)
from tests.support.rawamqp import RawClient, ServerClosed

pytestmark = pytest.mark.rabbitmq

Op = Callable[[RawClient, Names, str], Any]


def declare_queue(c: RawClient, name: str, **kw: Any) -> Any:
    return call(c, commands.Queue.Declare(queue=name, **kw))


def declare_exchange(c: RawClient, name: str, kind: str = "direct", **kw: Any) -> Any:
    return call(c, commands.Exchange.Declare(exchange=name, exchange_type=kind, **kw))


def passive_missing_queue(c: RawClient, n: Names, url: str) -> Any:
    return declare_queue(c, n["q"], passive=True)


def passive_missing_exchange(c: RawClient, n: Names, url: str) -> Any:
    return declare_exchange(c, n["x"], passive=True)


def queue_inequivalent_durable(c: RawClient, n: Names, url: str) -> Any:
    declare_queue(c, n["q"], auto_delete=True)
    return declare_queue(c, n["q"], durable=True, auto_delete=True)


def queue_inequivalent_argument(c: RawClient, n: Names, url: str) -> Any:
    declare_queue(c, n["q"], auto_delete=True, arguments={"x-max-length": 5})
    return declare_queue(c, n["q"], auto_delete=True, arguments={"x-max-length": 6})


def exchange_inequivalent_type(c: RawClient, n: Names, url: str) -> Any:
    declare_exchange(c, n["x"], "direct", auto_delete=True)
    return declare_exchange(c, n["x"], "fanout", auto_delete=True)


def exchange_unknown_type(c: RawClient, n: Names, url: str) -> Any:
    return declare_exchange(c, n["x"], "x-no-such-type")


def exchange_reserved_name(c: RawClient, n: Names, url: str) -> Any:
    return declare_exchange(c, "amq." + n["x"])


def queue_reserved_name(c: RawClient, n: Names, url: str) -> Any:
    return declare_queue(c, "amq." + n["q"])


def delete_builtin_exchange(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Exchange.Delete(exchange="amq.direct"))


def delete_default_exchange(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Exchange.Delete(exchange=""))


def publish_to_missing_exchange(c: RawClient, n: Names, url: str) -> Any:
    publish(c, n["x"], "rk", b"body")
    return ping(c).name


def publish_mandatory_unroutable(c: RawClient, n: Names, url: str) -> Any:
    call(c, commands.Confirm.Select())
    publish(c, "amq.direct", n["unrouted"], b"body", mandatory=True)
    ret = reply(c)
    c.read_frame()  # content header
    c.read_frame()  # body
    ack = reply(c)
    return [ret.name, ret.reply_code, ret.reply_text, n.normalise(ret.routing_key),
            ack.name, ack.delivery_tag]


def ack_unknown_delivery_tag(c: RawClient, n: Names, url: str) -> Any:
    c.send_method(commands.Basic.Ack(delivery_tag=42), 1)
    return ping(c).name


def nack_unknown_delivery_tag_multiple(c: RawClient, n: Names, url: str) -> Any:
    c.send_method(commands.Basic.Nack(delivery_tag=7, multiple=True), 1)
    return ping(c).name


def ack_zero_multiple_with_nothing_outstanding(c: RawClient, n: Names, url: str) -> Any:
    c.send_method(commands.Basic.Ack(delivery_tag=0, multiple=True), 1)
    return ping(c).name


def bind_to_missing_exchange(c: RawClient, n: Names, url: str) -> Any:
    declare_queue(c, n["q"], exclusive=True)
    return call(c, commands.Queue.Bind(queue=n["q"], exchange=n["x"], routing_key="k"))


def bind_missing_queue(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Queue.Bind(queue=n["q"], exchange="amq.direct", routing_key="k"))


def exchange_bind_missing_destination(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Exchange.Bind(destination=n["x"], source="amq.direct"))


def unbind_missing_binding(c: RawClient, n: Names, url: str) -> Any:
    declare_queue(c, n["q"], exclusive=True)
    return call(c, commands.Queue.Unbind(queue=n["q"], exchange="amq.direct",
                                         routing_key="never-bound")).name


def get_from_missing_queue(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Basic.Get(queue=n["q"]))


def consume_from_missing_queue(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Basic.Consume(queue=n["q"]))


def delete_missing_queue(c: RawClient, n: Names, url: str) -> Any:
    ok = call(c, commands.Queue.Delete(queue=n["q"]))
    return [ok.name, ok.message_count]


def delete_missing_exchange(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Exchange.Delete(exchange=n["x"])).name


def delete_if_unused_with_consumer(c: RawClient, n: Names, url: str) -> Any:
    declare_queue(c, n["q"], exclusive=True)
    call(c, commands.Basic.Consume(queue=n["q"], consumer_tag="ctag"))
    return call(c, commands.Queue.Delete(queue=n["q"], if_unused=True))


def delete_if_empty_with_messages(c: RawClient, n: Names, url: str) -> Any:
    declare_queue(c, n["q"], exclusive=True)
    publish(c, "", n["q"], b"m")
    ping(c)
    return call(c, commands.Queue.Delete(queue=n["q"], if_empty=True))


def duplicate_consumer_tag(c: RawClient, n: Names, url: str) -> Any:
    declare_queue(c, n["q"], exclusive=True)
    call(c, commands.Basic.Consume(queue=n["q"], consumer_tag="same"))
    return call(c, commands.Basic.Consume(queue=n["q"], consumer_tag="same"))


def cancel_unknown_consumer(c: RawClient, n: Names, url: str) -> Any:
    ok = call(c, commands.Basic.Cancel(consumer_tag="never-seen"))
    return [ok.name, ok.consumer_tag]


def exclusive_queue_from_other_connection(c: RawClient, n: Names, url: str) -> Any:
    declare_queue(c, n["q"], exclusive=True)
    other = raw_client(url)
    try:
        return [outcome(n, lambda: declare_queue(other, n["q"], passive=True)),
                outcome(n, lambda: (other.open_channel(1),
                                    call(other, commands.Basic.Consume(queue=n["q"]))))]
    finally:
        other.close()


def invalid_queue_argument_type(c: RawClient, n: Names, url: str) -> Any:
    return declare_queue(c, n["q"], exclusive=True, arguments={"x-max-length": "ten"})


def commit_without_select(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Tx.Commit())


def confirm_after_tx(c: RawClient, n: Names, url: str) -> Any:
    call(c, commands.Tx.Select())
    return call(c, commands.Confirm.Select())


def tx_after_confirm(c: RawClient, n: Names, url: str) -> Any:
    call(c, commands.Confirm.Select())
    return call(c, commands.Tx.Select())


def qos_prefetch_size(c: RawClient, n: Names, url: str) -> Any:
    return call(c, commands.Basic.Qos(prefetch_size=1000, prefetch_count=1))


def long_queue_name(c: RawClient, n: Names, url: str) -> Any:
    return declare_queue(c, "q" * 255, passive=True)


OPS: dict[str, Op] = {op.__name__: op for op in [
    passive_missing_queue, passive_missing_exchange, queue_inequivalent_durable,
    queue_inequivalent_argument, exchange_inequivalent_type, exchange_unknown_type,
    exchange_reserved_name, queue_reserved_name, delete_builtin_exchange,
    delete_default_exchange, publish_to_missing_exchange, publish_mandatory_unroutable,
    ack_unknown_delivery_tag, nack_unknown_delivery_tag_multiple,
    ack_zero_multiple_with_nothing_outstanding, bind_to_missing_exchange, bind_missing_queue,
    exchange_bind_missing_destination, unbind_missing_binding, get_from_missing_queue,
    consume_from_missing_queue, delete_missing_queue, delete_missing_exchange,
    delete_if_unused_with_consumer, delete_if_empty_with_messages, duplicate_consumer_tag,
    cancel_unknown_consumer, exclusive_queue_from_other_connection,
    invalid_queue_argument_type, commit_without_select, confirm_after_tx, tx_after_confirm,
    qos_prefetch_size, long_queue_name,
]}


def error_scenario(url: str, op_name: str) -> list:
    """Trace: the op's outcome, then whether the connection (and a new channel) still work."""
    names = Names()
    c = raw_client(url)
    try:
        trace = [outcome(names, lambda: summarise(OPS[op_name](c, names, url)))]
        try:
            c.open_channel(2)
            ping(c, 2)
            trace.append("connection usable")
        except (OSError, EOFError, ServerClosed, TimeoutError):
            trace.append("connection gone")  # after a connection-level error
        return trace
    finally:
        c.close()
        cleanup(url, names)


def summarise(result: Any) -> Any:
    """Frames become their names: their fields are checked by the ops that matter."""
    if isinstance(result, tuple):
        return [summarise(r) for r in result]
    return getattr(result, "name", result)


def cleanup(url: str, names: Names) -> None:
    """Delete what the op declared; exclusive queues of a closed connection may still be
    locked for a moment (405): those go away with their connection."""
    c = raw_client(url)
    try:
        for label, name in names.by_label.items():
            try:
                if label.startswith("q"):
                    call(c, commands.Queue.Delete(queue=name))
                elif label.startswith("x"):
                    call(c, commands.Exchange.Delete(exchange=name))
            except BrokerClosed:
                c.open_channel(1)
    finally:
        c.close()


@pytest.mark.parametrize("op_name", list(OPS))
def test_error_replies_match_rabbitmq(differential, op_name: str):
    differential(error_scenario, op_name)
