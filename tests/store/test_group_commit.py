"""Group commit: one fdatasync per batch, batches grow while a sync is in flight, and
durable callbacks fire in order, only after the sync that covers their records."""

from __future__ import annotations

import asyncio
import errno

import pytest

from warrenmq.store import WALError

from .conftest import SlowDiskWAL
from .helpers import payload_for, record_bytes, wait_until


async def test_concurrent_appenders_share_fsyncs(tmp_path, wals):
    wal = wals(tmp_path, cls=SlowDiskWAL)  # every fdatasync takes 20 ms more
    list(wal.open())
    appenders, rounds = 100, 5

    async def appender(task: int) -> None:
        for round_ in range(rounds):
            payload = payload_for(task * rounds + round_, 1024)
            location = wal.append(1, payload)
            await wal.wait_durable()
            assert wal.synced_up_to(location, record_bytes(payload))

    await asyncio.wait_for(asyncio.gather(*(appender(t) for t in range(appenders))), 30)
    records = appenders * rounds
    assert wal.stats.records == records
    assert wal.stats.fsyncs == wal.stats.batches  # one segment: one fdatasync per batch
    # 100 appenders wait on each sync together: about `rounds` (plus a few) syncs, not 500
    assert wal.stats.fsyncs * 10 <= records, wal.stats


async def test_a_batch_grows_while_a_sync_is_in_flight(tmp_path, wals):
    wal = wals(tmp_path, cls=SlowDiskWAL)
    wal.fsync_delay_s = 0.2
    list(wal.open())
    wal.append(1, b"first")
    # the writer has the first record and is syncing it
    await wait_until(lambda: wal.syncs_started > 0, what="the first sync")
    for index in range(500):  # all of these arrive while that sync is in flight
        wal.append(2, payload_for(index, 100))
    await asyncio.wait_for(wal.wait_durable(), 10)
    assert (wal.stats.batches, wal.stats.fsyncs, wal.stats.records) == (2, 2, 501)


async def test_callbacks_fire_in_order_and_only_after_their_sync(tmp_path, wals):
    wal = wals(tmp_path, cls=SlowDiskWAL, segment_bytes_max=64 * 1024)
    wal.fsync_delay_s = 0.005
    list(wal.open())
    fired: list[int] = []
    violations: list[int] = []
    registered: list[int] = []
    counter = iter(range(10**9))

    async def appender(task: int) -> None:
        for _ in range(20):
            index = next(counter)
            payload = payload_for(index, 3000)
            location = wal.append(index % 256, payload)
            size = record_bytes(payload)

            def done(error, index=index, location=location, size=size):
                if error is not None or not wal.synced_up_to(location, size):
                    violations.append(index)
                fired.append(index)

            wal.on_durable(done)
            registered.append(index)
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(*(appender(t) for t in range(30))), 30)
    await asyncio.wait_for(wal.wait_durable(), 10)
    assert fired == registered and len(fired) == 600
    assert violations == []
    assert len(wal.segment_ids()) > 3  # rotations happened along the way


async def test_a_callback_registered_with_nothing_pending_still_runs_later(tmp_path, wals):
    wal = wals(tmp_path)
    list(wal.open())
    fired = []
    wal.on_durable(fired.append)
    assert fired == []  # never from inside on_durable
    await asyncio.sleep(0)
    assert fired == [None]


async def test_a_failing_callback_does_not_stop_the_others(tmp_path, wals):
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        wal = wals(tmp_path)
        list(wal.open())
        wal.append(1, b"x")
        wal.on_durable(lambda error: 1 / 0)
        await asyncio.wait_for(wal.wait_durable(), 10)
        assert isinstance(reported[0]["exception"], ZeroDivisionError)
    finally:
        loop.set_exception_handler(None)


class FailingDiskWAL(SlowDiskWAL):
    """A disk whose second data sync fails with EIO (after which nothing is trustworthy)."""

    fsync_delay_s = 0.05

    def _fdatasync(self, fd: int) -> None:
        if len(self.synced) == 1:
            raise OSError(errno.EIO, "Input/output error")
        super()._fdatasync(fd)


async def test_an_io_error_fails_every_waiter_and_every_later_append(tmp_path, wals, caplog):
    wal = wals(tmp_path, cls=FailingDiskWAL)
    list(wal.open())
    wal.append(1, b"synced")
    first = asyncio.ensure_future(wal.wait_durable())
    await wait_until(lambda: wal.syncs_started > 0, what="the first sync")  # now syncing it
    wal.append(1, b"lost")
    results = []
    wal.on_durable(results.append)
    await asyncio.wait_for(first, 10)
    with pytest.raises(WALError, match="Input/output error"):
        await asyncio.wait_for(wal.wait_durable(), 10)
    assert len(results) == 1 and isinstance(results[0], WALError)
    with pytest.raises(WALError, match="failed"):
        wal.append(1, b"refused")
    late = []
    wal.on_durable(late.append)
    await asyncio.sleep(0)
    assert isinstance(late[0], WALError)
    with pytest.raises(WALError, match="failed"):
        wal.close()
    assert "writer failed" in caplog.text
