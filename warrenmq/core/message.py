"""A published message: routing facts plus the raw content header and body.

The content header payload is kept exactly as the publisher sent it (class id, weight, body
size, property flags and properties) and re-sent unchanged to consumers; properties are
decoded only when a feature needs one.
"""

from __future__ import annotations

from ..amqp.codec import decode_properties

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



def delivery_mode(header: bytes) -> int:
    """The delivery-mode property of a raw content header payload, found without decoding
    the others: it follows content-type, content-encoding and headers (spec 4.2.6.1)."""
    flags = (header[12] << 8) | header[13]
    if not flags & FLAG_DELIVERY_MODE:
        return 0
    offset = 14
    if flags & 0x0001:  # a continuation flag word
        return 0
    if flags & 0x8000:
        offset += 1 + header[offset]
    if flags & 0x4000:
        offset += 1 + header[offset]
    if flags & FLAG_HEADERS:
        offset += 4 + int.from_bytes(header[offset:offset + 4], "big")
    return header[offset] if offset < len(header) else 0
