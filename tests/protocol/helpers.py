# Helpers the protocol tests share: capturing the reply code and text with which the broker
# closes a channel or a connection (pika and aio-pika), unique names cleaned up after a test,
# the shared-queue admin connection, and deadline-bound waits that keep a client's callbacks
# flowing. The fixtures built on them live in conftest.py.

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq.channel
import aiormq.connection
import aiormq.exceptions
import pika
import pika.exceptions

from tests.conftest import unique
from tests.support.node import wait_for

TIMEOUT_S = 5.0

CODE_NAMES = {
    312: "NO_ROUTE", 403: "ACCESS_REFUSED", 404: "NOT_FOUND", 405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED", 503: "COMMAND_INVALID",
}
AIO_CHANNEL_CODES = {cls: code for code, cls in aiormq.channel.EXCEPTION_MAPPING.items()}
AIO_CONNECTION_CODES = {cls: code for code, cls in aiormq.connection.EXCEPTION_MAPPING.items()}

Reply = tuple[str, int, str]  # (level: "channel" | "connection", reply_code, reply_text)


def pika_reply(fn: Callable[[], Any]) -> Reply:
    """Run `fn`, which must make the broker close the channel or the connection."""
    try:
        fn()
    except pika.exceptions.ChannelClosedByBroker as e:
        return "channel", e.reply_code, e.reply_text
    except pika.exceptions.ConnectionClosedByBroker as e:
        return "connection", e.reply_code, e.reply_text
    raise AssertionError("the broker did not close the channel or the connection")


async def aio_reply(aw: Awaitable[Any]) -> Reply:
    try:
        await aw
    except aiormq.exceptions.ChannelClosed as e:
        code = AIO_CHANNEL_CODES.get(type(e))
        return ("channel", code, e.args[0]) if code else ("channel", e.args[0], e.args[1])
    except aiormq.exceptions.ConnectionClosed as e:
        code = AIO_CONNECTION_CODES.get(type(e))
        return ("connection", code, e.args[0]) if code else ("connection", e.args[0], e.args[1])
    raise AssertionError("the broker did not close the channel or the connection")


def assert_reply(reply: Reply, level: str, code: int, *mentions: str) -> None:
    got_level, got_code, text = reply
    assert (got_level, got_code) == (level, code), reply
    assert text.startswith(f"{CODE_NAMES[code]} - "), reply
    for word in mentions:
        assert word in text, reply


def pika_alive(conn: pika.BlockingConnection) -> None:
    """A channel error must leave the connection usable."""
    assert conn.is_open
    conn.channel().exchange_declare("amq.direct", passive=True)


class Names:
    """Unique names for one test; whatever they name is deleted at teardown."""

    def __init__(self) -> None:
        self.exchanges: list[str] = []
        self.queues: list[str] = []

    def exchange(self, prefix: str = "x") -> str:
        self.exchanges.append(unique(prefix))
        return self.exchanges[-1]

    def queue(self, prefix: str = "q") -> str:
        self.queues.append(unique(prefix))
        return self.queues[-1]

    def delete_all(self, url: str) -> None:
        if not self.queues and not self.exchanges:
            return  # most tests name nothing: spare them a connection
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            for q in self.queues:
                ch.queue_delete(q)
            for x in self.exchanges:
                ch.exchange_delete(x)


class Admin:
    """A connection of its own that declares shared queues, counts them and deletes them.

    Counting through queue.declare passive on another connection sees what the queue itself
    holds, so a test can wait for "the queue has n ready" without sleeping.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.prefix = prefix
        self.declared: list[str] = []

    def queue(self, messages: int = 0) -> str:
        name = unique(self.prefix)
        channel = self.connection.channel()
        channel.queue_declare(name)
        for i in range(messages):
            channel.basic_publish("", name, f"m{i}".encode())
        channel.close()
        self.declared.append(name)
        if messages:
            # publishes are async: wait until the queue holds them all
            wait_for(lambda: self.ready(name) == messages, TIMEOUT_S, what="messages")
        return name

    def ready(self, name: str) -> int:
        channel = self.connection.channel()
        count = channel.queue_declare(name, passive=True).method.message_count
        channel.close()
        return count

    def consumers(self, name: str) -> int:
        channel = self.connection.channel()
        count = channel.queue_declare(name, passive=True).method.consumer_count
        channel.close()
        return count

    def drain(self, name: str) -> list[tuple[bytes, bool]]:
        """Every ready message as (body, redelivered), in queue order, auto-acked."""
        channel = self.connection.channel()
        out = []
        while True:
            method, _, body = channel.basic_get(name, auto_ack=True)
            if method is None:
                break
            out.append((body, method.redelivered))
        channel.close()
        return out

    def close(self) -> None:
        channel = self.connection.channel()
        for name in self.declared:
            channel.queue_delete(name)
        self.connection.close()


def pump(connection: pika.BlockingConnection, predicate: Callable[[], object],
         timeout_s: float = TIMEOUT_S, what: str = "condition") -> None:
    """Dispatch pika callbacks until `predicate` holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        connection.process_data_events(time_limit=0.02)


async def until(predicate: Callable[[], object], timeout_s: float = TIMEOUT_S,
                what: str = "condition") -> None:
    """Let the event loop run (and aio-pika deliver) until `predicate` holds, with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
