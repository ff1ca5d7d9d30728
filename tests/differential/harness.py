"""Helpers for differential scenarios: a scenario takes an AMQP URL and returns a JSON-able
trace of what a client observed. Names are unique per run, so scenarios normalise them
out of reply texts with `Names`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

import pika
from pamqp import body as pbody
from pamqp import commands
from pamqp import header as pheader

from tests.support.rawamqp import RawClient, close_summary


class Names:
    """Unique names per run, and the placeholders they are replaced with in traces."""

    def __init__(self) -> None:
        self.by_label: dict[str, str] = {}

    def __getitem__(self, label: str) -> str:
        if label not in self.by_label:
            self.by_label[label] = f"d-{label}-{uuid.uuid4().hex[:8]}"
        return self.by_label[label]

    def normalise(self, text: str) -> str:
        for label, name in self.by_label.items():
            text = text.replace(name, f"<{label}>")
        return text


class BrokerClosed(Exception):
    def __init__(self, level: str, close: Any) -> None:
        super().__init__(level, close_summary(close))
        self.level, self.close = level, close


def raw_client(url: str) -> RawClient:
    u = urlparse(url)
    c = RawClient(u.hostname or "127.0.0.1", u.port or 5672, timeout_s=5).connect()
    vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
    c.handshake(user=unquote(u.username or "guest"), password=unquote(u.password or "guest"),
                vhost=vhost)
    c.open_channel(1)
    return c


def call(c: RawClient, method: Any, channel: int = 1) -> Any:
    """Send a synchronous method and return its reply; BrokerClosed if the broker closes."""
    c.send_method(method, channel)
    return reply(c)


def reply(c: RawClient) -> Any:
    got = c.read_method()
    if isinstance(got.frame, commands.Connection.Close):
        c.send_method(commands.Connection.CloseOk())
        raise BrokerClosed("connection", got.frame)
    if isinstance(got.frame, commands.Channel.Close):
        c.send_method(commands.Channel.CloseOk(), got.channel)
        raise BrokerClosed("channel", got.frame)
    return got.frame


def ping(c: RawClient, channel: int = 1) -> Any:
    """A harmless synchronous round trip: flushes the effects of asynchronous methods."""
    return call(c, commands.Exchange.Declare(exchange="amq.direct", passive=True), channel)


def publish(c: RawClient, exchange: str, routing_key: str, body: bytes = b"",
            channel: int = 1, mandatory: bool = False,
            properties: commands.Basic.Properties | None = None) -> None:
    c.send_method(commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                         mandatory=mandatory), channel)
    c.send_frame(pheader.ContentHeader(0, len(body), properties or commands.Basic.Properties()),
                 channel)
    if body:
        c.send_frame(pbody.ContentBody(body), channel)


def outcome(names: Names, op: Callable[[], Any]) -> list:
    """Run `op`; its own summary if it completes, else where and how the broker closed."""
    try:
        return ["ok", op()]
    except BrokerClosed as closed:
        code, class_id, method_id, text = close_summary(closed.close)
        return [closed.level, code, class_id, method_id, names.normalise(text)]


def pika_connection(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def drain_until(conn: pika.BlockingConnection, done: Callable[[], bool],
                timeout_s: float = 5.0) -> None:
    """Pump pika's I/O until `done()` holds (AssertionError at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        conn.process_data_events(time_limit=0.02)
