"""The six RabbitMQ tutorials with pika's BlockingConnection, each run as one test.

The tutorials' programs keep their shape: producers (send.py, new_task.py, emit_log*.py,
rpc_client.py) run in the test's thread; consumers (receive.py, worker.py,
receive_logs*.py, rpc_server.py) run in threads of their own, each with its own
connection, since a BlockingConnection belongs to one thread. Fixed names get a unique
suffix; every wait has a deadline.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

from tests.support.node import Node
from tests.tutorials.conftest import Entities
from tests.tutorials.helpers import (
    DEADLINE_S,
    ROUTING_BINDINGS,
    ROUTING_LOGS,
    TOPIC_BINDINGS,
    TOPIC_ROUTES,
    Inbox,
    fib,
    routing_expected,
    topic_expected,
)

Setup = Callable[[BlockingChannel], Any]


class ConsumerThread(threading.Thread):
    """One consumer program: its own connection, `setup(channel)`, then callbacks until
    stopped. Whatever `setup` returns (a server-named queue, say) is kept in `value`."""

    def __init__(self, url: str, setup: Setup) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.setup = setup
        self.value: Any = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            with pika.BlockingConnection(pika.URLParameters(self.url)) as connection:
                self.value = self.setup(connection.channel())
                self.ready.set()
                deadline = time.monotonic() + 4 * DEADLINE_S
                while not self.stopping.is_set() and time.monotonic() < deadline:
                    connection.process_data_events(time_limit=0.02)
        except BaseException as exc:  # re-raised in the test's thread by stop()
            self.error = exc
        finally:
            self.ready.set()

    def stop(self) -> None:
        self.stopping.set()
        self.join(DEADLINE_S)
        assert not self.is_alive(), "consumer thread did not stop"
        if self.error is not None:
            raise self.error


@contextmanager
def consuming(url: str, setup: Setup) -> Iterator[ConsumerThread]:
    thread = ConsumerThread(url, setup)
    thread.start()
    try:
        assert thread.ready.wait(DEADLINE_S), "consumer did not start"
        if thread.error is not None:
            raise thread.error
        yield thread
    finally:
        thread.stop()


def connect(broker: Node) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url()))


# -- 1. "Hello World!" ------------------------------------------------------------------


def test_hello_world(broker: Node, entities: Entities) -> None:
    queue = entities.queue("hello")
    received = Inbox()

    def receive(channel: BlockingChannel) -> None:
        channel.queue_declare(queue=queue)

        def callback(ch, method, properties, body: bytes) -> None:
            received.put(body)

        channel.basic_consume(queue=queue, on_message_callback=callback, auto_ack=True)

    with consuming(broker.url(), receive):
        with connect(broker) as connection:
            channel = connection.channel()
            channel.queue_declare(queue=queue)
            channel.basic_publish(exchange="", routing_key=queue, body="Hello World!")
        assert received.wait_len(1) == [b"Hello World!"]
    # auto_ack: the message is gone once delivered, nothing returns to the queue.
    assert entities.counts(queue) == (0, 0)


# -- 2. Work queues ----------------------------------------------------------------------


def persistent() -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def test_work_queues_fair_dispatch(broker: Node, entities: Entities) -> None:
    """With prefetch_count=1 a worker busy on an unacked task gets nothing more: the
    other worker does every quick task meanwhile."""
    queue = entities.queue("task_queue")
    done = Inbox()  # (worker, body, delivery_mode, redelivered), at delivery
    release = threading.Event()

    def worker(name: str) -> Setup:
        def setup(channel: BlockingChannel) -> None:
            channel.queue_declare(queue=queue, durable=True)

            def callback(ch, method, properties, body: bytes) -> None:
                done.put((name, body.decode(), properties.delivery_mode, method.redelivered))
                # worker.py sleeps a second per dot; here a dotted task lasts until the
                # test releases it, so "busy" is a state the test controls.
                if body.count(b"."):
                    release.wait(DEADLINE_S)
                ch.basic_ack(delivery_tag=method.delivery_tag)

            channel.basic_qos(prefetch_count=1)
            channel.basic_consume(queue=queue, on_message_callback=callback)

        return setup

    quick = [f"Quick task {i}" for i in range(6)]
    with ExitStack() as stack:
        stack.enter_context(consuming(broker.url(), worker("w1")))
        stack.enter_context(consuming(broker.url(), worker("w2")))
        stack.callback(release.set)  # runs first: a stuck worker must not block its stop
        entities.wait_counts(queue, messages=0, consumers=2)
        with connect(broker) as connection:
            channel = connection.channel()
            channel.queue_declare(queue=queue, durable=True)

            def new_task(message: str) -> None:
                channel.basic_publish(exchange="", routing_key=queue, body=message,
                                      properties=persistent())

            new_task("Busy task.....")
            busy_worker = done.wait_len(1)[0][0]
            for message in quick:
                new_task(message)
            deliveries = done.wait_len(1 + len(quick))
            assert sorted(d[1] for d in deliveries[1:]) == sorted(quick)
            assert {d[0] for d in deliveries[1:]} == {"w1", "w2"} - {busy_worker}
            release.set()
            assert all(d[2] == 2 and d[3] is False for d in deliveries)
            # The queue is durable: redeclaring it transient is refused.
            with pytest.raises(ChannelClosedByBroker) as refused:
                connection.channel().queue_declare(queue=queue, durable=False)
            assert refused.value.reply_code == 406
            assert refused.value.reply_text.startswith("PRECONDITION_FAILED")
        entities.wait_counts(queue, messages=0, consumers=2)
    # Every task was acked: none came back when the workers disconnected.
    assert entities.counts(queue) == (0, 0)
    assert len(done.items) == 1 + len(quick)


def test_work_queues_unacked_task_redelivered_when_worker_dies(
    broker: Node, entities: Entities
) -> None:
    """A worker that dies before acking loses no task: it goes to another worker."""
    queue = entities.queue("task_queue")
    got = Inbox()  # (worker, body, redelivered)

    def worker(name: str, ack: bool) -> Setup:
        def setup(channel: BlockingChannel) -> None:
            channel.queue_declare(queue=queue, durable=True)

            def callback(ch, method, properties, body: bytes) -> None:
                got.put((name, body.decode(), method.redelivered))
                if ack:
                    ch.basic_ack(delivery_tag=method.delivery_tag)

            channel.basic_qos(prefetch_count=1)
            channel.basic_consume(queue=queue, on_message_callback=callback)

        return setup

    with consuming(broker.url(), worker("dying", ack=False)):
        with connect(broker) as connection:
            channel = connection.channel()
            channel.queue_declare(queue=queue, durable=True)
            channel.basic_publish(exchange="", routing_key=queue, body="Hard task...",
                                  properties=persistent())
        assert got.wait_len(1) == [("dying", "Hard task...", False)]
    # The dying worker's connection is closed: its unacked task is back in the queue.
    entities.wait_counts(queue, messages=1, consumers=0)
    with consuming(broker.url(), worker("healthy", ack=True)):
        assert got.wait_len(2)[1] == ("healthy", "Hard task...", True)
        entities.wait_counts(queue, messages=0, consumers=1)
    assert entities.counts(queue) == (0, 0)


# -- 3, 4, 5. Publish/subscribe, routing, topics ----------------------------------------


def subscriber(exchange: str, exchange_type: str, binding_keys: list[str],
               inbox: Inbox) -> Setup:
    """receive_logs*.py: an exclusive server-named queue bound once per binding key."""

    def setup(channel: BlockingChannel) -> str:
        channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
        result = channel.queue_declare(queue="", exclusive=True)
        queue_name = result.method.queue
        for binding_key in binding_keys:
            channel.queue_bind(exchange=exchange, queue=queue_name, routing_key=binding_key)

        def callback(ch, method, properties, body: bytes) -> None:
            inbox.put((method.routing_key, body.decode()))

        channel.basic_consume(queue=queue_name, on_message_callback=callback, auto_ack=True)
        return queue_name

    return setup


def test_publish_subscribe(broker: Node, entities: Entities) -> None:
    exchange = entities.exchange("logs")
    inboxes = [Inbox(), Inbox()]
    logs = [f"info: Hello World! {i}" for i in range(5)]
    with connect(broker) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="fanout")
        # No queue is bound yet: the fanout exchange drops this one.
        channel.basic_publish(exchange=exchange, routing_key="", body="lost: nobody listens")
        with (consuming(broker.url(), subscriber(exchange, "fanout", [""], inboxes[0])) as s1,
              consuming(broker.url(), subscriber(exchange, "fanout", [""], inboxes[1])) as s2):
            queue_names = [s1.value, s2.value]
            for message in logs:
                channel.basic_publish(exchange=exchange, routing_key="", body=message)
            for inbox in inboxes:
                received = inbox.wait_for(lambda items: len(items) >= len(logs))
                assert received == [("", message) for message in logs]
        channel.exchange_delete(exchange=exchange)
    assert all(name.startswith("amq.gen-") for name in queue_names)
    assert queue_names[0] != queue_names[1]
    # Exclusive queues go away with the connection that declared them.
    for name in queue_names:
        entities.wait_gone(name)


def run_subscribers(broker: Node, exchange: str, exchange_type: str,
                    bindings: dict[str, list[str]],
                    emit: Callable[[BlockingChannel], None]) -> dict[str, list[Any]]:
    """Start one subscriber per entry of `bindings`, run `emit` on a producer channel,
    and return what each received once the last emitted message reached it."""
    inboxes = {name: Inbox() for name in bindings}
    threads = []
    with connect(broker) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
        try:
            for name, keys in bindings.items():
                thread = ConsumerThread(broker.url(),
                                        subscriber(exchange, exchange_type, keys, inboxes[name]))
                thread.start()
                threads.append(thread)
                assert thread.ready.wait(DEADLINE_S) and thread.error is None, thread.error
            last = emit(channel)
            return {name: inbox.wait_for(lambda items: bool(items) and items[-1] == last,
                                         what=f"{name} to receive {last!r}")
                    for name, inbox in inboxes.items()}
        finally:
            for thread in threads:
                thread.stop()


def test_routing(broker: Node, entities: Entities) -> None:
    exchange = entities.exchange("direct_logs")

    def emit_log_direct(channel: BlockingChannel) -> tuple[str, str]:
        for severity, message in ROUTING_LOGS:
            channel.basic_publish(exchange=exchange, routing_key=severity, body=message)
        return ROUTING_LOGS[-1]

    received = run_subscribers(broker, exchange, "direct", ROUTING_BINDINGS, emit_log_direct)
    for name in ROUTING_BINDINGS:
        assert received[name] == routing_expected(name), name


def test_topics(broker: Node, entities: Entities) -> None:
    exchange = entities.exchange("topic_logs")

    def emit_log_topic(channel: BlockingChannel) -> tuple[str, str]:
        for routing_key, _ in TOPIC_ROUTES:
            channel.basic_publish(exchange=exchange, routing_key=routing_key, body=routing_key)
        last = TOPIC_ROUTES[-1][0]
        return last, last

    received = run_subscribers(broker, exchange, "topic", TOPIC_BINDINGS, emit_log_topic)
    for name in TOPIC_BINDINGS:
        assert received[name] == [(key, key) for key in topic_expected(name)], name


# -- 6. RPC ------------------------------------------------------------------------------


def rpc_server(rpc_queue: str) -> Setup:
    def setup(channel: BlockingChannel) -> None:
        channel.queue_declare(queue=rpc_queue)

        def on_request(ch, method, props, body: bytes) -> None:
            n = int(body)
            response = fib(n)
            ch.basic_publish(exchange="", routing_key=props.reply_to,
                             properties=pika.BasicProperties(correlation_id=props.correlation_id),
                             body=str(response))
            ch.basic_ack(delivery_tag=method.delivery_tag)

        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(queue=rpc_queue, on_message_callback=on_request)

    return setup


class FibonacciRpcClient:
    def __init__(self, broker: Node, rpc_queue: str) -> None:
        self.rpc_queue = rpc_queue
        self.connection = connect(broker)
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(queue=self.callback_queue,
                                   on_message_callback=self.on_response, auto_ack=True)
        self.response: bytes | None = None
        self.corr_id: str | None = None
        self.ignored: list[tuple[str, bytes]] = []

    def on_response(self, ch, method, props, body: bytes) -> None:
        if self.corr_id == props.correlation_id:
            self.response = body
        else:
            self.ignored.append((props.correlation_id, body))

    def call(self, n: int) -> int:
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="", routing_key=self.rpc_queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue,
                                            correlation_id=self.corr_id),
            body=str(n))
        deadline = time.monotonic() + DEADLINE_S
        while self.response is None:
            assert time.monotonic() < deadline, f"no reply to fib({n})"
            self.connection.process_data_events(time_limit=0.05)
        return int(self.response)

    def close(self) -> None:
        self.connection.close()


def test_rpc(broker: Node, entities: Entities) -> None:
    rpc_queue = entities.queue("rpc_queue")
    with consuming(broker.url(), rpc_server(rpc_queue)):
        entities.wait_counts(rpc_queue, messages=0, consumers=1)
        fibonacci_rpc = FibonacciRpcClient(broker, rpc_queue)
        try:
            # A reply that is not ours, already waiting in the callback queue (a
            # confirmed publish is enqueued): the client must skip it.
            with connect(broker) as other:
                stray = other.channel()
                stray.confirm_delivery()
                stray.basic_publish(exchange="", routing_key=fibonacci_rpc.callback_queue,
                                    properties=pika.BasicProperties(correlation_id="not-mine"),
                                    body="-1")
            results = {n: fibonacci_rpc.call(n) for n in (0, 1, 2, 10, 25)}
            assert fibonacci_rpc.ignored == [("not-mine", b"-1")]
        finally:
            fibonacci_rpc.close()
    assert results == {0: 0, 1: 1, 2: 1, 10: 55, 25: 75025}
    assert entities.counts(rpc_queue) == (0, 0)
    entities.wait_gone(fibonacci_rpc.callback_queue)
