"""kombu (py-amqp transport) with the warren_vhost fixture."""

from __future__ import annotations

from kombu import Connection, Exchange, Queue


def test_simple_queue(warren_vhost):
    with Connection(warren_vhost.url) as connection:
        queue = connection.SimpleQueue("greetings")
        queue.put({"hello": "world"})
        message = queue.get(timeout=5)
        message.ack()
        assert message.payload == {"hello": "world"}
        queue.close()


def test_producer_and_consumer(warren_vhost):
    exchange = Exchange("media", type="direct")
    video = Queue("video", exchange, routing_key="video")
    received = []
    with Connection(warren_vhost.url) as connection:
        producer = connection.Producer()
        producer.publish({"name": "clip.mp4"}, exchange=exchange, routing_key="video",
                         declare=[video], serializer="json")
        warren_vhost.wait_for_messages("video", 1)

        def on_message(body, message):
            received.append(body)
            message.ack()

        with connection.Consumer(video, callbacks=[on_message]):
            connection.drain_events(timeout=5)
    assert received == [{"name": "clip.mp4"}]
