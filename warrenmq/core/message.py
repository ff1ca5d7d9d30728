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
FLAG_USER_ID = 0x0010


class Message:
    __slots__ = ("exchange", "routing_key", "exchange_ss", "routing_key_ss", "header", "body",
                 "_properties")

    def __init__(self, exchange: str, routing_key: str, exchange_ss: bytes,
                 routing_key_ss: bytes, header: bytes, body: bytes) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.exchange_ss = exchange_ss  # shortstr-encoded, ready for Basic.Deliver
        self.routing_key_ss = routing_key_ss
        self.header = header
        self.body = body
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

    @property
    def persistent(self) -> bool:
        return bool(self.flags & FLAG_DELIVERY_MODE) and self.properties.delivery_mode == 2

    @property
    def body_size(self) -> int:
        return len(self.body)
