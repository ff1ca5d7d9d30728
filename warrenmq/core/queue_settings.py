"""A queue's limits from its arguments and its policy, combined as RabbitMQ combines them:
for message TTL, queue expiry, the length limits and the delivery limit the smaller value
wins; for the dead-letter exchange, its routing key and overflow the queue argument wins over
the policy. The delivery limit is ours (RabbitMQ 3.10 ignores it on classic queues) and reads
as on a quorum queue: a negative one, which only an argument can give, acts as 0."""

from __future__ import annotations

from typing import Any

from ..queues.classic import ClassicQueue


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _text(v: Any) -> str | None:
    if isinstance(v, (bytes, bytearray)):
        return v.decode()
    return v if isinstance(v, str) else None


def _smaller(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def apply_queue_settings(q: ClassicQueue, args: dict, policy: dict) -> None:
    q.ttl_ms = _smaller(_int(args.get("x-message-ttl")), _int(policy.get("message-ttl")))
    q.expires_ms = _smaller(_int(args.get("x-expires")), _int(policy.get("expires")))
    q.max_length = _smaller(_int(args.get("x-max-length")), _int(policy.get("max-length")))
    q.max_length_bytes = _smaller(_int(args.get("x-max-length-bytes")),
                                  _int(policy.get("max-length-bytes")))
    q.overflow = _text(args.get("x-overflow")) or _text(policy.get("overflow")) or "drop-head"
    dlx = _text(args.get("x-dead-letter-exchange"))
    if dlx is None:
        dlx = _text(policy.get("dead-letter-exchange"))
    q.dead_letter_exchange = dlx
    dlrk = _text(args.get("x-dead-letter-routing-key"))
    if dlrk is None:
        dlrk = _text(policy.get("dead-letter-routing-key"))
    q.dead_letter_routing_key = dlrk
    q.consumer_timeout_ms = _smaller(_int(args.get("x-consumer-timeout")),
                                     _int(policy.get("consumer-timeout")))
    limit = _smaller(_int(args.get("x-delivery-limit")), _int(policy.get("delivery-limit")))
    q.delivery_limit = None if limit is None else max(0, limit)
    if q.delivery_limit is None:
        q.delivery_counts.clear()  # no limit, no counting: as a RabbitMQ classic queue
    max_priority = _int(args.get("x-max-priority"))
    if max_priority:
        q.set_max_priority(max_priority)
    if q.ttl_ms is not None:
        q.has_expiring = True
    if q.ttl_ms is not None or q.expires_ms is not None:
        q.on_timed(q)
