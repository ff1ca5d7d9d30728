"""RaftHost: three hosts in one event loop over the in-memory network, each with a real
WAL in a temporary directory. Elections are started explicitly (`campaign`) wherever a
test needs a known leader, so the scenarios do not depend on timing luck."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from warrenmq.raft import NotLeader
from warrenmq.replication import LeadershipLost, UnknownGroup
from warrenmq.store.wal import WAL

from .cluster import Cluster, wait_for


@pytest.fixture
async def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    await c.close()


async def test_a_group_elects_a_leader_and_commits(cluster: Cluster) -> None:
    cluster.add_group("q1")
    await cluster.start()
    # No campaign: the election timeout alone must produce a leader.
    await wait_for(lambda: cluster.leader_of("q1"), "a leader for q1")
    leader = cluster.leader_of("q1")
    results = await asyncio.wait_for(
        asyncio.gather(*(cluster.hosts[leader].propose("q1", b"m%d" % i) for i in range(20))),
        10,
    )
    # The future carries apply's result (the entry's index), in proposal order.
    assert results == sorted(results) and len(set(results)) == 20
    want = [b"m%d" % i for i in range(20)]
    await wait_for(
        lambda: all(cluster.data(n, "q1") == want for n in cluster.node_ids),
        "every node applied the 20 commands in order",
    )


async def test_a_follower_refuses_a_proposal_naming_the_leader(cluster: Cluster) -> None:
    cluster.add_group("q1")
    await cluster.start()
    await cluster.elect("q1", 2)
    with pytest.raises(NotLeader) as info:
        await asyncio.wait_for(cluster.hosts[1].propose("q1", b"x"), 5)
    assert info.value.leader_id == 2
    with pytest.raises(UnknownGroup):
        await cluster.hosts[1].propose("nope", b"x")
    with pytest.raises(ValueError):
        await cluster.hosts[2].propose("q1", b"")


async def test_fifty_groups_share_one_batch_per_peer_per_turn(cluster: Cluster) -> None:
    groups = [f"q{i}" for i in range(50)]
    for g in groups:
        cluster.add_group(g)
    await cluster.start()
    leader = cluster.hosts[1]
    for g in groups:
        leader.campaign(g)
    await wait_for(
        lambda: all(h.leader(g) == 1 for h in cluster.hosts.values() for g in groups),
        "node 1 leads all 50 groups",
    )
    sent = cluster.transports[1].sent
    start = len(sent)
    futures = [leader.propose(g, f"{g}-{i}".encode()) for i in range(4) for g in groups]
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    burst = sent[start:]
    per_turn_peer = Counter((turn, peer) for turn, peer, _ in burst)
    # never two batches to one peer in one turn (or one pass while a turn waits for the disk)
    assert max(per_turn_peer.values()) == 1
    messages = sum(n for _, _, n in burst)
    # 200 proposals in 50 groups to 2 followers: hundreds of messages, a few batches each.
    assert messages >= 2 * 50
    assert len(burst) * 10 <= messages, (len(burst), messages)
    for n in cluster.node_ids:
        await wait_for(
            lambda n=n: all(len(cluster.data(n, g)) == 4 for g in groups),
            f"node {n} applied 4 commands in each of the 50 groups",
        )
    # Persist-before-send for replies, with the Readys of many groups in each WAL batch; the
    # leader's appends went out while its own writes were in flight.
    assert leader.stats.records > 2 * leader.stats.wal_batches
    assert all(t.unpersisted_sends == 0 for t in cluster.transports.values())
    assert cluster.transports[1].early_sends > 0


class HeldFsync:
    """A real WAL whose fsyncs wait until `release` is set (`waiting` says one does)."""

    def __init__(self, wal: WAL) -> None:
        self.release = threading.Event()
        self.waiting = threading.Event()
        real = wal._fdatasync

        def held(fd: int) -> None:
            self.waiting.set()
            self.release.wait(30)
            real(fd)

        wal._fdatasync = held  # type: ignore[method-assign]


async def test_a_leader_waiting_for_its_disk_still_replicates_and_commits(
        cluster: Cluster) -> None:
    """While the leader's turn waits for its own fsync, what arrives meanwhile is stepped and
    its appends leave: a proposal made then reaches the followers, their answers commit it
    (two of three, without the leader's disk), and the followers learn that and apply it.
    Only the leader's own apply waits for its turn to end."""
    cluster.add_group("q1")
    await cluster.start()
    await cluster.elect("q1", 1)
    leader = cluster.hosts[1]
    held = HeldFsync(cluster.wals[1])
    try:
        first = leader.propose("q1", b"first")
        await wait_for(held.waiting.is_set, "the leader's turn waits for its disk")
        second = leader.propose("q1", b"second")  # made while that turn waits
        await wait_for(
            lambda: all(cluster.data(n, "q1") == [b"first", b"second"] for n in (2, 3)),
            "both followers applied both commands while the leader's fsync was held",
        )
        assert not first.done() and not second.done()
        assert cluster.data(1, "q1") == []
        assert leader.stats.passes > 0
    finally:
        held.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert cluster.data(1, "q1") == [b"first", b"second"]
    # Replies still waited for the disk: nothing was acknowledged before it was durable.
    assert all(t.unpersisted_sends == 0 for t in cluster.transports.values())


async def test_a_follower_waiting_for_its_disk_writes_what_arrives_meanwhile(
        cluster: Cluster) -> None:
    """A follower whose turn waits for its fsync writes an append that arrives meanwhile at
    once (it joins the next fsync instead of waiting for the turn to end), and answers it
    only once that is durable. What it wrote so is in its log after a restart."""
    cluster.add_group("q1")
    await cluster.start()
    await cluster.elect("q1", 1)
    leader, wal = cluster.hosts[1], cluster.wals[2]
    held = HeldFsync(wal)
    try:
        first = leader.propose("q1", b"first")
        await wait_for(held.waiting.is_set, "node 2's turn waits for its disk")
        appended = wal.appended
        second = leader.propose("q1", b"second")
        await wait_for(lambda: wal.appended > appended,
                       "node 2 wrote the second entry while its fsync was held")
        # the leader and node 3 are a majority without node 2
        assert await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert cluster.data(2, "q1") == []
    finally:
        held.release.set()
    await wait_for(lambda: cluster.data(2, "q1") == [b"first", b"second"],
                   "node 2 applied both once its disk answered")
    assert all(t.unpersisted_sends == 0 for t in cluster.transports.values())
    await cluster.stop_host(2)
    await cluster.start_host(2)
    await wait_for(lambda: cluster.data(2, "q1") == [b"first", b"second"],
                   "node 2 has both after a restart from its WAL")


async def test_idle_groups_are_not_ticked(cluster: Cluster) -> None:
    groups = [f"q{i}" for i in range(20)]
    for g in groups:
        cluster.add_group(g)
    await cluster.start()
    for g in groups:
        cluster.hosts[1].campaign(g)
    await wait_for(
        lambda: all(h.leader(g) == 1 for h in cluster.hosts.values() for g in groups),
        "node 1 leads all 20 groups",
    )
    await asyncio.wait_for(asyncio.gather(*[cluster.hosts[1].propose(g, b"x") for g in groups]), 10)
    await wait_for(
        lambda: all(h.is_quiet(g) for h in cluster.hosts.values() for g in groups),
        "every group quiet on every host",
    )
    host = cluster.hosts[1]
    ticked, ticks, sent = host.stats.groups_ticked, host.stats.ticks, host.stats.messages_sent
    batches = host.stats.batches_sent
    await wait_for(lambda: host.stats.ticks >= ticks + 30, "30 more ticks")
    assert host.stats.groups_ticked == ticked  # no group ticked while idle
    assert host.stats.messages_sent == sent  # no per-group heartbeat
    # Only the node-level heartbeat: about one (empty) batch per peer per tick.
    new_batches = host.stats.batches_sent - batches
    assert new_batches <= 2 * (host.stats.ticks - ticks) + 2
    # Quiet groups still serve: a proposal wakes its group and commits.
    assert await asyncio.wait_for(host.propose("q3", b"y"), 10) > 0


async def test_leader_loss_then_restart_from_the_wal(cluster: Cluster) -> None:
    cluster.add_group("q1")
    await cluster.start()
    await cluster.elect("q1", 1)
    for i in range(10):
        await asyncio.wait_for(cluster.hosts[1].propose("q1", b"a%d" % i), 10)
    # Let the group go quiet first: the failure detector, not heartbeats, must notice.
    await wait_for(
        lambda: all(h.is_quiet("q1") for h in cluster.hosts.values()), "q1 quiet everywhere"
    )
    await cluster.stop_host(1)
    await wait_for(lambda: cluster.leader_of("q1") in (2, 3), "a new leader among 2 and 3")
    new_leader = cluster.hosts[cluster.leader_of("q1")]
    for i in range(10):
        await asyncio.wait_for(new_leader.propose("q1", b"b%d" % i), 10)
    want = [b"a%d" % i for i in range(10)] + [b"b%d" % i for i in range(10)]
    await wait_for(lambda: cluster.data(2, "q1") == want == cluster.data(3, "q1"), "2, 3 agree")

    host = await cluster.start_host(1)
    assert host.recovered_groups() == []  # consumed by add_group
    term_before = max(cluster.hosts[n].group("q1").term for n in (2, 3))
    await wait_for(lambda: cluster.data(1, "q1") == want, "node 1 replays and catches up")
    # It came back as a follower of the new leader, without deposing it.
    assert cluster.hosts[1].leader("q1") == cluster.leader_of("q1") != 1
    assert cluster.hosts[2].group("q1").term == term_before
    assert await asyncio.wait_for(new_leader.propose("q1", b"c"), 10) > 0
    await wait_for(lambda: cluster.data(1, "q1") == [*want, b"c"], "node 1 follows on")


async def test_restart_of_every_node_recovers_the_log(cluster: Cluster) -> None:
    cluster.add_group("q1")
    cluster.add_group("q2")
    await cluster.start()
    await cluster.elect("q1", 1)
    await cluster.elect("q2", 3)
    await asyncio.wait_for(cluster.hosts[1].propose("q1", b"one"), 10)
    await asyncio.wait_for(cluster.hosts[3].propose("q2", b"two"), 10)
    await wait_for(lambda: all(cluster.data(n, "q2") == [b"two"] for n in (1, 2, 3)), "q2 on all")
    terms = {n: cluster.hosts[n].group("q1").term for n in cluster.node_ids}
    await cluster.close()
    await cluster.start()
    for n in cluster.node_ids:
        # The committed log is re-applied from the WAL before any new leader exists.
        await wait_for(lambda n=n: cluster.data(n, "q1") == [b"one"], f"q1 replayed on {n}")
        await wait_for(lambda n=n: cluster.data(n, "q2") == [b"two"], f"q2 replayed on {n}")
        assert cluster.hosts[n].group("q1").term >= terms[n]
    await wait_for(lambda: cluster.leader_of("q1"), "q1 elects again")
    assert await asyncio.wait_for(
        cluster.hosts[cluster.leader_of("q1")].propose("q1", b"after"), 10
    )


async def test_a_partitioned_minority_leader_cannot_commit(cluster: Cluster) -> None:
    cluster.add_group("q1")
    await cluster.start()
    await cluster.elect("q1", 1)
    await asyncio.wait_for(cluster.hosts[1].propose("q1", b"before"), 10)
    cluster.net.isolate(1)
    stranded = cluster.hosts[1].propose("q1", b"stranded")
    # The old leader never applies it; check-quorum makes it step down and fail the future.
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(stranded, 10)
    assert b"stranded" not in cluster.data(1, "q1")
    await wait_for(
        lambda: (
            cluster.hosts[2].leader("q1") in (2, 3)
            and cluster.hosts[2].leader("q1") == cluster.hosts[3].leader("q1")
        ),
        "the majority elects a leader",
    )
    majority_leader = cluster.hosts[cluster.hosts[2].leader("q1")]
    await asyncio.wait_for(majority_leader.propose("q1", b"majority"), 10)
    with pytest.raises(NotLeader):
        await cluster.hosts[1].propose("q1", b"refused")
    cluster.net.heal()
    want = [b"before", b"majority"]
    await wait_for(
        lambda: all(cluster.data(n, "q1") == want for n in cluster.node_ids),
        "node 1 converges on the majority's log, its stranded entry dropped",
    )
