"""Fixtures of the feature tests: a pika connection to the session broker, a channel in
confirm mode on it, and queues of either type (`queue_type` runs a test once for classic
and once for quorum queues; `declare` makes a queue of that type)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pika
import pytest

from tests.conftest import unique

QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture
def conn(broker):
    c = pika.BlockingConnection(pika.URLParameters(broker.url()))
    yield c
    c.close()


@pytest.fixture
def ch(conn):
    channel = conn.channel()
    channel.confirm_delivery()
    return channel


@pytest.fixture(params=["classic", "quorum"])
def queue_type(request) -> str:
    return request.param


def declare_queue(ch, queue_type: str, name: str = "", arguments: dict | None = None) -> str:
    """A queue of `queue_type`: a classic one exclusive (it goes with its connection), a
    quorum one durable and named (quorum queues are never exclusive, transient or
    server-named); returns its name."""
    if queue_type == "classic":
        return ch.queue_declare(name, exclusive=True, arguments=arguments).method.queue
    name = name or unique("qq")
    ch.queue_declare(name, durable=True, arguments={**QUORUM, **(arguments or {})})
    return name


@pytest.fixture
def declare(broker, queue_type) -> Iterator[Callable[..., str]]:
    """declare(ch, name="", arguments=None) -> name, of the test's queue type; the quorum
    queues it made are deleted after the test (on a connection of their own, in case the
    test's was closed by the broker)."""
    made: list[str] = []

    def make(ch, name: str = "", arguments: dict | None = None) -> str:
        name = declare_queue(ch, queue_type, name, arguments)
        if queue_type == "quorum":
            made.append(name)
        return name

    yield make
    if made:
        c = pika.BlockingConnection(pika.URLParameters(broker.url()))
        cleanup = c.channel()
        for name in made:
            cleanup.queue_delete(name)
        c.close()


def pump(conn, predicate, timeout_s: float = 5.0) -> None:
    """Pump pika's I/O until `predicate()` holds (AssertionError at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        conn.process_data_events(time_limit=0.02)


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def get_all(ch, queue: str) -> list[tuple[bytes, dict]]:
    """Every message left in the queue (auto-acked): (body, headers)."""
    out = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((body, props.headers or {}))
