"""The six RabbitMQ tutorials with kombu over its py-amqp transport, each run as one test.

kombu has no threads of its own: each tutorial program gets its own Connection, and
the test drives them all from one thread with `drain_events(timeout=...)` under a
deadline. Tutorial 6 follows kombu's own rpc-tut6 example, whose server is a
ConsumerProducerMixin worker: that one runs in a thread, stopped with `should_stop`.
kombu's own hello example (SimpleQueue) is here too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Consumer, Exchange, Producer, Queue, binding
from kombu.message import Message
from kombu.mixins import ConsumerProducerMixin
from kombu.utils.uuid import uuid

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


def drain_until(connections: list[Connection], predicate: Callable[[], bool],
                what: str = "messages", timeout_s: float = DEADLINE_S) -> None:
    """Serve the consumers of every connection in turn until `predicate()` holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        for connection in connections:
            try:
                connection.drain_events(timeout=0.01)
            except TimeoutError:  # socket.timeout: nothing arrived this turn
                pass


@contextmanager
def connections(broker: Node, n: int) -> Iterator[list[Connection]]:
    with ExitStack() as stack:
        yield [stack.enter_context(Connection(broker.url())) for _ in range(n)]


# -- 1. "Hello World!" ------------------------------------------------------------------


def test_hello_world(broker: Node, entities: Entities) -> None:
    hello = Queue(entities.queue("hello"))
    received = Inbox()

    def callback(body: Any, message: Message) -> None:
        received.put(body)

    with connections(broker, 2) as (receiver, sender):
        with Consumer(receiver, queues=[hello], callbacks=[callback], no_ack=True):
            with Producer(sender) as producer:
                producer.publish("Hello World!", exchange="", routing_key=hello.name,
                                 declare=[hello])
            drain_until([receiver], lambda: bool(received.items))
        assert received.items == ["Hello World!"]
    assert entities.counts(hello.name) == (0, 0)


def test_hello_simple_queue(broker: Node, entities: Entities) -> None:
    """kombu's own hello_publisher.py / hello_consumer.py, over a SimpleQueue."""
    name = entities.queue("simple_queue")
    entities.exchanges.append(name)  # a SimpleQueue routes through an exchange of its name
    with connections(broker, 2) as (publisher, consumer):
        simple_queue = publisher.SimpleQueue(name)
        simple_queue.put("hello world", serializer="json")
        simple_queue.close()

        simple_queue = consumer.SimpleQueue(name)
        message = simple_queue.get(block=True, timeout=DEADLINE_S)
        assert message.payload == "hello world"
        assert message.content_type == "application/json"
        message.ack()
        assert simple_queue.qsize() == 0
        simple_queue.close()
    assert entities.counts(name) == (0, 0)


# -- 2. Work queues ----------------------------------------------------------------------


def task_queue(name: str, durable: bool = True) -> Queue:
    return Queue(name, durable=durable)


def test_work_queues_fair_dispatch(broker: Node, entities: Entities) -> None:
    """With prefetch_count=1 a worker busy on an unacked task gets nothing more: the
    other worker does every quick task meanwhile."""
    tasks = task_queue(entities.queue("task_queue"))
    done = Inbox()  # (worker, body, delivery_mode, redelivered), at delivery
    busy: list[Message] = []

    def worker_callback(name: str):
        def process_task(body: str, message: Message) -> None:
            done.put((name, body, message.properties["delivery_mode"],
                      message.delivery_info["redelivered"]))
            # The tutorial's worker sleeps a second per dot; here a dotted task stays
            # unacked until the test finishes it, so "busy" is a state the test controls.
            if body.count("."):
                busy.append(message)
            else:
                message.ack()

        return process_task

    quick = [f"Quick task {i}" for i in range(6)]
    with connections(broker, 3) as (w1, w2, client):
        workers = [w1, w2]
        with (Consumer(w1, queues=[tasks], callbacks=[worker_callback("w1")], prefetch_count=1),
              Consumer(w2, queues=[tasks], callbacks=[worker_callback("w2")], prefetch_count=1),
              Producer(client) as producer):
            entities.wait_counts(tasks.name, messages=0, consumers=2)

            def new_task(text: str) -> None:
                producer.publish(text, exchange="", routing_key=tasks.name, declare=[tasks],
                                 delivery_mode="persistent")

            new_task("Busy task.....")
            drain_until(workers, lambda: bool(busy), "the busy task")
            busy_worker = done.items[0][0]
            for text in quick:
                new_task(text)
            drain_until(workers, lambda: len(done.items) >= 1 + len(quick), "quick tasks")
            deliveries = done.items
            assert sorted(d[1] for d in deliveries[1:]) == sorted(quick)
            assert {d[0] for d in deliveries[1:]} == {"w1", "w2"} - {busy_worker}
            assert all(d[2] == 2 and d[3] is False for d in deliveries)
            busy.pop().ack()
            entities.wait_counts(tasks.name, messages=0, consumers=2)
        # The queue is durable: redeclaring it transient is refused.
        with pytest.raises(PreconditionFailed) as refused:
            task_queue(tasks.name, durable=False)(client.channel()).declare()
        assert refused.value.reply_code == 406
    assert entities.counts(tasks.name) == (0, 0)
    assert len(done.items) == 1 + len(quick)


def test_work_queues_unacked_task_redelivered_when_worker_dies(
    broker: Node, entities: Entities
) -> None:
    """A worker that dies before acking loses no task: it goes to another worker."""
    tasks = task_queue(entities.queue("task_queue"))
    got = Inbox()  # (worker, body, redelivered)

    def record(name: str, ack: bool):
        def process_task(body: str, message: Message) -> None:
            got.put((name, body, message.delivery_info["redelivered"]))
            if ack:
                message.ack()

        return process_task

    with Connection(broker.url()) as client, Producer(client) as producer:
        with Connection(broker.url()) as dying:
            with Consumer(dying, queues=[tasks], callbacks=[record("dying", False)],
                          prefetch_count=1):
                producer.publish("Hard task...", exchange="", routing_key=tasks.name,
                                 declare=[tasks], delivery_mode="persistent")
                drain_until([dying], lambda: bool(got.items))
        assert got.items == [("dying", "Hard task...", False)]
        # The dying worker's connection is closed: its unacked task is back in the queue.
        entities.wait_counts(tasks.name, messages=1, consumers=0)
        with Connection(broker.url()) as healthy:
            with Consumer(healthy, queues=[tasks], callbacks=[record("healthy", True)],
                          prefetch_count=1):
                drain_until([healthy], lambda: len(got.items) >= 2)
                assert got.items[1] == ("healthy", "Hard task...", True)
                entities.wait_counts(tasks.name, messages=0, consumers=1)
    assert entities.counts(tasks.name) == (0, 0)


# -- 3, 4, 5. Publish/subscribe, routing, topics ----------------------------------------


def subscriber(connection: Connection, exchange: Exchange, binding_keys: list[str],
               inbox: Inbox) -> Consumer:
    """receive_logs*.py: an exclusive server-named queue bound once per binding key."""
    queue = Queue("", exclusive=True,
                  bindings=[binding(exchange, routing_key=key) for key in binding_keys])

    def callback(body: str, message: Message) -> None:
        inbox.put((message.delivery_info["routing_key"], body))

    return Consumer(connection, queues=[queue], callbacks=[callback], no_ack=True)


def test_publish_subscribe(broker: Node, entities: Entities) -> None:
    logs = Exchange(entities.exchange("logs"), type="fanout", durable=False)
    inboxes = [Inbox(), Inbox()]
    messages = [f"info: Hello World! {i}" for i in range(5)]
    with connections(broker, 3) as (emitter, *receivers):
        producer = Producer(emitter, exchange=logs)
        # No queue is bound yet: the fanout exchange drops this one.
        producer.publish("lost: nobody listens", routing_key="info", declare=[logs])
        with (subscriber(receivers[0], logs, [""], inboxes[0]) as s1,
              subscriber(receivers[1], logs, [""], inboxes[1]) as s2):
            queue_names = [s1.queues[0].name, s2.queues[0].name]
            for text in messages:
                producer.publish(text, routing_key="info")
            drain_until(receivers, lambda: all(len(i.items) >= len(messages) for i in inboxes))
            for inbox in inboxes:
                assert inbox.items == [("info", text) for text in messages]
        for receiver in receivers:
            receiver.release()
        assert all(name.startswith("amq.gen-") for name in queue_names)
        assert queue_names[0] != queue_names[1]
        # Exclusive queues go away with the connection that declared them.
        for name in queue_names:
            entities.wait_gone(name)


def run_subscribers(broker: Node, exchange: Exchange, bindings: dict[str, list[str]],
                    routes: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Start one subscriber per entry of `bindings`, publish `routes` as
    (routing_key, body), and return what each received once the last one reached it."""
    inboxes = {name: Inbox() for name in bindings}
    with connections(broker, 1 + len(bindings)) as (emitter, *receivers), ExitStack() as stack:
        for receiver, (name, keys) in zip(receivers, bindings.items(), strict=True):
            stack.enter_context(subscriber(receiver, exchange, keys, inboxes[name]))
        with Producer(emitter, exchange=exchange) as producer:
            for routing_key, body in routes:
                producer.publish(body, routing_key=routing_key, declare=[exchange])
        drain_until(receivers, lambda: all(i.items and i.items[-1] == routes[-1]
                                           for i in inboxes.values()),
                    f"every subscriber to receive {routes[-1]!r}")
        return {name: inbox.items for name, inbox in inboxes.items()}


def test_routing(broker: Node, entities: Entities) -> None:
    direct_logs = Exchange(entities.exchange("direct_logs"), type="direct", durable=False)
    received = run_subscribers(broker, direct_logs, ROUTING_BINDINGS, ROUTING_LOGS)
    for name in ROUTING_BINDINGS:
        assert received[name] == routing_expected(name), name


def test_topics(broker: Node, entities: Entities) -> None:
    topic_logs = Exchange(entities.exchange("topic_logs"), type="topic", durable=False)
    routes = [(key, key) for key, _ in TOPIC_ROUTES]
    received = run_subscribers(broker, topic_logs, TOPIC_BINDINGS, routes)
    for name in TOPIC_BINDINGS:
        assert received[name] == [(key, key) for key in topic_expected(name)], name


# -- 6. RPC (kombu's examples/rpc-tut6) -------------------------------------------------


class Worker(ConsumerProducerMixin):
    connect_max_retries = 1

    def __init__(self, connection: Connection, rpc_queue: Queue) -> None:
        self.connection = connection
        self.rpc_queue = rpc_queue

    def get_consumers(self, Consumer, channel):  # noqa: N803 (the mixin's signature)
        return [Consumer(
            queues=[self.rpc_queue],
            on_message=self.on_request,
            accept={"application/json"},
            prefetch_count=1,
        )]

    def on_request(self, message: Message) -> None:
        n = message.payload["n"]
        result = fib(n)
        self.producer.publish(
            {"result": result},
            exchange="", routing_key=message.properties["reply_to"],
            correlation_id=message.properties["correlation_id"],
            serializer="json",
            retry=True,
        )
        message.ack()


class FibonacciRpcClient:
    def __init__(self, connection: Connection, rpc_queue: Queue) -> None:
        self.connection = connection
        self.rpc_queue = rpc_queue
        self.callback_queue = Queue(uuid(), exclusive=True, auto_delete=True)
        self.ignored: list[tuple[str, Any]] = []

    def on_response(self, message: Message) -> None:
        if message.properties["correlation_id"] == self.correlation_id:
            self.response = message.payload["result"]
        else:
            self.ignored.append((message.properties["correlation_id"], message.payload))

    def call(self, n: int) -> int:
        self.response = None
        self.correlation_id = uuid()
        with Producer(self.connection) as producer:
            producer.publish(
                {"n": n},
                exchange="",
                routing_key=self.rpc_queue.name,
                declare=[self.callback_queue],
                reply_to=self.callback_queue.name,  # kombu 5 wants the name, not the Queue
                correlation_id=self.correlation_id,
            )
        with Consumer(self.connection, on_message=self.on_response,
                      queues=[self.callback_queue], no_ack=True):
            drain_until([self.connection], lambda: self.response is not None, f"fib({n})")
        return self.response


@contextmanager
def rpc_server(broker: Node, rpc_queue: Queue) -> Iterator[Worker]:
    worker = Worker(Connection(broker.url()), rpc_queue)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(safety_interval=0.05)
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.should_stop = True
        thread.join(DEADLINE_S)
        worker.connection.release()
        assert not thread.is_alive(), "RPC server did not stop"
    if errors:
        raise errors[0]


def test_rpc(broker: Node, entities: Entities) -> None:
    rpc_queue = Queue(entities.queue("rpc_queue"))
    numbers = (0, 1, 2, 10, 25)
    with rpc_server(broker, rpc_queue), Connection(broker.url()) as connection:
        entities.wait_counts(rpc_queue.name, messages=0, consumers=1)
        fibonacci_rpc = FibonacciRpcClient(connection, rpc_queue)
        # A reply that is not ours, already waiting in the callback queue (a confirmed
        # publish is enqueued): the client must skip it. The queue is declared first,
        # as call() would: being auto-delete, it is deleted when a call's consumer is
        # cancelled and declared afresh by the next call.
        fibonacci_rpc.callback_queue(connection.default_channel).declare()
        with Connection(broker.url(), transport_options={"confirm_publish": True}) as other:
            Producer(other).publish({"result": -1}, exchange="",
                                    routing_key=fibonacci_rpc.callback_queue.name,
                                    correlation_id="not-mine", serializer="json")
        results = [fibonacci_rpc.call(n) for n in numbers]
        assert fibonacci_rpc.ignored == [("not-mine", {"result": -1})]
        assert results == [0, 1, 1, 55, 75025]
        assert entities.counts(rpc_queue.name) == (0, 1)
    entities.wait_gone(fibonacci_rpc.callback_queue.name)
    assert entities.counts(rpc_queue.name) == (0, 0)
