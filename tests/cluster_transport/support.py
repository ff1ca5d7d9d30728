"""Nodes for the cluster-transport tests, all in the test's event loop over real loopback
sockets: a `LinkNode` is a ControlServer on an ephemeral port with PeerLinks plugged into
it; a `RaftNode` adds a real WAL in a temporary directory, a RaftHost and the
ClusterTransport, with a recording state machine per group.

Node names are resolved through an address book (name -> (host, port)) that each node adds
itself to when its server is bound, so nodes can restart on a new ephemeral port."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from warrenmq.cluster.control import CommandError, ControlServer
from warrenmq.cluster.links import PeerLinks
from warrenmq.cluster.raft_transport import ClusterTransport
from warrenmq.raft import RaftConfig, RaftError
from warrenmq.replication import RaftHost
from warrenmq.store.wal import WAL

COOKIE = "TESTCOOKIEABCDEFGHIJ"
DEADLINE_S = 10.0
POLL_S = 0.01
TICK_S = 0.02
RAFT_CONFIG = RaftConfig(election_tick=10, heartbeat_tick=1)

Book = dict[str, tuple[str, int]]


async def wait_until(cond: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll `cond` until true; fail naming `what` after `deadline_s`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out after {deadline_s:g}s waiting for: {what}")
        await asyncio.sleep(POLL_S)


async def eventually(cond: Callable[[], object], deadline_s: float) -> bool:
    """Whether `cond` became true within `deadline_s` (for steps that may be retried)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(POLL_S)
    return True


def free_port() -> int:
    """A loopback port nothing listens on (bound then released: only used to be refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _no_control_commands(cmd: str, args: dict) -> Any:
    raise CommandError(f"this test node serves no control command ({cmd})")


class LinkNode:
    def __init__(self, name: str, node_id: int, book: Book, cookie: str = COOKIE,
                 **link_options: Any) -> None:
        self.name = name
        self.node_id = node_id
        self.book = book
        self.cookie = cookie
        self.link_options = link_options
        self.server: ControlServer | None = None
        self.links: PeerLinks = self._new_links()
        self.port = 0

    def _new_links(self) -> PeerLinks:
        return PeerLinks(self.name, self.node_id, self.cookie, self._resolve,
                         **self.link_options)

    def _resolve(self, name: str) -> tuple[str, int]:
        return self.book[name]

    async def start(self) -> LinkNode:
        self.server = ControlServer(self.name, self.cookie, _no_control_commands)
        self.port = await self.server.start("127.0.0.1", 0)
        self.book[self.name] = ("127.0.0.1", self.port)
        self.server.link_handler = self.links.accept
        await self.links.start()
        return self

    async def stop(self) -> None:
        await self.links.stop()
        if self.server is not None:
            self.server.link_handler = None
            await self.server.close()
            assert self.server.server is not None
            await self.server.server.wait_closed()
            self.server = None

    async def restart(self) -> None:
        """Stop, then start again with fresh links on a new port (a process restart)."""
        await self.stop()
        self.links = self._new_links()
        await self.start()


class Machine:
    """A group's state machine: the list of applied commands; its image is that list."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.restores: list[int] = []  # snapshot indexes restored from

    def apply(self, index: int, data: bytes) -> int:
        self.data.append(data)
        return index

    def restore(self, index: int, image: bytes) -> None:
        self.data = list(msgpack.unpackb(image))
        self.restores.append(index)

    def image(self) -> bytes:
        return msgpack.packb(self.data)


class RaftNode:
    """One node: links, a WAL under `root`, a RaftHost over a ClusterTransport."""

    def __init__(self, root: Path, node_id: int, book: Book, ids: dict[int, str],
                 seed: int = 1, segment_bytes_max: int = 1 << 20,
                 wal_class: type[WAL] = WAL) -> None:
        self.root = root
        self.node_id = node_id
        self.ids = ids
        self.name = ids[node_id]
        self.seed = seed
        self.segment_bytes_max = segment_bytes_max
        self.wal_class = wal_class
        self.net = LinkNode(self.name, node_id, book, dead_after_s=3.0, ping_interval_s=0.5,
                            backoff_max_s=0.5)
        self.wal: WAL | None = None
        self.host: RaftHost | None = None
        self.transport: ClusterTransport | None = None
        self.machines: dict[str, Machine] = {}
        self.boots = 0

    @property
    def links(self) -> PeerLinks:
        return self.net.links

    async def start(self) -> RaftNode:
        self.boots += 1
        if self.boots > 1:
            self.net.links = self.net._new_links()  # a restarted process has no old links
        await self.net.start()
        self.wal = self.wal_class(self.root / f"node{self.node_id}", self.segment_bytes_max)
        recovered = list(self.wal.open())
        self.transport = ClusterTransport(self.links, self.ids.get)
        self.host = RaftHost(self.node_id, self.wal, self.transport, tick_interval_s=TICK_S,
                             config=RAFT_CONFIG,
                             rng=random.Random(self.seed * 1000 + self.node_id * 10 + self.boots))
        self.host.recover(recovered)
        self.machines = {}
        return self

    async def run(self) -> None:
        assert self.host is not None
        await self.host.start()

    def add_group(self, group_id: str, voters: set[int]) -> Machine:
        assert self.host is not None
        m = self.machines[group_id] = Machine()
        self.host.add_group(group_id, voters, m.apply, m.restore)
        return m

    def data(self, group_id: str) -> list[bytes]:
        m = self.machines.get(group_id)
        return m.data if m is not None else []

    async def stop(self) -> None:
        if self.host is not None:
            await self.host.stop()
            self.host = None
        await self.net.stop()
        if self.wal is not None:
            self.wal.close()
            self.wal = None


IDS = {1: "n1@test", 2: "n2@test", 3: "n3@test"}


class Trio:
    """Three RaftNodes (n1..n3) on real links, each with its WAL in `root`."""

    def __init__(self, root) -> None:
        self.book: Book = {}
        self.ids = dict(IDS)
        self.nodes = {i: RaftNode(root, i, self.book, self.ids) for i in IDS}

    async def start(self, groups: dict[str, set[int]]) -> None:
        for node in self.nodes.values():
            await node.start()
        for gid, voters in groups.items():
            for i in voters:
                self.nodes[i].add_group(gid, voters)
        for node in self.nodes.values():
            await node.run()

    def host(self, i: int) -> RaftHost:
        host = self.nodes[i].host
        assert host is not None
        return host

    def leader_of(self, gid: str, among: tuple[int, ...] = (1, 2, 3)) -> int:
        """The leader that every node in `among` agrees on, or 0."""
        leaders = {self.host(i).leader(gid) for i in among}
        if len(leaders) == 1:
            (leader,) = leaders
            return leader if leader in among else 0
        return 0

    async def elect(self, gid: str, i: int, among: tuple[int, ...] = (1, 2, 3)) -> None:
        """Make `i` the leader: campaign if nobody leads, else have the leader hand over
        (a campaign against a live leader is rightly ignored by its followers)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while self.leader_of(gid, among) != i:
            assert loop.time() < end, f"{i} did not become the leader of {gid}"
            leader = self.leader_of(gid, among)
            with contextlib.suppress(RaftError):
                if leader:
                    self.host(leader).transfer_leadership(gid, i)
                elif all(self.host(n).leader(gid) == 0 for n in among):
                    self.host(i).campaign(gid)
            await eventually(lambda: self.leader_of(gid, among) == i, 1.0)

    async def propose(self, i: int, gid: str, *items: bytes) -> None:
        futures = [self.host(i).propose(gid, d) for d in items]
        await asyncio.wait_for(asyncio.gather(*futures), 10)

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.stop()
