"""The record format: golden bytes, what the checksum covers, torn and corrupt records."""

from __future__ import annotations

import struct
import zlib

import pytest

from warrenmq.store.records import (
    RecordError,
    decode_at,
    encode,
    encode_header,
    iter_records,
    valid_prefix,
)


def test_a_record_is_length_crc_kind_payload_big_endian():
    record = encode(7, b"abc")
    assert record == struct.pack(">IIB", 3, zlib.crc32(b"\x07abc"), 7) + b"abc"
    assert record[:4] == b"\x00\x00\x00\x03"


def test_the_checksum_covers_the_kind_as_well_as_the_payload():
    assert encode_header(1, b"same")[4:8] != encode_header(2, b"same")[4:8]


def test_an_empty_payload_is_a_valid_record():
    kind, payload, end = decode_at(memoryview(encode(0, b"")), 0)
    assert (kind, bytes(payload), end) == (0, b"", 9)


def test_decode_at_reads_consecutive_records_without_copying():
    buf = memoryview(encode(1, b"one") + encode(255, b"two!"))
    kind, payload, end = decode_at(buf, 0)
    assert (kind, bytes(payload), end) == (1, b"one", 12)
    assert isinstance(payload, memoryview)
    kind, payload, end = decode_at(buf, end)
    assert (kind, bytes(payload), end) == (255, b"two!", len(buf))


@pytest.mark.parametrize("cut", range(0, 12))
def test_a_record_cut_short_anywhere_is_torn(cut):
    record = encode(3, b"abc")
    with pytest.raises(RecordError, match="torn"):
        decode_at(memoryview(record[:cut]), 0)


@pytest.mark.parametrize("bit", range(8 * 12))
def test_any_flipped_bit_is_caught(bit):
    record = bytearray(encode(3, b"abc"))
    record[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RecordError):
        decode_at(memoryview(bytes(record)), 0)


def test_valid_prefix_stops_at_the_first_bad_record_and_says_why():
    good = encode(1, b"a") + encode(2, b"bb")
    assert valid_prefix(memoryview(good)) == (len(good), None)
    end, reason = valid_prefix(memoryview(good + encode(3, b"ccc")[:-1]))
    assert end == len(good) and "torn" in reason
    bad = bytearray(encode(3, b"ccc"))
    bad[-1] ^= 0x40
    end, reason = valid_prefix(memoryview(good + bytes(bad) + encode(4, b"d")))
    assert end == len(good) and "checksum" in reason


def test_iter_records_yields_offsets_kinds_and_payloads():
    buf = encode(1, b"a") + encode(2, b"bb")
    assert [(o, k, bytes(p)) for o, k, p in iter_records(memoryview(buf), len(buf))] == [
        (0, 1, b"a"), (10, 2, b"bb"),
    ]
