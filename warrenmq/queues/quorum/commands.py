"""The quorum queue's command vocabulary: `Meta`, the `make_*` helpers and the reply and
effect shapes.

A command is a plain tuple whose first item names it; it travels through the Raft log as
msgpack, which turns tuples into lists, so `apply` accepts either. The helpers validate their
arguments (a bad value raises `ValueError` here, at the edge, never inside `apply`, where every
replica must reach the same answer). Nothing here imports the rest of the broker.

Replies are tuples led by a word (`("enqueued", seq)`, `("purged", n)`, `("error", code,
text)`); effects are tuples led by a word too:

- `("deliver", consumer_id, [(msg_id, ref, redelivered, delivery_count), ...])`
- `("dead_letter", reason, [ref, ...])` with reason `rejected`, `expired`, `maxlen` or
  `delivery_limit`: gone from the queue, to be dead-lettered at most once
- `("dead_letter_pending", reason, [ref, ...])` under the at-least-once strategy: the
  messages stay in the queue (held, neither ready nor checked out) until a
  `dead_letter_settle` says their dead-letter targets confirmed them; the same messages are
  named again, on a tick, while they are held (to be forwarded again by a new leader, or
  once a missing target exists)
- `("consumer_active", consumer_id, active)` when single-active-consumer changes hands
- `("consumer_cancelled", consumer_id, reason)` when the queue ends a consumer (`timeout`)
- `("queue_expired",)`: unused for longer than the queue's expiry (x-expires): delete it
- `("release_cursor", raft_index)`: no log entry below `raft_index` is needed any more.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Command = tuple[Any, ...] | list[Any]
Effect = tuple[Any, ...]
Reply = tuple[Any, ...]

OVERFLOWS = ("drop-head", "reject-publish", "reject-publish-dlx")
DEAD_LETTER_REASONS = ("rejected", "expired", "maxlen", "delivery_limit")
DEAD_LETTER_STRATEGIES = ("at-most-once", "at-least-once")


class Meta(NamedTuple):
    """What Raft knows of a command: its log index and the leader's wall clock when it was
    proposed. Time enters the machine only through here."""

    raft_index: int
    ts_ms: int


class MessageRef(NamedTuple):
    """A message without its body: the body stays in the log entry at `index`."""

    raft_index: int
    size_bytes: int
    priority: int
    expiry_ms: int | None


def _natural(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


def _text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")


def _natural_list(name: str, values: object) -> list[int]:
    if not isinstance(values, list | tuple):
        raise ValueError(f"{name}s must be a list of integers, not {values!r}")
    for v in values:
        _natural(name, v)
    return list(values)


def _msg_ids(msg_ids: object) -> list[int]:
    return _natural_list("msg_id", msg_ids)


def make_enqueue(publisher: str | None, seq: int | None, size_bytes: int, priority: int = 0,
                 ttl_ms: int | None = None, body: object = None) -> Command:
    """A publish. `publisher` + `seq` (from 1, one more per publish) let the machine drop a
    re-sent duplicate; both None for an untracked enqueue. `priority` is the message's
    priority property (0 without one); the queue's type decides what it means (a quorum
    queue: high above 4; a classic one: its level, up to x-max-priority). `ttl_ms` is the
    message's own TTL (the expiration property); the queue's x-message-ttl is applied by the
    machine. `body` rides along in the log entry and is ignored by the machine."""
    if (publisher is None) != (seq is None):
        raise ValueError("publisher and seq go together")
    if publisher is not None:
        _text("publisher", publisher)
        _natural("seq", seq)
        assert seq is not None
        if seq < 1:
            raise ValueError("seq starts at 1")
    _natural("size_bytes", size_bytes)
    _natural("priority", priority)
    _natural("ttl_ms", ttl_ms, optional=True)
    return ("enqueue", publisher, seq, size_bytes, priority, ttl_ms, body)


def make_checkout(consumer_id: str, owner: str, prefetch: int = 0, priority: int = 0,
                  exclusive: bool = False, timeout_ms: int | None = None,
                  window: int | None = None) -> Command:
    """Register (or update) a consumer. `owner` is the channel or connection it lives on (a
    `down` for the owner ends it); `prefetch` 0 means no limit; `priority` is x-priority
    (may be negative); `timeout_ms` overrides the queue's consumer ack timeout. `window`,
    when given (1..prefetch), is how many of its checked-out messages the client itself may
    hold: the rest wait on the consumer's node (see replica.py's "Read-ahead") and are
    counted as ready, not unacknowledged."""
    _text("consumer_id", consumer_id)
    _text("owner", owner)
    _natural("prefetch", prefetch)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError(f"priority must be an integer, not {priority!r}")
    _natural("timeout_ms", timeout_ms, optional=True)
    cmd = ("checkout", consumer_id, owner, prefetch, priority, bool(exclusive), timeout_ms)
    if window is None:
        return cmd
    _natural("window", window)
    if not 0 < window <= prefetch:
        raise ValueError(f"window must be within 1..prefetch ({prefetch}), not {window}")
    return (*cmd, window)


def make_settle(consumer_id: str, msg_ids: list[int]) -> Command:
    """Acknowledge: the messages are done."""
    _text("consumer_id", consumer_id)
    return ("settle", consumer_id, _msg_ids(msg_ids))


def make_return(consumer_id: str, msg_ids: list[int], asked: bool | None = None) -> Command:
    """Requeue (nack/reject with requeue): the delivery failed and counts towards the
    delivery limit. Without a delivery limit, where it goes depends on who returns it:
    `asked` True, the client (nack, reject, recover: behind every other message, as
    RabbitMQ 3.10 puts it, whatever became of the consumer); False, its channel closing
    (first); None (the 3-item form of older nodes, and of the queue's other nodes'
    channels, which do not say): behind the others while the consumer is live, else
    first."""
    _text("consumer_id", consumer_id)
    if asked is None:
        return ("return", consumer_id, _msg_ids(msg_ids))
    return ("return", consumer_id, _msg_ids(msg_ids), bool(asked))


def make_discard(consumer_id: str, msg_ids: list[int]) -> Command:
    """Reject without requeue: dead-lettered with reason `rejected`."""
    _text("consumer_id", consumer_id)
    return ("discard", consumer_id, _msg_ids(msg_ids))


def make_credit(consumer_id: str, prefetch: int) -> Command:
    """A new prefetch for a consumer (basic.qos after consume)."""
    _text("consumer_id", consumer_id)
    _natural("prefetch", prefetch)
    return ("credit", consumer_id, prefetch)


def make_cancel(consumer_id: str, requeue: bool | list[int] = True) -> Command:
    """End a consumer. With `requeue` its checked-out messages return to the queue
    (redelivered); without, they stay checked out until settled, returned or discarded, as
    after AMQP basic.cancel, and the consumer goes once it holds nothing. A list of msg_ids
    keeps those (the deliveries its channel holds) and returns the others: deliveries made
    after the client cancelled, which its channel will never see."""
    _text("consumer_id", consumer_id)
    if isinstance(requeue, list | tuple):
        return ("cancel", consumer_id, _natural_list("msg_id", requeue))
    return ("cancel", consumer_id, bool(requeue))


def make_cancel_unread(consumer_id: str, keep: list[int], unread: list[int]) -> Command:
    """`make_cancel` with a list to keep, for a consumer whose node held some of its
    messages back (read-ahead): those, `unread`, never reached the client, so they return
    as they were, neither redelivered nor counted as a failed delivery; the others not kept
    return as after any cancel."""
    _text("consumer_id", consumer_id)
    return ("cancel", consumer_id, _natural_list("msg_id", keep),
            _natural_list("msg_id", unread))


def make_down(owner: str) -> Command:
    """The owner (a connection or channel) is gone: its consumers end, their messages return
    redelivered, and its publishers' de-duplication state is forgotten."""
    _text("owner", owner)
    return ("down", owner)


def make_dequeue(consumer_id: str, owner: str) -> Command:
    """basic.get: take the head message, checked out to `consumer_id` (the getter's channel)
    until it is settled, returned or discarded like a delivery."""
    _text("consumer_id", consumer_id)
    _text("owner", owner)
    return ("dequeue", consumer_id, owner)


def make_dead_letter_settle(raft_indexes: list[int]) -> Command:
    """At-least-once dead-lettering: these held dead letters reached every target queue (each
    confirmed its copy); they leave the queue. Unknown indexes are ignored."""
    return ("dead_letter_settle", _natural_list("raft_index", raft_indexes))


def make_purge() -> Command:
    return ("purge",)


def make_tick() -> Command:
    """The leader's timer: expire messages at the head by TTL, end consumers over their ack
    timeout, expire the unused queue and name the held dead letters again, all against the
    command's timestamp."""
    return ("tick",)


def make_update_config(config: dict[str, Any]) -> Command:
    """New queue arguments or policy; limits take effect at once (drop-head trims)."""
    from .state import QueueConfig  # validation lives with the config

    QueueConfig.from_dict(config)
    return ("update_config", dict(config))
