"""Recovery: a torn tail or a corrupt record is cut off, logged, and appends carry on."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from warrenmq.store import Location

from .helpers import payload_for, record_bytes

SEGMENT_BYTES_MAX = 2048


async def write_log(wals, directory, count, segment_bytes_max=SEGMENT_BYTES_MAX):
    """Append `count` records (kind = index % 256) and close; return [(location, kind,
    payload)]."""
    wal = wals(directory, segment_bytes_max=segment_bytes_max, sync=False)
    list(wal.open())
    records = []
    for index in range(count):
        payload = payload_for(index, 300)
        records.append((wal.append(index % 256, payload), index % 256, payload))
    await wal.wait_durable()
    wal.close()
    return records


def path_of(directory, location):
    return directory / f"{location.segment_id:08d}.wal"


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_torn_last_record_is_cut_at_every_byte_and_appends_carry_on(tmp_path, wals,
                                                                           caplog):
    source = tmp_path / "source"
    records = await write_log(wals, source, 30)
    last_location, _, last_payload = records[-1]
    assert last_location.segment_id > 2
    start = last_location.offset
    end = start + record_bytes(last_payload)
    assert os.path.getsize(path_of(source, last_location)) == end
    for cut in range(start, end):
        caplog.clear()
        directory = tmp_path / f"cut-{cut}"
        shutil.copytree(source, directory)
        os.truncate(path_of(directory, last_location), cut)

        wal = wals(directory, segment_bytes_max=SEGMENT_BYTES_MAX, sync=False)
        with caplog.at_level(logging.WARNING, logger="warrenmq.store"):
            assert list(wal.open()) == records[:-1]
        if cut == start:
            assert warnings(caplog) == []  # a clean end, nothing torn
        else:
            [message] = warnings(caplog)
            name = path_of(directory, last_location).name
            assert f"{name} at offset {start}" in message
            assert f"dropping {cut - start} bytes" in message and "torn" in message
        assert os.path.getsize(path_of(directory, last_location)) == start

        new = wal.append(7, b"after the tear")
        assert new == last_location
        await wal.wait_durable()
        assert wal.read(new) == (7, b"after the tear")
        wal.close()
        reopened = wals(directory, segment_bytes_max=SEGMENT_BYTES_MAX, sync=False)
        assert list(reopened.open()) == [*records[:-1], (new, 7, b"after the tear")]
        reopened.close()
        shutil.rmtree(directory)


# Byte positions inside a record: its length field, checksum, kind and payload.
@pytest.mark.parametrize("byte, bit", [(0, 7), (3, 0), (5, 3), (8, 1), (9, 0), (40, 6)])
async def test_a_flipped_bit_keeps_what_comes_before_and_drops_the_rest(tmp_path, wals, caplog,
                                                                        byte, bit):
    records = await write_log(wals, tmp_path, 60)
    segments = sorted({location.segment_id for location, _, _ in records})
    assert len(segments) >= 5
    # the middle record of the middle segment
    in_middle = [i for i, (loc, _, _) in enumerate(records) if loc.segment_id == segments[2]]
    victim = in_middle[len(in_middle) // 2]
    location = records[victim][0]
    path = path_of(tmp_path, location)
    size_before = os.path.getsize(path)
    later_sizes = {s: os.path.getsize(tmp_path / f"{s:08d}.wal") for s in segments[3:]}
    with open(path, "r+b") as f:
        f.seek(location.offset + byte)
        value = f.read(1)[0]
        f.seek(location.offset + byte)
        f.write(bytes([value ^ (1 << bit)]))

    wal = wals(tmp_path, segment_bytes_max=SEGMENT_BYTES_MAX)
    with caplog.at_level(logging.WARNING, logger="warrenmq.store"):
        assert list(wal.open()) == records[:victim]
    messages = warnings(caplog)
    assert f"{path.name} at offset {location.offset}" in messages[0]
    assert f"truncating it to {location.offset} bytes" in messages[0]
    assert f"dropping {size_before - location.offset} bytes" in messages[0]
    for segment_id, size in later_sizes.items():
        assert any(f"deleting {segment_id:08d}.wal ({size} bytes)" in m for m in messages[1:])
    assert len(messages) == 1 + len(later_sizes)
    assert sorted(os.listdir(tmp_path)) == [f"{s:08d}.wal" for s in segments[:3]]

    assert wal.segment_ids() == segments[:3]
    assert wal.append(1, b"next") == location
    for loc, kind, payload in records[:victim]:
        assert wal.read(loc) == (kind, payload)
    await wal.wait_durable()


async def test_a_missing_segment_drops_the_segments_after_it(tmp_path, wals, caplog):
    records = await write_log(wals, tmp_path, 40)
    assert records[-1][0].segment_id >= 4
    os.unlink(tmp_path / "00000002.wal")
    wal = wals(tmp_path, segment_bytes_max=SEGMENT_BYTES_MAX)
    with caplog.at_level(logging.WARNING, logger="warrenmq.store"):
        recovered = list(wal.open())
    assert recovered == [r for r in records if r[0].segment_id == 1]
    assert "00000002.wal is missing" in warnings(caplog)[0]
    assert os.listdir(tmp_path) == ["00000001.wal"]


async def test_an_empty_last_segment_is_a_clean_end(tmp_path, wals, caplog):
    records = await write_log(wals, tmp_path, 20)
    last = records[-1][0].segment_id
    (tmp_path / f"{last + 1:08d}.wal").write_bytes(b"")  # created, crashed before a write
    wal = wals(tmp_path, segment_bytes_max=SEGMENT_BYTES_MAX)
    with caplog.at_level(logging.WARNING, logger="warrenmq.store"):
        assert list(wal.open()) == records
    assert warnings(caplog) == []
    assert wal.append(1, b"x") == Location(last + 1, 0)
    await wal.wait_durable()


async def test_garbage_in_place_of_the_first_record_leaves_an_empty_log(tmp_path, wals, caplog):
    (tmp_path / "00000001.wal").write_bytes(b"\xff" * 100)
    wal = wals(tmp_path)
    with caplog.at_level(logging.WARNING, logger="warrenmq.store"):
        assert list(wal.open()) == []
    assert "dropping 100 bytes" in warnings(caplog)[0]
    assert wal.append(1, b"x") == Location(1, 0)
    await wal.wait_durable()
    wal.close()
    assert [r[2] for r in wals(tmp_path).open()] == [b"x"]


async def test_the_returned_iterator_is_not_disturbed_by_new_appends(tmp_path, wals):
    records = await write_log(wals, tmp_path, 30)
    wal = wals(tmp_path, segment_bytes_max=SEGMENT_BYTES_MAX)
    recovered = wal.open()
    for index in range(30, 60):
        wal.append(1, payload_for(index, 300))
    await wal.wait_durable()
    assert list(recovered) == records
