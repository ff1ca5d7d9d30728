"""The write-ahead log's record format: framing, checksums and scanning a segment's bytes.

One record on disk is

    [length u32 big-endian][crc32 u32 big-endian][kind u8][payload: length bytes]

`length` counts the payload only; the checksum covers kind + payload, so a flipped bit in
either is caught, and a flipped bit in `length` almost always is too (the checksum is then
taken over the wrong bytes, or the record runs past the end of the segment). `kind` is a
number 0-255 the caller chooses (a metadata command, a message body, an ack, ...).

The checksum is zlib's CRC-32 (IEEE polynomial), not CRC-32C: it is in the standard
library, so the store has no dependency, and zlib's C implementation runs at several GB/s,
far above what one writer thread can fsync. The CRC guards against torn writes and bit rot,
not against an adversary, so either polynomial does the job.

This module is pure: it works on bytes and memoryviews and never touches a file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

HEADER = struct.Struct(">IIB")
HEADER_BYTES = HEADER.size  # 9
PAYLOAD_BYTES_MAX = 0xFFFF_FFFF
KIND_MAX = 255

# crc32(kind byte) for each kind, so a record's checksum is one crc32 call over the payload.
KIND_CRC = tuple(zlib.crc32(bytes([kind])) for kind in range(KIND_MAX + 1))

Buffer = bytes | bytearray | memoryview


class RecordError(ValueError):
    """A record that is torn (cut short) or corrupt (checksum mismatch)."""


def checksum(kind: int, payload: Buffer) -> int:
    return zlib.crc32(payload, KIND_CRC[kind])


def encode_header(kind: int, payload: Buffer) -> bytes:
    """The 9 header bytes that precede `payload` on disk (the payload itself is not copied)."""
    return HEADER.pack(len(payload), zlib.crc32(payload, KIND_CRC[kind]), kind)


def encode(kind: int, payload: Buffer) -> bytes:
    """A whole record as one bytes object (for tests and small writes)."""
    return encode_header(kind, payload) + bytes(payload)


def record_bytes(payload_bytes: int) -> int:
    """The size a record with a payload of `payload_bytes` takes on disk."""
    return HEADER_BYTES + payload_bytes


def decode_at(buf: memoryview, offset: int) -> tuple[int, memoryview, int]:
    """Decode the record starting at `offset` of `buf`.

    Returns (kind, payload, next_offset); the payload is a slice of `buf`, not a copy.
    Raises RecordError when fewer bytes remain than the record needs (torn) or when the
    checksum does not match (corrupt).
    """
    remaining = len(buf) - offset
    if remaining < HEADER_BYTES:
        raise RecordError(f"torn header: {remaining} of {HEADER_BYTES} bytes")
    length, crc, kind = HEADER.unpack_from(buf, offset)
    start = offset + HEADER_BYTES
    end = start + length
    if end > len(buf):
        raise RecordError(
            f"torn record: header says {length} payload bytes, {len(buf) - start} remain"
        )
    payload = buf[start:end]
    actual = zlib.crc32(payload, KIND_CRC[kind])
    if actual != crc:
        raise RecordError(f"checksum mismatch: stored {crc:#010x}, computed {actual:#010x}")
    return kind, payload, end


def valid_prefix(buf: memoryview) -> tuple[int, str | None]:
    """How far `buf` holds whole, valid records.

    Returns (end, None) when every byte belongs to a valid record, or (end, reason) where
    `end` is the offset of the first torn or corrupt record and `reason` says what is wrong.
    """
    offset = 0
    size = len(buf)
    while offset < size:
        try:
            _, _, offset_next = decode_at(buf, offset)
        except RecordError as exc:
            return offset, str(exc)
        offset = offset_next
    return offset, None


def iter_records(buf: memoryview, end: int) -> Iterator[tuple[int, int, memoryview]]:
    """Yield (offset, kind, payload) for each record of `buf[:end]`, which must be valid."""
    offset = 0
    while offset < end:
        kind, payload, offset_next = decode_at(buf, offset)
        yield offset, kind, payload
        offset = offset_next
