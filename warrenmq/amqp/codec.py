"""Method and content codecs.

The hot methods (Basic.Publish, Basic.Deliver, Basic.Get-Ok, Basic.Return, Basic.Ack/Nack/
Reject) and content frames are encoded and decoded here by hand with `struct`; every other
method goes through pamqp. pamqp's generic codec costs ~10 us per method, which alone would
cap a publish->deliver path near 40k msg/s (see docs/architecture.md).

Content header payloads are kept raw: the bytes a publisher sent are the bytes a consumer gets.
"""

from __future__ import annotations

from struct import Struct

from pamqp import commands
from pamqp import encode as pamqp_encode
from pamqp.base import Frame

from .constants import (
    COMMAND_INVALID,
    FRAME_BODY,
    FRAME_ERROR,
    FRAME_HEADER,
    FRAME_METHOD,
)
from .errors import AMQPError

FRAME_HDR = Struct(">BHI")
CLASS_METHOD = Struct(">HH")
CONTENT_HDR = Struct(">HHQ")
_LONGLONG_OCTET = Struct(">QB")
_DELIVER_HEAD = Struct(">BHIHH")  # frame header + class/method

METHOD_INDEX = commands.INDEX_MAPPING


def _shortstr(data: bytes, offset: int) -> tuple[str, int]:
    n = data[offset]
    end = offset + 1 + n
    if end > len(data):
        raise IndexError("short string past end of frame")
    return data[offset + 1:end].decode("utf-8"), end


# Exchange and routing-key pairs repeat: one shared (exchange, routing_key, exchange_ss,
# routing_key_ss) per distinct pair saves a decode per publish and, in deep queues, four
# objects per message. Bounded: cleared when full.
_NAMES: dict[bytes, tuple[str, str, bytes, bytes]] = {}
_NAMES_MAX = 10_000


def names(pair: bytes) -> tuple[str, str, bytes, bytes]:
    """The shared names for raw `exchange shortstr + routing-key shortstr` bytes."""
    hit = _NAMES.get(pair)
    if hit is None:
        n = pair[0]
        if 1 + n >= len(pair) or 2 + n + pair[1 + n] != len(pair):
            raise ValueError("malformed exchange / routing key short strings")
        hit = (pair[1:1 + n].decode("utf-8"), pair[2 + n:].decode("utf-8"), pair[:1 + n],
               pair[1 + n:])
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[pair] = hit
    return hit


def decode_publish(payload: bytes) -> tuple[str, str, bytes, bytes, int]:
    """Basic.Publish arguments (payload includes class/method ids): exchange, routing key,
    both again as raw shortstr bytes (re-sent as they are in Basic.Deliver), and the bits."""
    try:
        o = 7 + payload[6]  # 4 bytes ids + 2 bytes ticket, then the exchange
        o2 = o + 1 + payload[o]
        bits = payload[o2]
        exchange, routing_key, ex_ss, rk_ss = names(payload[6:o2])
    except (IndexError, UnicodeDecodeError, ValueError) as e:
        raise AMQPError(FRAME_ERROR, f"cannot decode basic.publish arguments: {e}", 60,
                        40) from None
    return exchange, routing_key, ex_ss, rk_ss, bits


def decode_tag_bits(payload: bytes, method_id: int) -> tuple[int, int]:
    """Basic.Ack / Nack / Reject: (delivery_tag, bits)."""
    try:
        return _LONGLONG_OCTET.unpack_from(payload, 4)
    except Exception:
        raise AMQPError(FRAME_ERROR, "cannot decode delivery tag", 60, method_id) from None


def decode_method(payload: bytes) -> Frame:
    class_id, method_id = CLASS_METHOD.unpack_from(payload, 0)
    cls = METHOD_INDEX.get((class_id << 16) | method_id)
    if cls is None:
        raise AMQPError(COMMAND_INVALID, f"unknown method {class_id}/{method_id}", class_id,
                        method_id)
    method = cls.__new__(cls)
    try:
        method.unmarshal(payload[4:])
    except Exception as e:
        # as RabbitMQ: arguments that do not decode are a frame error naming the method
        raise AMQPError(FRAME_ERROR, f"cannot decode {cls.name} arguments: {e}", class_id,
                        method_id) from None
    return method


def _marshal_args(method: Frame) -> bytes:
    """pamqp's argument encoding without its validation: pamqp restricts queue and exchange
    names to [a-zA-Z0-9-_.:], while AMQP (and RabbitMQ) allow any UTF-8 short string."""
    out: list[bytes] = []
    byte = offset = 0
    in_bits = False
    for name in method.__slots__:
        data_type = method.amqp_type(name)
        value = getattr(method, name, 0)
        if data_type == "bit":
            if not in_bits:
                byte, offset, in_bits = 0, 0, True
            if value:
                byte |= 1 << offset
            offset += 1
            if offset == 8:
                out.append(bytes((byte,)))
                in_bits = False
            continue
        if in_bits:
            out.append(bytes((byte,)))
            in_bits = False
        out.append(pamqp_encode.by_type(value, data_type))
    if in_bits:
        out.append(bytes((byte,)))
    return b"".join(out)


_DEFAULTS: dict[type, dict] = {}


def make(cls: type[Frame], **values: object) -> Frame:
    """Build a pamqp method without its constructor's validation (see _marshal_args)."""
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        import inspect

        params = inspect.signature(cls.__init__).parameters
        defaults = _DEFAULTS[cls] = {k: p.default for k, p in params.items() if k != "self"}
    method = cls.__new__(cls)
    for name in cls.__slots__:
        setattr(method, name, values.get(name, defaults.get(name)))
    return method


def encode_method(channel: int, method: Frame) -> bytes:
    args = _marshal_args(method)
    return b"".join((
        FRAME_HDR.pack(FRAME_METHOD, channel, len(args) + 4),
        CLASS_METHOD.pack(method.index >> 16, method.index & 0xFFFF),
        args,
        b"\xce",
    ))


def _sstr(s: str) -> bytes:
    b = s.encode("utf-8")
    return bytes((len(b),)) + b


def content_frames(channel: int, header_payload: bytes, body: bytes, frame_max: int) -> list[bytes]:
    """The header frame and body frames of one message, bodies split to fit frame_max."""
    parts = [FRAME_HDR.pack(FRAME_HEADER, channel, len(header_payload)), header_payload, b"\xce"]
    n = len(body)
    if n:
        chunk = frame_max - 8
        if n <= chunk:
            parts += (FRAME_HDR.pack(FRAME_BODY, channel, n), body, b"\xce")
        else:
            view = memoryview(body)
            for start in range(0, n, chunk):
                piece = view[start:start + chunk]
                parts += (FRAME_HDR.pack(FRAME_BODY, channel, len(piece)), piece, b"\xce")
    return parts


def deliver_method(channel: int, consumer_tag: bytes, delivery_tag: int, redelivered: bool,
                   exchange: bytes, routing_key: bytes) -> bytes:
    """Basic.Deliver frame; consumer_tag, exchange and routing_key come pre-encoded as shortstr."""
    args = b"".join((consumer_tag, _LONGLONG_OCTET.pack(delivery_tag, redelivered), exchange,
                     routing_key))
    return b"".join((_DELIVER_HEAD.pack(FRAME_METHOD, channel, len(args) + 4, 60, 60), args,
                     b"\xce"))


def get_ok_method(channel: int, delivery_tag: int, redelivered: bool, exchange: bytes,
                  routing_key: bytes, message_count: int) -> bytes:
    args = b"".join((_LONGLONG_OCTET.pack(delivery_tag, redelivered), exchange, routing_key,
                     message_count.to_bytes(4, "big")))
    return b"".join((_DELIVER_HEAD.pack(FRAME_METHOD, channel, len(args) + 4, 60, 71), args,
                     b"\xce"))


def return_method(channel: int, reply_code: int, reply_text: str, exchange: bytes,
                  routing_key: bytes) -> bytes:
    args = b"".join((reply_code.to_bytes(2, "big"), _sstr(reply_text), exchange, routing_key))
    return b"".join((_DELIVER_HEAD.pack(FRAME_METHOD, channel, len(args) + 4, 60, 50), args,
                     b"\xce"))


def confirm_method(channel: int, ack: bool, delivery_tag: int, multiple: bool) -> bytes:
    if ack:
        return _DELIVER_HEAD.pack(FRAME_METHOD, channel, 13, 60, 80) + _LONGLONG_OCTET.pack(
            delivery_tag, multiple) + b"\xce"
    return _DELIVER_HEAD.pack(FRAME_METHOD, channel, 13, 60, 120) + _LONGLONG_OCTET.pack(
        delivery_tag, multiple) + b"\xce"


def shortstr(s: str) -> bytes:
    return _sstr(s)


HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def decode_properties(header_payload: bytes) -> commands.Basic.Properties:
    """Decode the properties of a raw content header payload (done lazily, rarely)."""
    from pamqp.header import ContentHeader

    header = ContentHeader()
    header.unmarshal(bytes(header_payload))
    return header.properties


def encode_header_payload(body_size: int, properties: commands.Basic.Properties) -> bytes:
    from pamqp.header import ContentHeader

    return ContentHeader(0, body_size, properties).marshal()
