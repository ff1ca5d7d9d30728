"""Big Raft snapshots streamed in chunks between two real nodes' ClusterTransports over
loopback links: they arrive whole and byte-identical while the other groups' batches keep
flowing; a resend does not start over, a newer snapshot replaces the one in flight, a lost
link abandons the transfer on both sides; malformed or oversized streams are refused. And
end to end: a new member of a group whose leader compacted its log catches up from a
snapshot many chunks long."""

from __future__ import annotations

import asyncio
import math
import random

import msgpack
import pytest

from warrenmq.cluster import snapshots, wire
from warrenmq.cluster.raft_transport import ClusterTransport
from warrenmq.raft import ConfChangeOp, Message, MessageType, Snapshot
from warrenmq.replication.transport import Batch

from .support import Book, LinkNode, Trio, wait_until

CHUNK = 64 * 1024
INCARNATION = 77
FAST = {"ping_interval_s": 0.2, "dead_after_s": 3.0, "backoff_max_s": 0.2}


class Pair:
    """Nodes a (id 1) and b (id 2) linked both ways, a ClusterTransport on each recording
    what it delivers. a's link buffer is small, so a stream to b is paced by it (one chunk
    in the buffer at a time) and a test can act while the transfer is under way."""

    def __init__(self) -> None:
        book: Book = {}
        self.a = LinkNode("a@test", 1, book, write_buffer_high_bytes=2 * CHUNK, **FAST)
        self.b = LinkNode("b@test", 2, book, **FAST)
        self.ids = {1: self.a.name, 2: self.b.name, 3: "c@test"}
        self.got_a: list[Batch] = []
        self.got_b: list[Batch] = []

    async def start(self) -> None:
        for node in (self.a, self.b):
            await node.start()
        self.ta = ClusterTransport(self.a.links, self.ids.get, chunk_bytes=CHUNK)
        self.tb = ClusterTransport(self.b.links, self.ids.get, chunk_bytes=CHUNK)
        self.ta.bind(1, self.got_a.append)
        self.tb.bind(2, self.got_b.append)
        await self.link()

    async def link(self) -> None:
        self.a.links.connect(self.b.name)
        self.b.links.connect(self.a.name)
        await wait_until(lambda: self.b.name in self.a.links.peers_up()
                         and self.a.name in self.b.links.peers_up(), "a and b linked")

    def snapshots_at_b(self) -> list[Message]:
        return [m for batch in self.got_b for _, m in batch.messages
                if m.type is MessageType.SNAPSHOT]

    async def close(self) -> None:
        for node in (self.a, self.b):
            await node.stop()


@pytest.fixture
async def pair():
    p = Pair()
    await p.start()
    yield p
    await p.close()


def snapshot(index: int, data: bytes, term: int = 3) -> Message:
    return Message(MessageType.SNAPSHOT, 1, 2, term=term,
                   snapshot=Snapshot(index, term, frozenset({1, 2}), data))


def heartbeat(n: int) -> Message:
    return Message(MessageType.HEARTBEAT, 1, 2, term=3, commit=n)


def image(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def batch(*messages: tuple[str, Message]) -> Batch:
    return Batch(1, INCARNATION, messages)


async def test_a_big_snapshot_arrives_whole_while_other_groups_batches_keep_flowing(
        pair: Pair) -> None:
    data = image(4 * 1024 * 1024, seed=1)
    snap = snapshot(40, data)
    pair.ta.send(2, batch(("q1", snap), ("meta", heartbeat(0))))
    assert pair.ta.sender.in_flight() == [(pair.b.name, "q1", 40)]
    sent = 1
    while not pair.snapshots_at_b():
        # the meta group's traffic while q1's snapshot streams, one batch per poll
        assert sent < 1000, "the snapshot never arrived"
        pair.ta.send(2, batch(("meta", heartbeat(sent))))
        sent += 1
        await asyncio.sleep(0.01)
    await wait_until(lambda: len(pair.got_b) == sent + 1, "every batch at b")

    (got,) = pair.snapshots_at_b()
    assert got == snap and got.snapshot is not None and got.snapshot.data == data
    arrival = [g for b in pair.got_b for g, _ in b.messages]
    before = arrival.index("q1")
    assert before >= 5, f"only {before} meta batches arrived before the snapshot was whole"
    assert sorted(m.commit for b in pair.got_b for g, m in b.messages if g == "meta") == \
        list(range(sent))  # none dropped as congested
    delivered = next(b for b in pair.got_b if b.messages[0][0] == "q1")
    assert delivered.from_node == 1 and delivered.incarnation == INCARNATION
    chunks = math.ceil(len(data) / CHUNK)
    sa, sb = pair.ta.stats, pair.tb.stats
    assert sa.snapshot_chunks_sent == sb.snapshot_chunks_received == chunks
    assert sa.snapshot_transfers_started == sa.snapshot_transfers_sent == 1
    assert sb.snapshot_transfers_received == 1
    assert sa.dropped_congested == 0 and sb.dropped_bad == 0
    assert pair.ta.sender.in_flight() == [] and pair.tb.receiver.partial() == []

    # a snapshot within the chunk size goes in its batch as before
    small = snapshot(41, image(CHUNK, seed=2))
    pair.ta.send(2, batch(("q2", small)))
    await wait_until(lambda: len(pair.snapshots_at_b()) == 2, "the small snapshot at b")
    assert pair.snapshots_at_b()[1] == small
    assert sa.snapshot_transfers_started == 1


async def test_a_resend_does_not_start_over_and_a_newer_snapshot_replaces_the_transfer(
        pair: Pair) -> None:
    first = snapshot(10, image(4 * 1024 * 1024, seed=3))
    pair.ta.send(2, batch(("q1", first)))
    await wait_until(lambda: pair.tb.stats.snapshot_chunks_received >= 5, "5 chunks at b")
    pair.ta.send(2, batch(("q1", first)))  # the core's resend timer
    sa, sb = pair.ta.stats, pair.tb.stats
    assert sa.snapshot_transfers_started == 1 and sa.snapshot_resends_ignored == 1
    assert pair.ta.sender.in_flight() == [(pair.b.name, "q1", 10)]

    newer = snapshot(12, image(1024 * 1024, seed=4))
    pair.ta.send(2, batch(("q1", newer)))
    assert pair.ta.sender.in_flight() == [(pair.b.name, "q1", 12)]
    assert sa.snapshot_transfers_started == 2 and sa.snapshot_transfers_abandoned == 1
    await wait_until(lambda: pair.snapshots_at_b(), "a snapshot at b")
    assert pair.snapshots_at_b() == [newer]  # never the partial older one
    assert sb.snapshot_transfers_dropped == 1  # b's partial of index 10, at 12's start
    assert sb.snapshot_transfers_received == 1 and pair.tb.receiver.partial() == []

    # just sent, the peer is still installing it: a resend is not a reason to send again
    pair.ta.send(2, batch(("q1", newer)))
    assert sa.snapshot_resends_ignored == 2 and sa.snapshot_transfers_started == 2
    assert pair.ta.sender.in_flight() == []
    # for longer the bigger it is (a big one takes the peer seconds to write and install)
    sender = pair.ta.sender
    quiet_until = sender._sent[(pair.b.name, "q1")][2]
    left = quiet_until - asyncio.get_running_loop().time()
    extra = len(newer.snapshot.data) * snapshots.RESEND_AFTER_S_PER_BYTE
    assert sender.resend_after_s + extra - 1 < left <= sender.resend_after_s + extra


async def test_a_link_lost_mid_transfer_abandons_it_on_both_sides(pair: Pair) -> None:
    data = image(4 * 1024 * 1024, seed=5)
    pair.ta.send(2, batch(("q1", snapshot(20, data))))
    await wait_until(lambda: pair.tb.stats.snapshot_chunks_received >= 5, "5 chunks at b")
    assert pair.tb.receiver.partial(), "the transfer ended before the link was cut"
    pair.a.links.cut(pair.b.name)
    await wait_until(lambda: pair.ta.sender.in_flight() == [], "a abandons the transfer")
    await wait_until(lambda: pair.tb.receiver.partial() == [], "b drops the partial one")
    assert pair.ta.stats.snapshot_transfers_abandoned == 1
    assert pair.tb.stats.snapshot_transfers_dropped == 1
    assert pair.snapshots_at_b() == []

    pair.a.links.heal(pair.b.name)
    await pair.link()
    again = snapshot(20, data)
    pair.ta.send(2, batch(("q1", again)))  # the resend after a loss is a new transfer
    await wait_until(lambda: pair.snapshots_at_b(), "the snapshot at b")
    assert pair.snapshots_at_b() == [again]
    assert pair.ta.stats.snapshot_transfers_started == 2
    assert pair.tb.stats.snapshot_transfers_received == 1


async def test_oversized_out_of_order_or_misaddressed_streams_are_refused(pair: Pair) -> None:
    sa, sb = pair.ta.stats, pair.tb.stats

    async def settled() -> None:
        """Everything a sent before this is handled at b (one link keeps the order)."""
        n = len(pair.got_b)
        pair.ta.send(2, batch(("meta", heartbeat(n))))
        await wait_until(lambda: len(pair.got_b) == n + 1, "the marker batch at b")

    pair.tb.receiver.bytes_max = 1024 * 1024
    pair.ta.send(2, batch(("q1", snapshot(5, image(2 * 1024 * 1024, seed=6)))))
    await wait_until(lambda: sa.snapshot_transfers_sent == 1, "every chunk sent")
    await settled()
    assert sb.dropped_bad == 1 and sb.snapshot_chunks_received == 0
    assert pair.tb.receiver.partial() == [] and pair.snapshots_at_b() == []

    def chunk(offset: int, data: bytes, from_node: int = 1, to: int = 2) -> list:
        m = Message(MessageType.SNAPSHOT, from_node, to, term=3,
                    snapshot=Snapshot(6, 3, frozenset({1, 2}), b""))
        return wire.chunk_to_wire(from_node, INCARNATION, "q2", wire.snapshot_header(m),
                                  offset, 300, data)

    links, b = pair.a.links, pair.b.name
    assert links.send(b, snapshots.KIND, chunk(0, b"x" * 100))
    assert links.send(b, snapshots.KIND, chunk(200, b"z" * 100))  # skips 100..200
    assert links.send(b, snapshots.KIND, chunk(100, b"y" * 100))  # its transfer is gone
    await settled()
    assert sb.snapshot_chunks_received == 1 and sb.snapshot_transfers_dropped == 1
    assert pair.tb.receiver.partial() == [] and pair.snapshots_at_b() == []

    assert links.send(b, snapshots.KIND, chunk(0, b"x" * 100, from_node=3))  # c's id
    assert links.send(b, snapshots.KIND, chunk(0, b"x" * 100, to=9))  # another node
    assert links.send(b, snapshots.KIND, chunk(0, b"x" * 400))  # overruns its size
    assert links.send(b, snapshots.KIND, [wire.WIRE_VERSION + 1])
    await settled()
    assert sb.dropped_bad == 5 and pair.tb.receiver.partial() == []
    assert pair.snapshots_at_b() == []


def test_a_chunk_survives_the_wire_and_its_header_has_no_data() -> None:
    m = snapshot(9, b"image bytes")
    header = wire.snapshot_header(m)
    obj = wire.chunk_to_wire(1, 5, "q", header, 6, 11, memoryview(b"image bytes")[6:])
    back = wire.chunk_from_wire(msgpack.unpackb(msgpack.packb(obj), raw=False))
    assert back == wire.SnapshotChunk(1, 5, "q", snapshot(9, b""), 6, 11, b"bytes")
    with pytest.raises(wire.WireError, match="SNAPSHOT"):
        wire.chunk_from_wire(wire.chunk_to_wire(1, 5, "q", wire.message_to_wire(heartbeat(1)),
                                                0, 1, b"x"))


async def test_a_new_member_catches_up_from_a_snapshot_many_chunks_long(trio: Trio) -> None:
    await trio.start({"g": {1, 2}})
    chunk_bytes = 8 * 1024
    for node in trio.nodes.values():
        assert node.transport is not None
        node.transport.sender.chunk_bytes = chunk_bytes
    await trio.elect("g", 1, among=(1, 2))
    before = [b"%04d" % i + image(4096, seed=i) for i in range(64)]
    await trio.propose(1, "g", *before)
    await wait_until(lambda: trio.nodes[2].data("g") == before, "2 applied")
    for i in (1, 2):
        img = trio.nodes[i].machines["g"].image()
        assert len(img) > 30 * chunk_bytes
        await asyncio.wait_for(trio.host(i).compact("g", img), 10)
    trio.nodes[3].add_group("g", {1, 2, 3})
    await asyncio.wait_for(trio.host(1).propose_conf_change("g", ConfChangeOp.ADD, 3), 10)
    await wait_until(lambda: trio.nodes[3].data("g") == before, "3 caught up")
    assert trio.nodes[3].machines["g"].restores == [trio.host(1).status("g")["snapshot_index"]]
    s1, s3 = trio.nodes[1].transport.stats, trio.nodes[3].transport.stats
    assert s1.snapshot_transfers_started >= 1 and s3.snapshot_transfers_received >= 1
    assert s3.snapshot_chunks_received > 30
    await trio.propose(1, "g", b"last")
    await wait_until(lambda: all(trio.nodes[i].data("g") == [*before, b"last"] for i in (1, 2, 3)),
                     "everyone applies the next entry")
