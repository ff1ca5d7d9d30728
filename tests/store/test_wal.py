"""The WAL's API on a real directory: round trips, reads, deleting segments, bad input."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from warrenmq.store import WAL, Location, WALError

from .conftest import SlowDiskWAL
from .helpers import payload_for, record_bytes, wait_until


def segment_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".wal"))


async def test_many_records_round_trip_across_several_segments(tmp_path, wals):
    wal = wals(tmp_path, segment_bytes_max=16 * 1024)
    assert list(wal.open()) == []
    rng = random.Random(1)
    expected = []
    for index in range(600):
        payload = payload_for(index)
        kind = rng.randrange(256)
        as_view = index % 3 == 0
        location = wal.append(kind, memoryview(payload) if as_view else payload)
        expected.append((location, kind, payload))
    big = os.urandom(40 * 1024)  # one record larger than a segment gets a segment to itself
    expected.append((wal.append(9, bytearray(big)), 9, big))
    expected.append((wal.append(0, b""), 0, b""))
    await wal.wait_durable()
    locations = [location for location, _, _ in expected]
    assert locations == sorted(set(locations)), "locations strictly increase"
    assert expected[-2][0].offset == 0 and expected[-1][0].offset == 0
    for location, kind, payload in expected:
        assert wal.read(location) == (kind, payload)
    assert wal.stats.records == len(expected)
    ids = wal.segment_ids()
    assert len(ids) > 5 and ids == list(range(1, len(ids) + 1))
    assert wal.current_segment() == ids[-1]
    wal.close()

    files = segment_files(tmp_path)
    assert files == [f"{i:08d}.wal" for i in ids]
    for name in files[:-2]:
        assert os.path.getsize(tmp_path / name) <= 16 * 1024

    reopened = wals(tmp_path, segment_bytes_max=16 * 1024)
    assert list(reopened.open()) == expected
    for location, kind, payload in expected:
        assert reopened.read(location) == (kind, payload)
    after = reopened.append(5, b"after reopen")
    assert after > locations[-1]
    await reopened.wait_durable()
    reopened.close()
    assert list(wals(tmp_path).open())[-1] == (after, 5, b"after reopen")


async def test_append_many_returns_one_location_per_record_in_order(tmp_path, wals):
    wal = wals(tmp_path, segment_bytes_max=100)
    list(wal.open())
    records = [(i, bytes([i]) * 40) for i in range(10)]
    locations = wal.append_many(records)
    assert len(locations) == 10 and locations == sorted(locations)
    assert wal.append_many([]) == []
    await wal.wait_durable()
    assert [wal.read(location) for location in locations] == records
    with pytest.raises(ValueError):
        wal.append_many([(1, b"ok"), (300, b"bad kind")])
    assert wal.stats.records == 10 and wal.current_segment() == locations[-1].segment_id


async def test_a_record_not_yet_written_is_read_from_memory(tmp_path, wals):
    wal = wals(tmp_path, cls=SlowDiskWAL)
    wal.fsync_delay_s = 0.3
    list(wal.open())
    first = wal.append(1, b"first")
    # the writer took `first` and now sits in its slow fsync
    await wait_until(lambda: wal.syncs_started > 0, what="the first sync")
    second = wal.append(2, memoryview(b"second"))
    assert wal.read(second) == (2, b"second")  # pending: served from memory
    assert wal.read(first) == (1, b"first")  # written, not yet synced: from the file
    await wal.wait_durable()
    assert wal.read(second) == (2, b"second")


async def test_read_of_a_location_without_a_record_is_an_error(tmp_path, wals):
    wal = wals(tmp_path)
    list(wal.open())
    location = wal.append(1, b"0123456789")
    await wal.wait_durable()
    with pytest.raises(WALError, match="no segment"):
        wal.read(Location(7, 0))
    with pytest.raises(WALError, match="no record"):
        wal.read(Location(1, 19))
    with pytest.raises(WALError, match="no record"):
        wal.read(Location(1, -1))
    with pytest.raises(WALError):
        wal.read(Location(location.segment_id, location.offset + 1))


async def test_deleting_old_segments_removes_their_files_and_records(tmp_path, wals):
    wal = wals(tmp_path, segment_bytes_max=1000)
    list(wal.open())
    locations = [wal.append(1, payload_for(i, 300)) for i in range(40)]
    await wal.wait_durable()
    current = wal.current_segment()
    assert current > 4
    with pytest.raises(ValueError, match="current segment"):
        wal.delete_segments_before(current + 1)
    wal.delete_segments_before(4)
    assert wal.segment_ids() == list(range(4, current + 1))
    doomed = [loc for loc in locations if loc.segment_id < 4]
    with pytest.raises(WALError, match="no segment"):
        wal.read(doomed[0])
    kept = [(loc, 1, payload_for(i, 300)) for i, loc in enumerate(locations)
            if loc.segment_id >= 4]
    wal.delete_segments_before(2)  # already gone: nothing to do
    wal.close()  # the writer unlinks in order with the writes; close waits for it
    assert segment_files(tmp_path) == [f"{i:08d}.wal" for i in range(4, current + 1)]
    reopened = wals(tmp_path, segment_bytes_max=1000)
    assert list(reopened.open()) == kept
    assert reopened.segment_ids() == list(range(4, current + 1))


async def test_deleting_every_sealed_segment_keeps_the_current_one(tmp_path, wals):
    wal = wals(tmp_path, segment_bytes_max=100)
    list(wal.open())
    for _ in range(10):
        wal.append(1, bytes(50))
    await wal.wait_durable()
    wal.delete_segments_before(wal.current_segment())
    assert wal.segment_ids() == [wal.current_segment()]
    last = wal.append(2, b"still appending")
    await wal.wait_durable()
    wal.close()
    assert segment_files(tmp_path) == [f"{last.segment_id:08d}.wal"]


async def test_sync_false_skips_fsync_but_keeps_everything_else(tmp_path, wals):
    wal = wals(tmp_path, segment_bytes_max=500, sync=False)
    list(wal.open())
    locations = [wal.append(3, payload_for(i, 100)) for i in range(50)]
    await wal.wait_durable()
    assert wal.stats.fsyncs == 0 and wal.stats.dir_fsyncs == 0 and wal.stats.records == 50
    wal.close()
    records = list(wals(tmp_path, sync=False).open())
    assert records == [(loc, 3, payload_for(i, 100)) for i, loc in enumerate(locations)]


async def test_bad_input_is_refused_with_a_clear_error(tmp_path, wals):
    wal = wals(tmp_path)
    with pytest.raises(WALError, match="not open"):
        wal.on_durable(lambda error: None)
    with pytest.raises(WALError, match="new, cannot append"):
        wal.append(1, b"x")
    list(wal.open())
    with pytest.raises(WALError, match="already open"):
        wal.open()
    for kind in (-1, 256, "1", 1.0, True):
        with pytest.raises(ValueError, match="kind must be an int 0-255"):
            wal.append(kind, b"x")
    with pytest.raises(TypeError, match="payload must be bytes"):
        wal.append(1, "text")
    assert wal.stats.records == 0 and wal.append(1, b"x") == Location(1, 0)
    wal.close()
    wal.close()  # idempotent
    with pytest.raises(WALError, match="closed, cannot append"):
        wal.append(1, b"x")
    with pytest.raises(WALError, match="closed, cannot read"):
        wal.read(Location(1, 0))
    with pytest.raises(ValueError, match="segment_bytes_max"):
        WAL(tmp_path, segment_bytes_max=8)


def test_open_needs_an_event_loop(tmp_path, wals):
    wal = wals(tmp_path)
    with pytest.raises(WALError, match="running event loop"):
        wal.open()


def test_a_loop_can_be_given_explicitly(tmp_path, wals):
    loop = asyncio.new_event_loop()
    try:
        wal = wals(tmp_path / "wal", loop=loop)
        list(wal.open())
        wal.append(1, b"from a loop that is not running yet")
        loop.run_until_complete(asyncio.wait_for(wal.wait_durable(), 10))
        wal.close()
        reopened = wals(tmp_path / "wal", loop=loop)
        assert [r[2] for r in reopened.open()] == [b"from a loop that is not running yet"]
        reopened.close()
    finally:
        loop.close()


async def test_foreign_files_in_the_directory_are_left_alone(tmp_path, wals):
    (tmp_path / "notes.txt").write_bytes(b"x")
    (tmp_path / "1.wal").write_bytes(b"not a segment name")
    wal = wals(tmp_path)
    assert list(wal.open()) == []
    location = wal.append(1, b"a")
    await wal.wait_durable()
    wal.close()
    assert location == Location(1, 0)
    assert sorted(os.listdir(tmp_path)) == ["00000001.wal", "1.wal", "notes.txt"]


async def test_close_fires_the_callbacks_still_waiting(tmp_path, wals):
    wal = wals(tmp_path, cls=SlowDiskWAL)
    list(wal.open())
    fired = []
    for i in range(5):
        wal.append(1, bytes([i]))
        wal.on_durable(lambda error, i=i: fired.append((i, error)))
    wal.close()
    assert fired == [(i, None) for i in range(5)]
    assert record_bytes(b"x") * 5 == wal.stats.bytes
