"""aio-pika with the warren_vhost fixture, in an asyncio test (pytest-asyncio). The helpers
block, so an async test runs them in a thread: the broker never waits for the test's loop."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest


@pytest.mark.asyncio
async def test_publish_and_consume(warren_vhost):
    connection = await aio_pika.connect_robust(warren_vhost.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue("events", durable=True)
        for i in range(3):
            await channel.default_exchange.publish(
                aio_pika.Message(f"event-{i}".encode(),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="events")
        await asyncio.to_thread(warren_vhost.wait_for_messages, "events", 3)

        received = []
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    received.append(message.body)
                if len(received) == 3:
                    break
    assert received == [b"event-0", b"event-1", b"event-2"]


@pytest.mark.asyncio
async def test_topic_routing(warren_vhost):
    connection = await aio_pika.connect(warren_vhost.url)
    async with connection:
        channel = await connection.channel()
        logs = await channel.declare_exchange("logs", aio_pika.ExchangeType.TOPIC)
        errors = await channel.declare_queue("errors")
        await errors.bind(logs, routing_key="*.error")
        await logs.publish(aio_pika.Message(b"disk full"), routing_key="node1.error")
        await logs.publish(aio_pika.Message(b"all good"), routing_key="node1.info")
        message = await errors.get(timeout=5, fail=True)
        await message.ack()
        assert message.body == b"disk full"
        assert await errors.get(fail=False) is None
