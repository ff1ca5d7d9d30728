"""The `entities` fixture: unique names for what a tutorial declares, deleted after the
test whatever its outcome, and a side connection to inspect queues (message and
consumer counts, existence) the way rabbitmqctl list_queues would."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from tests.conftest import unique
from tests.support.node import Node, wait_for
from tests.tutorials.helpers import DEADLINE_S


class Entities:
    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, prefix: str) -> str:
        """A unique queue name standing for the tutorial's fixed one; deleted at teardown."""
        name = unique(prefix)
        self.queues.append(name)
        return name

    def exchange(self, prefix: str) -> str:
        name = unique(prefix)
        self.exchanges.append(name)
        return name

    def _passive_declare(self, queue: str) -> tuple[int, int] | int:
        """(message_count, consumer_count), or the reply code that closed the channel."""
        with pika.BlockingConnection(pika.URLParameters(self.url)) as connection:
            try:
                ok = connection.channel().queue_declare(queue=queue, passive=True)
            except ChannelClosedByBroker as exc:
                return exc.reply_code
            return ok.method.message_count, ok.method.consumer_count

    def counts(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of an existing queue."""
        result = self._passive_declare(queue)
        assert isinstance(result, tuple), f"queue {queue!r}: passive declare got {result}"
        return result

    def wait_counts(self, queue: str, messages: int, consumers: int) -> None:
        wait_for(lambda: self._passive_declare(queue) == (messages, consumers), DEADLINE_S,
                 what=f"{queue!r} to have {messages} messages and {consumers} consumers")

    def wait_gone(self, queue: str) -> None:
        """Wait until `queue` no longer exists (404 NOT_FOUND on a passive declare)."""
        wait_for(lambda: self._passive_declare(queue) == 404, DEADLINE_S,
                 what=f"queue {queue!r} to be deleted")

    def delete_all(self) -> None:
        with pika.BlockingConnection(pika.URLParameters(self.url)) as connection:
            for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
                for name in names:
                    channel = connection.channel()
                    try:
                        if kind == "queue":
                            channel.queue_delete(queue=name)
                        else:
                            channel.exchange_delete(exchange=name)
                    except ChannelClosedByBroker as exc:
                        # Already gone is fine (RabbitMQ itself answers delete-ok then).
                        if exc.reply_code != 404:
                            raise
                        continue
                    channel.close()


@pytest.fixture
def entities(broker: Node) -> Iterator[Entities]:
    declared = Entities(broker.url())
    yield declared
    declared.delete_all()
