"""`RaftHost.compact` and the WAL: once every group has compacted, the segments before the
lowest compaction location can be deleted, and a host restarted from what is left has
every group's state intact, and goes on serving."""

from __future__ import annotations

import asyncio
import time

import pytest

from warrenmq.replication import HostStopped, RaftHost, UnknownGroup
from warrenmq.store.segments import list_segments
from warrenmq.store.wal import WAL

from .support import RaftNode, wait_until

IDS = {1: "n1@test"}
SEGMENT_BYTES = 8 * 1024


@pytest.fixture
async def node(tmp_path):
    n = RaftNode(tmp_path, 1, {}, IDS, segment_bytes_max=SEGMENT_BYTES)
    yield n
    await n.stop()


def host_of(node: RaftNode) -> RaftHost:
    assert node.host is not None
    return node.host


async def test_compaction_lets_old_segments_go_and_a_restart_restores_every_group(
        node: RaftNode, tmp_path) -> None:
    await node.start()
    for gid in ("g1", "g2", "gone"):
        node.add_group(gid, {1})
    await node.run()
    host = host_of(node)
    futures = []
    for i in range(150):
        for gid in ("g1", "g2", "gone"):
            futures.append(host.propose(gid, b"%s-%04d-" % (gid.encode(), i) + b"p" * 80))
    await asyncio.wait_for(asyncio.gather(*futures), 20)
    assert node.wal is not None and len(node.wal.segment_ids()) > 4

    loc1 = await asyncio.wait_for(host.compact("g1", node.machines["g1"].image()), 10)
    await asyncio.wait_for(host.propose("g1", b"g1-after"), 10)
    loc2 = await asyncio.wait_for(host.compact("g2", node.machines["g2"].image()), 10)
    await asyncio.wait_for(host.propose("g2", b"g2-after"), 10)
    host.remove_group("gone")  # a removed group pins nothing
    status = host.status("g1")
    assert status["snapshot_index"] == status["applied_index"] - 1  # the one after it
    assert host.group("g1").log.first_index() == status["snapshot_index"] + 1  # compacted

    floor = min(loc1.segment_id, loc2.segment_id)
    assert floor > 2
    node.wal.delete_segments_before(floor)
    wal_dir = tmp_path / "node1"
    await wait_until(lambda: min(list_segments(wal_dir)) == floor, "old segments deleted")

    want = {gid: list(node.data(gid)) for gid in ("g1", "g2")}
    assert len(want["g1"]) == 151 and want["g1"][-1] == b"g1-after"
    snap_index = {gid: host.status(gid)["snapshot_index"] for gid in ("g1", "g2")}
    await node.stop()

    await node.start()
    host = host_of(node)
    assert host.recovered_groups() == ["g1", "g2"]
    for gid in ("g1", "g2"):
        node.add_group(gid, {1})
    await node.run()
    for gid in ("g1", "g2"):
        # Restored from its snapshot, then the committed entries after it replayed.
        assert node.machines[gid].restores == [snap_index[gid]]
        await wait_until(lambda gid=gid: node.data(gid) == want[gid], f"{gid} intact")
    assert await asyncio.wait_for(host.propose("g1", b"next"), 10) > 0
    assert node.data("g1")[-1] == b"next"


class SlowDiskWAL(WAL):
    """A real WAL on a disk whose every sync takes 5 ms: appends pile up while the host
    waits for durability, which is when a compaction must not lose them."""

    def _fdatasync(self, fd: int) -> None:
        time.sleep(0.005)
        super()._fdatasync(fd)


async def test_compaction_amid_proposals_in_flight_loses_nothing(tmp_path) -> None:
    node = RaftNode(tmp_path, 1, {}, IDS, segment_bytes_max=SEGMENT_BYTES,
                    wal_class=SlowDiskWAL)
    try:
        await _compaction_amid_proposals(node)
    finally:
        await node.stop()


async def _compaction_amid_proposals(node: RaftNode) -> None:
    await node.start()
    node.add_group("g", {1})
    await node.run()
    host = host_of(node)
    items = [b"item-%04d-" % i + b"q" * 60 for i in range(300)]
    futures: list[asyncio.Future[object]] = []

    async def produce() -> None:
        for item in items:
            futures.append(host.propose("g", item))
            await asyncio.sleep(0.001)  # a steady stream, so turns keep overlapping it

    producer = asyncio.create_task(produce())
    await wait_until(lambda: len(node.data("g")) >= 100, "a hundred applied")
    wal = node.wal
    assert wal is not None
    # Entries of a turn are on their way to the disk (appended, not yet durable) ...
    await wait_until(lambda: wal._durable < wal._appended, "a WAL batch in flight")
    # ... when the compaction is asked for (the image and the applied index agree here).
    loc = await asyncio.wait_for(host.compact("g", node.machines["g"].image()), 10)
    await asyncio.wait_for(producer, 20)
    await asyncio.wait_for(asyncio.gather(*futures), 20)
    assert node.data("g") == items
    assert node.wal is not None
    node.wal.delete_segments_before(loc.segment_id)
    await node.stop()

    await node.start()
    node.add_group("g", {1})
    await node.run()
    await wait_until(lambda: node.data("g") == items, "every item back after the restart")


async def test_compact_refuses_unknown_groups_and_a_stopped_host(node: RaftNode) -> None:
    await node.start()
    node.add_group("g", {1})
    await node.run()
    host = host_of(node)
    with pytest.raises(UnknownGroup):
        await host.compact("nope", b"")
    await host.stop()
    with pytest.raises(HostStopped):
        await host.compact("g", b"x")
