"""Test helpers that read a broker's queues over AMQP: wait for a queue to fill, look at its
messages without consuming them, assert a message was dead-lettered.

Each takes the AMQP URL of the vhost (the `warren_url` or `warren_vhost` fixture) and works
against WarrenMQ and RabbitMQ alike. Counts are of messages *ready* for delivery (what
queue.declare reports): messages delivered to a consumer and not yet acknowledged are not
counted.

How `peek_messages` reads without consuming: it takes the messages with basic.get (manual
acknowledgement), then gives all of them back with one basic.nack(multiple, requeue) and
waits for the channel to close, so they are back in the queue when it returns. AMQP has no
true peek, and that shows in three ways:
  * every peeked message comes back with its `redelivered` flag set (the flag returned in
    PeekedMessage.redelivered is the one it had *before* the peek); quorum queues also count
    the return in `x-delivery-count`;
  * order is kept (RabbitMQ and WarrenMQ put requeued messages back in their original
    position), and per-message TTLs keep running;
  * a consumer attached to the queue while it peeks may be given messages in between, and
    the peeked ones are briefly unavailable to it: peek queues that nobody consumes from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .client import Address, AMQPClientError, Client

DEFAULT_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.02
NOT_FOUND = 404


@dataclass
class PeekedMessage:
    body: bytes
    exchange: str
    routing_key: str
    redelivered: bool  # as the broker had it before the peek
    properties: dict[str, Any] = field(default_factory=dict)  # set basic properties only

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.get("headers") or {}

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def x_death(self) -> list[dict[str, Any]]:
        """The `x-death` entries (newest first) the broker added when dead-lettering."""
        return list(self.headers.get("x-death") or [])


def message_count(url: str, queue: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Messages ready in `queue`; raises AMQPClientError (reply_code 404) if it does not exist."""
    with Client(Address.from_url(url), timeout_s) as client:
        return client.message_count(client.open_channel(), queue)


def wait_for_messages(url: str, queue: str, count: int, timeout_s: float = DEFAULT_TIMEOUT_S
                      ) -> None:
    """Wait until `queue` holds exactly `count` ready messages. A queue that does not exist
    yet is waited for too (the code under test may declare it later)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    seen: list[int | None] = [None]

    def probe(client: Client, channel: int) -> bool:
        seen[0] = client.message_count(channel, queue)
        return seen[0] == count

    def describe() -> str:
        now = "does not exist" if seen[0] is None else f"has {seen[0]}"
        return f"queue {queue!r} to hold {count} ready messages (it {now})"

    _poll(url, probe, timeout_s, describe)


def peek_messages(url: str, queue: str, limit: int | None = None,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> list[PeekedMessage]:
    """The first `limit` (default: all) messages ready in `queue`, in queue order, left in the
    queue (see the module's notes on what AMQP allows)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    with Client(Address.from_url(url), timeout_s) as client:
        channel = client.open_channel()
        messages: list[PeekedMessage] = []
        last_tag = 0
        try:
            while limit is None or len(messages) < limit:
                got = client.get(channel, queue)
                if got is None:
                    break
                last_tag = got.delivery_tag
                messages.append(PeekedMessage(got.body, got.exchange, got.routing_key,
                                              got.redelivered, _properties(got.properties)))
        finally:
            if last_tag and client.sock is not None:
                client.nack(channel, last_tag, multiple=True, requeue=True)
                # close-ok comes after the nack is handled: the messages are back on return
                client.close_channel(channel)
        return messages


def assert_dead_lettered(url: str, queue: str, *, from_queue: str | None = None,
                         reason: str | None = None, body: bytes | str | None = None,
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> PeekedMessage:
    """Wait until `queue` (a queue bound to the dead-letter exchange) holds a dead-lettered
    message, and return it (it stays in the queue). A message matches when one of its
    `x-death` entries names `from_queue` and `reason` (rejected, expired, maxlen,
    delivery_limit) where given, and its body equals `body` where given. Fails with
    AssertionError listing what the queue held."""
    want = body.encode() if isinstance(body, str) else body
    held: list[list[PeekedMessage]] = [[]]

    def matches(message: PeekedMessage) -> bool:
        if want is not None and message.body != want:
            return False
        return any((from_queue is None or entry.get("queue") == from_queue)
                   and (reason is None or entry.get("reason") == reason)
                   for entry in message.x_death)

    def probe(client: Client, channel: int) -> PeekedMessage | None:
        held[0] = peek_messages(url, queue, timeout_s=client.timeout_s)
        return next((m for m in held[0] if matches(m)), None)

    def describe() -> str:
        what = ", ".join(f"{k}={v!r}" for k, v in
                         (("from_queue", from_queue), ("reason", reason), ("body", want))
                         if v is not None) or "any"
        found = "\n".join(f"  body={m.body[:80]!r} x-death={_death_summary(m)}"
                          for m in held[0][:20]) or "  (no messages)"
        return f"a dead-lettered message ({what}) in queue {queue!r}; it held:\n{found}"

    try:
        return _poll(url, probe, timeout_s, describe)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def _death_summary(message: PeekedMessage) -> str:
    deaths = [{k: entry.get(k) for k in ("queue", "reason", "count")}
              for entry in message.x_death]
    return repr(deaths) if deaths else "none"


def _properties(props: Any) -> dict[str, Any]:
    names = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
             "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
             "message_type", "user_id", "app_id")
    out = {name: getattr(props, name, None) for name in names}
    return {k: v for k, v in out.items() if v is not None}


def _poll(url: str, probe: Callable[[Client, int], Any], timeout_s: float,
          describe: Callable[[], str]) -> Any:
    """Call `probe` on one connection until it returns something truthy or the deadline
    passes; a missing queue (404, which closes the channel) is retried on a new channel."""
    deadline = time.monotonic() + timeout_s
    with Client(Address.from_url(url), timeout_s) as client:
        channel = client.open_channel()
        while True:
            try:
                result = probe(client, channel)
                if result:
                    return result
            except AMQPClientError as e:
                if e.reply_code != NOT_FOUND or client.sock is None:
                    raise
                channel += 1  # the 404 closed that channel
                client.open_channel(channel)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {describe()}")
            time.sleep(POLL_INTERVAL_S)
