"""Dead-lettering as RabbitMQ does it: the message is republished to the queue's dead-letter
exchange with its routing key (or the dead-letter routing key), and an `x-death` header
records why, where and how often it died.

x-death is an array of tables, one per (queue, reason), most recent first: count, reason,
queue, time, exchange, routing-keys, and original-expiration when the message had a per-message TTL
(the expiration property is removed from the copy, whatever the reason, as RabbitMQ does).
x-first-death-{exchange,queue,reason} are set once. A message that would go back to a queue
it already died in, with no rejection anywhere in its history, is dropped (a cycle).
"""

from __future__ import annotations

import datetime
from typing import Any

from ..amqp import codec
from .message import Message


def dead_letter_copy(msg: Message, queue_name: str, reason: str, exchange: str,
                     routing_key: str, now_ms: float) -> Message:
    props = codec.decode_properties(msg.header)
    headers: dict[str, Any] = dict(props.headers or {})
    deaths = [dict(d) for d in headers.get("x-death") or [] if isinstance(d, dict)]
    rks = [msg.routing_key]
    cc = headers.get("CC")
    if isinstance(cc, list):
        rks += [_text(k) for k in cc]
    entry = None
    for d in deaths:
        if _text(d.get("queue")) == queue_name and _text(d.get("reason")) == reason:
            entry = d
            break
    if entry is not None:
        deaths.remove(entry)
        entry["count"] = int(entry.get("count", 1)) + 1
        entry["time"] = _timestamp(now_ms)
    else:
        entry = {"count": 1, "reason": reason, "queue": queue_name,
                 "time": _timestamp(now_ms), "exchange": msg.exchange, "routing-keys": rks}
        if props.expiration is not None:
            entry["original-expiration"] = props.expiration
    deaths.insert(0, entry)
    headers["x-death"] = deaths
    if "x-first-death-reason" not in headers:
        headers["x-first-death-reason"] = reason
        headers["x-first-death-queue"] = queue_name
        headers["x-first-death-exchange"] = msg.exchange
    props.headers = headers
    props.expiration = None  # whatever the reason, the copy does not expire for it again
    body = msg.body if msg.body is not None else b""
    header = codec.encode_header_payload(msg.size, props)
    copy = Message(exchange, routing_key, codec.shortstr(exchange), codec.shortstr(routing_key),
                   header, body, msg.size)
    copy.published_ms = now_ms
    return copy


def is_cycle(msg: Message, target_queue: str) -> bool:
    """The copy would return to a queue it already died in, and nothing ever rejected it."""
    headers = msg.headers() or {}
    deaths = headers.get("x-death") or []
    seen = False
    for d in deaths:
        if not isinstance(d, dict):
            continue
        if _text(d.get("reason")) == "rejected":
            return False
        if _text(d.get("queue")) == target_queue:
            seen = True
    return seen


def _timestamp(now_ms: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(now_ms / 1000), tz=datetime.UTC)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
