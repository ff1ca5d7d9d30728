"""A cluster of RaftHosts in one event loop for the replication tests: real WALs in a
temporary directory, the in-memory network, and per host a recording state machine per
group (the applied (index, data) list), so tests compare what each node applied."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from warrenmq.raft import RaftConfig
from warrenmq.replication import MemoryNetwork, MemoryTransport, RaftHost
from warrenmq.replication.host import SENT_BEFORE_DURABLE
from warrenmq.replication.transport import Batch
from warrenmq.store.wal import WAL

TICK_S = 0.01
CONFIG = RaftConfig(election_tick=10, heartbeat_tick=1)
DEADLINE_S = 10.0


class TurnTransport(MemoryTransport):
    """Records (sender turn, peer) for every batch, to show batching per loop turn."""

    def __init__(self, network: MemoryNetwork, node_id: int) -> None:
        network.transport(node_id)  # registers the endpoint
        super().__init__(network, node_id)
        self.host: RaftHost | None = None
        # ((turn, pass while persisting), peer, message count)
        self.sent: list[tuple[tuple[int, int], int, int]] = []
        # batches carrying replies (anything but a leader's appends, heartbeats, snapshots)
        # sent while records they may acknowledge (entries, term, vote) were not yet durable
        self.unpersisted_sends = 0
        self.early_sends = 0  # a leader's messages sent while its own write was in flight

    def send(self, peer_node: int, batch: Batch) -> None:
        assert self.host is not None
        stats = self.host.stats
        self.sent.append(((stats.turns, stats.passes), peer_node, len(batch.messages)))
        wal = self.host.wal
        # Persist-before-send, for replies: what they acknowledge is durable by now. A
        # leader's own messages may leave earlier (Raft thesis 10.2.1).
        replies = [m for _, m in batch.messages if m.type not in SENT_BEFORE_DURABLE]
        if replies and wal._durable < self.host.must_be_durable:
            self.unpersisted_sends += 1
        elif batch.messages and wal._durable < wal.appended:
            self.early_sends += 1
        super().send(peer_node, batch)


class Cluster:
    def __init__(self, root: Path, node_ids: tuple[int, ...] = (1, 2, 3), seed: int = 1):
        self.root = root
        self.node_ids = node_ids
        self.seed = seed
        self.net = MemoryNetwork()
        self.hosts: dict[int, RaftHost] = {}
        self.wals: dict[int, WAL] = {}
        self.transports: dict[int, TurnTransport] = {}
        self.applied: dict[int, dict[str, list[tuple[int, bytes]]]] = {}
        self.groups: dict[str, tuple[int, ...]] = {}
        self.boots = 0

    async def start_host(self, node_id: int) -> RaftHost:
        """Start (or restart) `node_id` from its WAL directory, re-adding every group."""
        self.boots += 1
        wal = WAL(self.root / f"node{node_id}")
        recovered = list(wal.open())
        transport = TurnTransport(self.net, node_id)
        host = RaftHost(
            node_id,
            wal,
            transport,
            tick_interval_s=TICK_S,
            config=CONFIG,
            rng=random.Random(self.seed * 1000 + node_id * 10 + self.boots),
            peers=self.node_ids,
        )
        transport.host = host
        host.recover(recovered)
        self.hosts[node_id], self.wals[node_id] = host, wal
        self.transports[node_id] = transport
        self.applied[node_id] = {}
        for group_id, voters in self.groups.items():
            self._add(node_id, group_id, voters)
        await host.start()
        return host

    def _add(self, node_id: int, group_id: str, voters: tuple[int, ...]) -> None:
        applied = self.applied[node_id].setdefault(group_id, [])

        def apply(index: int, data: bytes) -> int:
            applied.append((index, data))
            return index

        self.hosts[node_id].add_group(group_id, voters, apply)

    def add_group(self, group_id: str, voters: tuple[int, ...] | None = None) -> None:
        voters = voters or self.node_ids
        self.groups[group_id] = voters
        for node_id in voters:
            if node_id in self.hosts:
                self._add(node_id, group_id, voters)

    async def start(self) -> None:
        for node_id in self.node_ids:
            await self.start_host(node_id)

    async def stop_host(self, node_id: int) -> None:
        host = self.hosts.pop(node_id)
        await host.stop()
        self.wals.pop(node_id).close()

    async def close(self) -> None:
        for node_id in list(self.hosts):
            await self.stop_host(node_id)

    def data(self, node_id: int, group_id: str) -> list[bytes]:
        return [d for _, d in self.applied[node_id][group_id]]

    async def elect(self, group_id: str, node_id: int) -> None:
        self.hosts[node_id].campaign(group_id)
        await wait_for(
            lambda: all(h.leader(group_id) == node_id for h in self.hosts.values()),
            f"node {node_id} leads {group_id} on every host",
        )

    def leader_of(self, group_id: str) -> int:
        """The leader every running host agrees on, or 0."""
        leaders = {h.leader(group_id) for h in self.hosts.values()}
        if len(leaders) == 1:
            (leader,) = leaders
            if leader in self.hosts:
                return leader
        return 0


async def wait_for(cond: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll `cond` until true; fail with `what` after `deadline_s`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for: {what}")
        await asyncio.sleep(TICK_S)
