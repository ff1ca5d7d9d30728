"""Hand-written AMQP 0-9-1 frame codecs for the load generator's hot path.

Only what a producer or consumer sends or receives per message is here: Basic.Publish,
the content header, body frames, Basic.Ack, and parsing of Basic.Deliver and the
broker's Basic.Ack/Nack (publisher confirms). Everything else goes through pamqp in
`client`. Frame layout: type(1) channel(2) size(4) payload frame-end(0xCE).
"""

from __future__ import annotations

import struct

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_HEADER_SIZE = 7

CLASS_BASIC = 60
BASIC_PUBLISH = (60 << 16) | 40
BASIC_RETURN = (60 << 16) | 50
BASIC_DELIVER = (60 << 16) | 60
BASIC_ACK = (60 << 16) | 80
BASIC_NACK = (60 << 16) | 120
CONNECTION_BLOCKED = (10 << 16) | 60
CONNECTION_UNBLOCKED = (10 << 16) | 61

# Property flag bit of delivery-mode in the content header (bit 12, counted from 0 at the
# least significant end of the 16-bit flags word).
FLAG_DELIVERY_MODE = 0x1000

_frame_head = struct.Struct(">BHI")
_method_id = struct.Struct(">I")
_publish_head = struct.Struct(">IH")
_content_head = struct.Struct(">HHQH")
_ack = struct.Struct(">IQB")
_u64 = struct.Struct(">Q")

HEARTBEAT_FRAME = _frame_head.pack(FRAME_HEARTBEAT, 0, 0) + FRAME_END_BYTE


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"short string longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return _frame_head.pack(frame_type, channel, len(payload)) + payload + FRAME_END_BYTE


def publish_method(channel: int, exchange: str, routing_key: str, mandatory: bool = False) -> bytes:
    payload = (
        _publish_head.pack(BASIC_PUBLISH, 0)
        + _shortstr(exchange)
        + _shortstr(routing_key)
        + bytes((1 if mandatory else 0,))
    )
    return frame(FRAME_METHOD, channel, payload)


def content_header(channel: int, body_size: int, persistent: bool) -> bytes:
    if persistent:
        payload = _content_head.pack(CLASS_BASIC, 0, body_size, FLAG_DELIVERY_MODE) + b"\x02"
    else:
        payload = _content_head.pack(CLASS_BASIC, 0, body_size, 0)
    return frame(FRAME_HEADER, channel, payload)


def body_frames(channel: int, body: bytes, frame_max: int) -> list[bytes]:
    """Split `body` into body frames no larger than `frame_max` (0 means unlimited)."""
    if not body:
        return []
    chunk = (frame_max - 8) if frame_max else len(body)
    return [frame(FRAME_BODY, channel, body[i:i + chunk]) for i in range(0, len(body), chunk)]


class PublishTemplate:
    """The frames of one message to one destination; the body may change per message.

    The method frame and the content header are built once; only the body frames are
    built per publish (or not at all when the body is constant).
    """

    __slots__ = ("head", "channel", "frame_max", "persistent", "body_size", "_body_prefix")

    def __init__(self, channel: int, exchange: str, routing_key: str, body_size: int,
                 persistent: bool, frame_max: int) -> None:
        self.channel = channel
        self.frame_max = frame_max
        self.persistent = persistent
        self.body_size = body_size
        self.head = publish_method(channel, exchange, routing_key) + content_header(
            channel, body_size, persistent)
        self._body_prefix = _frame_head.pack(FRAME_BODY, channel, body_size)

    def message(self, body: bytes) -> bytes:
        """All frames of one publish as one bytes object."""
        if len(body) != self.body_size:
            raise ValueError("body size differs from the template's")
        if self.frame_max and self.body_size > self.frame_max - 8:
            return self.head + b"".join(body_frames(self.channel, body, self.frame_max))
        if not body:
            return self.head
        return self.head + self._body_prefix + body + FRAME_END_BYTE


def client_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    return frame(FRAME_METHOD, channel, _ack.pack(BASIC_ACK, delivery_tag, 1 if multiple else 0))


def parse_deliver(payload: memoryview | bytes) -> tuple[int, bool]:
    """Return (delivery_tag, redelivered) from a Basic.Deliver method payload."""
    pos = 4
    pos += 1 + payload[pos]  # consumer-tag
    tag = _u64.unpack_from(payload, pos)[0]
    return tag, bool(payload[pos + 8] & 1)


def parse_confirm(payload: memoryview | bytes) -> tuple[int, bool]:
    """Return (delivery_tag, multiple) from the broker's Basic.Ack or Basic.Nack."""
    tag = _u64.unpack_from(payload, 4)[0]
    return tag, bool(payload[12] & 1)


def parse_body_size(payload: memoryview | bytes) -> int:
    return _u64.unpack_from(payload, 4)[0]


def unpack_frame_head(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int, int]:
    return _frame_head.unpack_from(buf, pos)


def method_id(payload: bytes | memoryview) -> int:
    return _method_id.unpack_from(payload, 0)[0]
