"""Testing code that talks to a message broker, against a real WarrenMQ: the pytest plugin
(fixtures warren_broker, warren_url, warren_vhost; see plugin.py) and helpers that read
queues over AMQP (helpers.py), for WarrenMQ and RabbitMQ alike."""

from .client import AMQPClientError
from .helpers import (
    PeekedMessage,
    assert_dead_lettered,
    message_count,
    peek_messages,
    wait_for_messages,
)
from .vhosts import ExternalBroker, VhostUnavailable, VirtualHost

__all__ = [
    "AMQPClientError",
    "ExternalBroker",
    "PeekedMessage",
    "VhostUnavailable",
    "VirtualHost",
    "assert_dead_lettered",
    "message_count",
    "peek_messages",
    "wait_for_messages",
]
