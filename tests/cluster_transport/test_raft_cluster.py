"""Three RaftHosts, each with a real WAL in a temporary directory, talking over
ClusterTransport on real loopback links: elections, replication, membership changes that
catch a new member up (by entries, or by snapshot once the log is compacted), isolation of
the leader by cutting its links, and convergence after healing."""

from __future__ import annotations

import asyncio

import pytest

from warrenmq.raft import ConfChangeOp, NotLeader, RaftError
from warrenmq.replication import LeadershipLost, UnknownGroup

from .support import IDS, Trio, wait_until


async def test_three_hosts_elect_and_replicate_over_the_links(trio: Trio) -> None:
    await trio.start({"g": {1, 2, 3}})
    # No campaign: the election timeout alone, over real sockets, produces a leader.
    await wait_until(lambda: trio.leader_of("g"), "a leader for g")
    leader = trio.leader_of("g")
    want = [b"m%d" % i for i in range(50)]
    await trio.propose(leader, "g", *want)
    await wait_until(lambda: all(trio.nodes[i].data("g") == want for i in IDS), "applied")
    for i in IDS:
        stats = trio.nodes[i].transport.stats
        assert stats.batches_sent > 0 and stats.batches_received > 0
        assert stats.dropped_bad == 0 and stats.dropped_unknown_id == 0
    follower = next(i for i in IDS if i != leader)
    with pytest.raises(NotLeader) as info:
        await trio.host(follower).propose("g", b"x")
    assert info.value.leader_id == leader
    status = trio.host(leader).status("g")
    assert status["role"] == "leader" and status["leader_id"] == leader
    assert status["voters"] == [1, 2, 3]
    assert status["commit_index"] == status["applied_index"] == status["last_index"]
    assert status["match_index"] == {i: status["last_index"] for i in IDS}
    fstatus = trio.host(follower).status("g")
    assert fstatus["role"] == "follower" and "match_index" not in fstatus
    assert fstatus["term"] == status["term"]


async def _add_third(trio: Trio, gid: str) -> None:
    """Node 3 joins `gid` (voters 1, 2; led by 1) as the broker would do it."""
    trio.nodes[3].add_group(gid, {1, 2, 3})  # the group's voters once 3 is in, empty log
    voters = await asyncio.wait_for(
        trio.host(1).propose_conf_change(gid, ConfChangeOp.ADD, 3), 10)
    assert voters == frozenset({1, 2, 3})


async def test_an_added_member_catches_up_from_entries_without_disruption(trio: Trio) -> None:
    await trio.start({"g": {1, 2}})
    await trio.elect("g", 1, among=(1, 2))
    before = [b"a%d" % i for i in range(30)]
    await trio.propose(1, "g", *before)
    term = trio.host(1).group("g").term
    assert 3 not in trio.host(1).peers()  # 3 shares no group with 1 yet
    await _add_third(trio, "g")
    assert 3 in trio.host(1).peers()
    await wait_until(lambda: trio.nodes[3].data("g") == before, "3 replayed the log")
    assert trio.nodes[3].machines["g"].restores == []  # by entries, not a snapshot
    after = [b"b%d" % i for i in range(10)]
    await trio.propose(1, "g", *after)
    await wait_until(lambda: all(trio.nodes[i].data("g") == before + after for i in IDS),
                     "all three apply what follows")
    # Nobody was disrupted: same leader, same term everywhere.
    assert trio.leader_of("g") == 1
    assert {trio.host(i).group("g").term for i in IDS} == {term}
    status = trio.host(1).status("g")
    assert status["voters"] == [1, 2, 3]
    await wait_until(lambda: trio.host(1).status("g")["match_index"][3] == status["last_index"],
                     "the leader sees 3 up to date")
    # The group now commits with 3's help: 2 may leave and 1 + 3 still form a majority.
    await trio.nodes[2].stop()
    await trio.propose(1, "g", b"without-2")
    await wait_until(lambda: trio.nodes[3].data("g")[-1] == b"without-2", "3 applies")


async def test_an_added_member_catches_up_from_a_snapshot_after_compaction(trio: Trio) -> None:
    await trio.start({"g": {1, 2}})
    await trio.elect("g", 1, among=(1, 2))
    before = [b"a%d" % i for i in range(40)]
    await trio.propose(1, "g", *before)
    await wait_until(lambda: trio.nodes[2].data("g") == before, "2 applied")
    for i in (1, 2):
        m = trio.nodes[i].machines["g"]
        loc = await asyncio.wait_for(trio.host(i).compact("g", m.image()), 10)
        assert loc.segment_id >= 1
        assert trio.host(i).status("g")["snapshot_index"] == trio.host(i).group("g").applied_index
    more = [b"c%d" % i for i in range(5)]
    await trio.propose(1, "g", *more)
    term = trio.host(1).group("g").term
    await _add_third(trio, "g")
    want = before + more
    await wait_until(lambda: trio.nodes[3].data("g") == want, "3 caught up")
    snap_index = trio.host(1).status("g")["snapshot_index"]
    assert trio.nodes[3].machines["g"].restores == [snap_index]  # the log was gone: a snapshot
    assert trio.host(3).status("g")["voters"] == [1, 2, 3]  # the snapshot's {1, 2} + the change
    assert trio.leader_of("g") == 1 and trio.host(1).group("g").term == term
    await trio.propose(1, "g", b"last")
    await wait_until(lambda: all(trio.nodes[i].data("g") == [*want, b"last"] for i in IDS),
                     "everyone applies the next entry")


async def test_cutting_the_leaders_links_elects_another_and_healing_converges(
        trio: Trio) -> None:
    await trio.start({"g": {1, 2, 3}, "h": {1, 2, 3}})
    await trio.elect("g", 1)
    await trio.elect("h", 2)
    await trio.propose(1, "g", b"before")
    await trio.propose(2, "h", b"h-before")
    old = trio.nodes[1]
    for peer in (2, 3):
        old.links.cut(IDS[peer])
    stranded = trio.host(1).propose("g", b"stranded")
    # Check-quorum: the isolated leader steps down and the proposal's outcome is lost.
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(stranded, 10)
    await wait_until(lambda: trio.leader_of("g", (2, 3)) in (2, 3), "2 and 3 elect a leader")
    new = trio.leader_of("g", (2, 3))
    await trio.propose(new, "g", b"after")
    await trio.propose(2, "h", b"h-after")  # h lost only a follower: it never stopped
    with pytest.raises(NotLeader):
        await trio.host(1).propose("g", b"refused")
    for peer in (2, 3):
        old.links.heal(IDS[peer])
    await wait_until(
        lambda: all(trio.nodes[i].data("g") == [b"before", b"after"] for i in IDS),
        "node 1 converges on the majority's log, its stranded entry dropped",
    )
    await wait_until(lambda: trio.nodes[1].data("h") == [b"h-before", b"h-after"], "h too")
    await wait_until(lambda: trio.leader_of("g") == new, "1 follows the new leader")
    await trio.propose(new, "g", b"again")
    await wait_until(lambda: trio.nodes[1].data("g")[-1] == b"again", "1 follows on")


async def test_transfer_remove_and_the_peer_set_follows_the_voters(trio: Trio) -> None:
    await trio.start({"g": {1, 2, 3}, "solo": {1, 2}})
    await trio.elect("g", 1)
    await trio.elect("solo", 1, among=(1, 2))
    trio.host(1).transfer_leadership("g", 2)
    await wait_until(lambda: trio.leader_of("g") == 2, "leadership passed to 2")
    with pytest.raises(NotLeader):
        trio.host(1).transfer_leadership("g", 3)
    with pytest.raises(RaftError):
        trio.host(1).transfer_leadership("solo", 3)  # 3 is no voter of solo
    await trio.propose(2, "g", b"x")

    # Remove 3 from g, its only group with 1 and 2: they stop sending to it.
    voters = await asyncio.wait_for(trio.host(2).propose_conf_change("g", ConfChangeOp.REMOVE, 3),
                                    10)
    assert voters == frozenset({1, 2})
    await wait_until(lambda: 3 not in trio.host(1).peers() and 3 not in trio.host(2).peers(),
                     "3 left the peer sets of 1 and 2")
    trio.host(3).remove_group("g")  # what the broker does on the removed node
    assert trio.host(3).peers() == frozenset()
    with pytest.raises(UnknownGroup):
        trio.host(3).status("g")
    received = trio.nodes[3].transport.stats.batches_received
    ticks = trio.host(1).stats.ticks
    await wait_until(lambda: trio.host(1).stats.ticks >= ticks + 20, "20 more ticks on 1")
    # At most what was in flight when the change applied; then nothing (no heartbeats).
    assert trio.nodes[3].transport.stats.batches_received <= received + 2
    await trio.propose(2, "g", b"y")
    await wait_until(lambda: trio.nodes[1].data("g") == [b"x", b"y"], "g goes on with 1, 2")

    # A removed group's waiting proposals fail, and a restart does not bring it back.
    fut = trio.host(1).propose("solo", b"z")
    trio.host(1).remove_group("solo")
    with pytest.raises(UnknownGroup):
        await fut
    await trio.nodes[1].stop()
    await trio.nodes[1].start()
    assert trio.host(1).recovered_groups() == ["g"]
    # A recovered group the node no longer wants is dropped without being hosted.
    trio.host(1).remove_group("g")
    assert trio.host(1).recovered_groups() == []
    with pytest.raises(UnknownGroup):
        trio.host(1).remove_group("g")
    await trio.nodes[1].stop()
    await trio.nodes[1].start()
    assert trio.host(1).recovered_groups() == []
