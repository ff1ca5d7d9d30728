"""pika with the warren_vhost fixture: publish with confirms, consume with manual acks, and
the isolation a fresh vhost per test gives."""

from __future__ import annotations

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker


def test_publish_confirm_and_get(warren_vhost):
    with pika.BlockingConnection(pika.URLParameters(warren_vhost.url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("orders", durable=True)
        channel.basic_publish("", "orders", b"order-1",
                              pika.BasicProperties(delivery_mode=2, content_type="text/plain"))
        warren_vhost.wait_for_messages("orders", 1)

        method, properties, body = channel.basic_get("orders")
        assert body == b"order-1"
        assert properties.content_type == "text/plain"
        channel.basic_ack(method.delivery_tag)
    assert warren_vhost.message_count("orders") == 0


def test_each_test_has_its_own_vhost(warren_vhost):
    # the previous test declared "orders" in a vhost of its own, deleted since
    with pika.BlockingConnection(pika.URLParameters(warren_vhost.url)) as connection:
        with pytest.raises(ChannelClosedByBroker) as closed:
            connection.channel().queue_declare("orders", passive=True)
    assert closed.value.reply_code == 404


def test_consumer_with_prefetch(warren_vhost):
    with pika.BlockingConnection(pika.URLParameters(warren_vhost.url)) as connection:
        channel = connection.channel()
        channel.queue_declare("tasks")
        for i in range(3):
            channel.basic_publish("", "tasks", f"task-{i}".encode())
        channel.basic_qos(prefetch_count=1)
        received = []
        for method, _properties, body in channel.consume("tasks", inactivity_timeout=5):
            assert method is not None, "no delivery within 5 s"
            received.append(body)
            channel.basic_ack(method.delivery_tag)
            if len(received) == 3:
                break
        channel.cancel()
    assert received == [b"task-0", b"task-1", b"task-2"]
