"""A published message: routing facts plus the raw content header and body.

The content header payload is kept exactly as the publisher sent it (class id, weight, body
size, property flags and properties) and re-sent unchanged to consumers; properties are
decoded only when a feature needs one.
"""

from __future__ import annotations

from ..amqp.codec import decode_properties, encode_header_payload

# Property flag bits in the first flag word of a content header (spec 4.2.6.1).
FLAG_HEADERS = 0x2000
FLAG_DELIVERY_MODE = 0x1000
FLAG_EXPIRATION = 0x0100
FLAG_USER_ID = 0x0010


class Message:
    __slots__ = ("exchange", "routing_key", "exchange_ss", "routing_key_ss", "header", "body",
                 "size", "persistent", "loc", "refs", "pinned", "published_ms", "ttl_ms",
                 "_properties")

    def __init__(self, exchange: str, routing_key: str, exchange_ss: bytes,
                 routing_key_ss: bytes, header: bytes, body: bytes | None,
                 size: int | None = None) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.exchange_ss = exchange_ss  # shortstr-encoded, ready for Basic.Deliver
        self.routing_key_ss = routing_key_ss
        self.header = header
        self.body = body  # None while paged out to the journal (see loc)
        self.size = len(body) if size is None else size  # type: ignore[arg-type]
        self.persistent = delivery_mode(header) == 2
        self.loc = None  # where the journal keeps this message, once it does
        self.refs = 1  # queues still holding it (ready or unsettled)
        self.pinned = False  # a paged-out body keeps its log segment alive until refs == 0
        self.published_ms = 0.0  # wall clock, for TTL
        self.ttl_ms: int | None = None  # the per-message TTL (expiration property)
        self._properties = None

    @property
    def flags(self) -> int:
        return (self.header[12] << 8) | self.header[13]

    @property
    def properties(self):
        if self._properties is None:
            self._properties = decode_properties(self.header)
        return self._properties

    def headers(self) -> dict | None:
        if not self.flags & FLAG_HEADERS:
            return None
        return self.properties.headers


FLAG_PRIORITY = 0x0800


def _octet_property(header: bytes, flag: int) -> int:
    """An octet property (delivery-mode or priority) of a raw content header payload, found
    without decoding the others: only content-type, content-encoding, headers and
    delivery-mode can come before them (spec 4.2.6.1). 0 when absent."""
    flags = (header[12] << 8) | header[13]
    if not flags & flag or flags & 0x0001:  # absent, or a continuation flag word
        return 0
    offset = 14
    if flags & 0x8000:
        offset += 1 + header[offset]
    if flags & 0x4000:
        offset += 1 + header[offset]
    if flags & FLAG_HEADERS:
        offset += 4 + int.from_bytes(header[offset:offset + 4], "big")
    if flag == FLAG_PRIORITY and flags & FLAG_DELIVERY_MODE:
        offset += 1
    return header[offset] if offset < len(header) else 0


def delivery_mode(header: bytes) -> int:
    return _octet_property(header, FLAG_DELIVERY_MODE)


def message_priority(header: bytes) -> int:
    return _octet_property(header, FLAG_PRIORITY)


def with_delivery_count(msg: Message, count: int) -> Message:
    """A copy of `msg` for one delivery, its headers carrying `x-delivery-count`; the stored
    message, its header and its cached properties stay as published."""
    props = decode_properties(msg.header)
    props.headers = {**(props.headers or {}), "x-delivery-count": count}
    copy = Message(msg.exchange, msg.routing_key, msg.exchange_ss, msg.routing_key_ss,
                   encode_header_payload(msg.size, props), msg.body, msg.size)
    copy.published_ms = msg.published_ms
    copy.ttl_ms = msg.ttl_ms
    return copy


def sender_selected(msg: Message) -> tuple[Message, list[str]]:
    """Sender-selected distribution: the CC and BCC headers add routing keys; BCC is removed
    from the message the queues get (RabbitMQ's rule)."""
    headers = msg.headers() or {}
    keys: list[str] = []
    for name in ("CC", "BCC"):
        value = headers.get(name)
        if isinstance(value, list):
            keys += [v.decode() if isinstance(v, (bytes, bytearray)) else str(v) for v in value]
    if "BCC" not in headers:
        return msg, keys
    props = msg.properties
    props.headers = {k: v for k, v in headers.items() if k != "BCC"}
    copy = Message(msg.exchange, msg.routing_key, msg.exchange_ss, msg.routing_key_ss,
                   encode_header_payload(msg.size, props), msg.body, msg.size)
    copy.published_ms = msg.published_ms
    copy.ttl_ms = msg.ttl_ms
    return copy, keys
