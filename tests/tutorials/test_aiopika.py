"""The six RabbitMQ tutorials with aio-pika, each run as one test.

Every program of a tutorial (producer, workers, subscribers, RPC server and client)
keeps its own connection, as the separate scripts do; they all run as tasks and
callbacks on the test's event loop. Fixed names get a unique suffix; every wait is
bounded by `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aio_pika
import aiormq
import pytest
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

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


async def queue_state(connection: AbstractConnection, name: str) -> tuple[int, int] | int:
    """(message_count, consumer_count) from a passive declare, or the reply code that
    closed the channel instead (404 once the queue is gone)."""
    try:
        async with connection.channel() as channel:
            queue = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 404
    except aiormq.exceptions.ChannelLockedResource:
        return 405
    result = queue.declaration_result
    return result.message_count, result.consumer_count


async def wait_state(connection: AbstractConnection, name: str,
                     expected: tuple[int, int] | int) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while (state := await queue_state(connection, name)) != expected:
            await asyncio.sleep(0.01)
    assert state == expected


# -- 1. "Hello World!" ------------------------------------------------------------------


async def test_hello_world(broker: Node, entities: Entities) -> None:
    queue_name = entities.queue("hello")
    received = Inbox()

    async def on_message(message: AbstractIncomingMessage) -> None:
        received.put(message.body)

    async with (await aio_pika.connect(broker.url()) as receiver,
                await aio_pika.connect(broker.url()) as sender):
        receive_channel = await receiver.channel()
        queue = await receive_channel.declare_queue(queue_name)
        await queue.consume(on_message, no_ack=True)

        channel = await sender.channel()
        await channel.declare_queue(queue_name)
        await channel.default_exchange.publish(Message(b"Hello World!"), routing_key=queue_name)
        assert await received.async_wait_len(1) == [b"Hello World!"]
        await receiver.close()
        await wait_state(sender, queue_name, (0, 0))


# -- 2. Work queues ----------------------------------------------------------------------


@asynccontextmanager
async def worker(url: str, queue_name: str, on_message) -> AsyncIterator[AbstractConnection]:
    """worker.py: prefetch_count=1 on a durable queue, acks when the task is done."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.consume(on_message)
        yield connection


async def new_task(channel: AbstractChannel, queue_name: str, text: str) -> None:
    message = Message(text.encode(), delivery_mode=DeliveryMode.PERSISTENT)
    await channel.default_exchange.publish(message, routing_key=queue_name)


async def test_work_queues_fair_dispatch(broker: Node, entities: Entities) -> None:
    """With prefetch_count=1 a worker busy on an unacked task gets nothing more: the
    other worker does every quick task meanwhile."""
    queue_name = entities.queue("task_queue")
    done = Inbox()  # (worker, body, delivery_mode, redelivered), at delivery
    release = asyncio.Event()

    def on_message_of(name: str):
        async def on_message(message: AbstractIncomingMessage) -> None:
            async with message.process():
                done.put((name, message.body.decode(), message.delivery_mode,
                          message.redelivered))
                # worker.py sleeps a second per dot; here a dotted task lasts until the
                # test releases it, so "busy" is a state the test controls.
                if message.body.count(b"."):
                    await asyncio.wait_for(release.wait(), DEADLINE_S)

        return on_message

    quick = [f"Quick task {i}" for i in range(6)]
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(worker(broker.url(), queue_name, on_message_of("w1")))
        await stack.enter_async_context(worker(broker.url(), queue_name, on_message_of("w2")))
        stack.callback(release.set)  # runs first: a stuck worker must not block its close
        producer = await stack.enter_async_context(await aio_pika.connect(broker.url()))
        channel = await producer.channel()
        await channel.declare_queue(queue_name, durable=True)
        await wait_state(producer, queue_name, (0, 2))

        await new_task(channel, queue_name, "Busy task.....")
        busy_worker = (await done.async_wait_len(1))[0][0]
        for text in quick:
            await new_task(channel, queue_name, text)
        deliveries = await done.async_wait_len(1 + len(quick))
        assert sorted(d[1] for d in deliveries[1:]) == sorted(quick)
        assert {d[0] for d in deliveries[1:]} == {"w1", "w2"} - {busy_worker}
        release.set()
        assert all(d[2] == DeliveryMode.PERSISTENT and d[3] is False for d in deliveries)
        # The queue is durable: redeclaring it transient is refused.
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as refused:
            async with producer.channel() as other:
                await other.declare_queue(queue_name, durable=False)
        assert str(refused.value.args[0]).startswith("PRECONDITION_FAILED")
        await wait_state(producer, queue_name, (0, 2))
    assert entities.counts(queue_name) == (0, 0)
    assert len(done.items) == 1 + len(quick)


async def test_work_queues_unacked_task_redelivered_when_worker_dies(
    broker: Node, entities: Entities
) -> None:
    """A worker that dies before acking loses no task: it goes to another worker."""
    queue_name = entities.queue("task_queue")
    got = Inbox()  # (worker, body, redelivered)

    async def dying(message: AbstractIncomingMessage) -> None:
        got.put(("dying", message.body.decode(), message.redelivered))

    async def healthy(message: AbstractIncomingMessage) -> None:
        async with message.process():
            got.put(("healthy", message.body.decode(), message.redelivered))

    async with await aio_pika.connect(broker.url()) as producer:
        async with worker(broker.url(), queue_name, dying):
            channel = await producer.channel()
            await new_task(channel, queue_name, "Hard task...")
            assert await got.async_wait_len(1) == [("dying", "Hard task...", False)]
        # The dying worker's connection is closed: its unacked task is back in the queue.
        await wait_state(producer, queue_name, (1, 0))
        async with worker(broker.url(), queue_name, healthy):
            assert (await got.async_wait_len(2))[1] == ("healthy", "Hard task...", True)
            await wait_state(producer, queue_name, (0, 1))
        await wait_state(producer, queue_name, (0, 0))


# -- 3, 4, 5. Publish/subscribe, routing, topics ----------------------------------------


@asynccontextmanager
async def subscriber(url: str, exchange_name: str, exchange_type: ExchangeType,
                     binding_keys: list[str], inbox: Inbox) -> AsyncIterator[str]:
    """receive_logs*.py: an exclusive server-named queue bound once per binding key."""

    async def on_message(message: AbstractIncomingMessage) -> None:
        async with message.process():
            inbox.put((message.routing_key, message.body.decode()))

    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        exchange = await channel.declare_exchange(exchange_name, exchange_type)
        queue = await channel.declare_queue(exclusive=True)
        for binding_key in binding_keys:
            await queue.bind(exchange, routing_key=binding_key)
        await queue.consume(on_message)
        yield queue.name


async def test_publish_subscribe(broker: Node, entities: Entities) -> None:
    exchange_name = entities.exchange("logs")
    inboxes = [Inbox(), Inbox()]
    logs = [f"info: Hello World! {i}" for i in range(5)]
    async with await aio_pika.connect(broker.url()) as connection:
        channel = await connection.channel()
        logs_exchange = await channel.declare_exchange(exchange_name, ExchangeType.FANOUT)
        # No queue is bound yet: the fanout exchange drops this one.
        await logs_exchange.publish(Message(b"lost: nobody listens"), routing_key="info")
        async with AsyncExitStack() as stack:
            queue_names = [
                await stack.enter_async_context(
                    subscriber(broker.url(), exchange_name, ExchangeType.FANOUT, [""], inbox))
                for inbox in inboxes
            ]
            for text in logs:
                await logs_exchange.publish(Message(text.encode()), routing_key="info")
            for inbox in inboxes:
                received = await inbox.async_wait_for(lambda items: len(items) >= len(logs))
                assert received == [("info", text) for text in logs]
        assert all(name.startswith("amq.gen-") for name in queue_names)
        assert queue_names[0] != queue_names[1]
        # Exclusive queues go away with the connection that declared them.
        for name in queue_names:
            await wait_state(connection, name, 404)
        await logs_exchange.delete()


async def run_subscribers(broker: Node, exchange_name: str, exchange_type: ExchangeType,
                          bindings: dict[str, list[str]],
                          routes: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Start one subscriber per entry of `bindings`, publish `routes` as
    (routing_key, body), and return what each received once the last one reached it."""
    inboxes = {name: Inbox() for name in bindings}
    async with AsyncExitStack() as stack:
        connection = await stack.enter_async_context(await aio_pika.connect(broker.url()))
        channel = await connection.channel()
        exchange: AbstractExchange = await channel.declare_exchange(exchange_name, exchange_type)
        for name, keys in bindings.items():
            await stack.enter_async_context(
                subscriber(broker.url(), exchange_name, exchange_type, keys, inboxes[name]))
        for routing_key, body in routes:
            await exchange.publish(Message(body.encode()), routing_key=routing_key)
        return {
            name: await inbox.async_wait_for(lambda items: bool(items)
                                             and items[-1] == routes[-1],
                                             what=f"{name} to receive {routes[-1]!r}")
            for name, inbox in inboxes.items()
        }


async def test_routing(broker: Node, entities: Entities) -> None:
    exchange_name = entities.exchange("direct_logs")
    received = await run_subscribers(broker, exchange_name, ExchangeType.DIRECT,
                                     ROUTING_BINDINGS, ROUTING_LOGS)
    for name in ROUTING_BINDINGS:
        assert received[name] == routing_expected(name), name


async def test_topics(broker: Node, entities: Entities) -> None:
    exchange_name = entities.exchange("topic_logs")
    routes = [(key, key) for key, _ in TOPIC_ROUTES]
    received = await run_subscribers(broker, exchange_name, ExchangeType.TOPIC,
                                     TOPIC_BINDINGS, routes)
    for name in TOPIC_BINDINGS:
        assert received[name] == [(key, key) for key in topic_expected(name)], name


# -- 6. RPC ------------------------------------------------------------------------------


async def rpc_server(connection: AbstractConnection, rpc_queue: str,
                     ready: asyncio.Event) -> None:
    channel = await connection.channel()
    exchange = channel.default_exchange
    queue = await channel.declare_queue(rpc_queue)
    async with queue.iterator() as qiterator:
        ready.set()
        async for message in qiterator:
            async with message.process(requeue=False):
                assert message.reply_to is not None
                n = int(message.body.decode())
                response = str(fib(n)).encode()
                await exchange.publish(
                    Message(body=response, correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                )


class FibonacciRpcClient:
    def __init__(self, connection: AbstractConnection, rpc_queue: str) -> None:
        self.connection = connection
        self.rpc_queue = rpc_queue
        self.futures: dict[str, asyncio.Future[bytes]] = {}
        self.ignored: list[tuple[str | None, bytes]] = []

    async def connect(self) -> FibonacciRpcClient:
        self.channel = await self.connection.channel()
        self.callback_queue = await self.channel.declare_queue(exclusive=True)
        await self.callback_queue.consume(self.on_response, no_ack=True)
        return self

    async def on_response(self, message: AbstractIncomingMessage) -> None:
        future = self.futures.pop(message.correlation_id or "", None)
        if future is None:  # not a reply to any of our calls
            self.ignored.append((message.correlation_id, message.body))
            return
        future.set_result(message.body)

    async def call(self, n: int) -> int:
        correlation_id = str(uuid.uuid4())
        future = asyncio.get_running_loop().create_future()
        self.futures[correlation_id] = future
        await self.channel.default_exchange.publish(
            Message(str(n).encode(), content_type="text/plain",
                    correlation_id=correlation_id, reply_to=self.callback_queue.name),
            routing_key=self.rpc_queue,
        )
        return int(await future)


async def test_rpc(broker: Node, entities: Entities) -> None:
    rpc_queue = entities.queue("rpc_queue")
    numbers = (0, 1, 2, 10, 25)
    async with AsyncExitStack() as stack:
        server_connection = await stack.enter_async_context(await aio_pika.connect(broker.url()))
        client_connection = await stack.enter_async_context(await aio_pika.connect(broker.url()))
        ready = asyncio.Event()
        server = asyncio.create_task(rpc_server(server_connection, rpc_queue, ready))
        stack.callback(server.cancel)
        async with asyncio.timeout(DEADLINE_S):
            await ready.wait()
        fibonacci_rpc = await FibonacciRpcClient(client_connection, rpc_queue).connect()
        # A reply that is not ours, already waiting in the callback queue (a confirmed
        # publish is enqueued): the client must skip it.
        async with client_connection.channel() as other:
            await other.default_exchange.publish(
                Message(b"-1", correlation_id="not-mine"),
                routing_key=fibonacci_rpc.callback_queue.name)
        async with asyncio.timeout(DEADLINE_S):
            # Concurrent calls: each answer is matched to its call by correlation_id.
            results = await asyncio.gather(*(fibonacci_rpc.call(n) for n in numbers))
        assert dict(zip(numbers, results, strict=True)) == {n: fib(n) for n in numbers}
        assert results == [0, 1, 1, 55, 75025]
        assert fibonacci_rpc.ignored == [("not-mine", b"-1")]
        assert not fibonacci_rpc.futures
        callback_queue = fibonacci_rpc.callback_queue.name
        await wait_state(server_connection, rpc_queue, (0, 1))
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
        await client_connection.close()
        await wait_state(server_connection, callback_queue, 404)
