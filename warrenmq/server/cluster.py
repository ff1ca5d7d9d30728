"""The running app's side of clustering: links to the other members, the metadata group's
voters kept in step with the member list, the requests nodes make of each other, and the
join / forget / leave procedures.

Members are metadata ("member.add" / "member.remove" commands: name -> Raft id), so every
node knows them and a restarted node knows whom to dial. Joining is two steps, both run by
the metadata group's leader: first the member record (so every node can name the new id and
the leader can reach it), then the Raft configuration change that makes it a voter. The
joining node starts its copy of the group empty, with the voters it was told, and catches up
from the leader (entries or a snapshot); it never bootstraps metadata of its own.

Requests between nodes (over `cluster/links.py`):
  group.propose a follower's proposal to a group (metadata, a quorum queue), appended by
                the group's leader
  meta.voter    add/remove a voter (run on the leader)
  meta.join     a node asks to join: member record + voter, answered with the members
  node.info     name, version, listeners, alarms: what cluster_status shows per node
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..cluster.control import ControlClient, ControlError
from ..cluster.links import PeerLinks, PeerUnavailable, same_node
from ..cluster.names import parse as parse_name
from ..cluster.raft_transport import ClusterTransport
from ..raft import ConfChangeOp
from .metalog import GROUP, NotLeaderHere, propose_forwarded, wait

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("warrenmq.cluster")

JOIN_FILE = "cluster.json"  # written by join_cluster, read by the next start
REQUEST_TIMEOUT_S = 10.0


class ClusterError(Exception):
    """A membership operation that cannot be done, with the reason and the fix."""


def read_join_file(data_dir: Path) -> dict | None:
    path = Path(data_dir) / JOIN_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_join_file(data_dir: Path, members: dict[str, int]) -> None:
    path = Path(data_dir) / JOIN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"members": members}))
    tmp.replace(path)


async def call_node(cookie: str, node: str, cmd: str, args: dict, timeout_s: float = 30.0
                    ) -> Any:
    """A control request to another node, with warrenctl's diagnostics (unresolvable host,
    closed port, cookie mismatch) as ControlErrors."""
    target = parse_name(node)

    def call() -> Any:
        with ControlClient(target, cookie, timeout_s) as client:
            client.connect()
            return client.call(cmd, args)

    return await asyncio.get_running_loop().run_in_executor(None, call)


async def classic_formation(cookie: str, me: str, node_id: int, peers: list[str],
                            timeout_s: float) -> dict[str, int] | None:
    """First start with cluster_formation.classic_config.nodes: the node whose name sorts
    first is the seed and starts the cluster (returns None); every other node joins the
    first listed node that runs (the seed, or one already clustered with it), retrying until
    `timeout_s`, then starts alone with a warning (as RabbitMQ does when no peer is up)."""
    everyone = sorted({*peers, me}, key=lambda n: parse_name(n).identity)
    others = [n for n in everyone if not same_node(n, me)]
    if not others or same_node(everyone[0], me):
        return None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = ""
    while loop.time() < deadline:
        for peer in others:
            try:
                info = await call_node(cookie, peer, "cluster_info", {}, 5.0)
                if not info.get("running"):
                    last = f"{peer}: its app is not running"
                    continue
                if not compatible(info.get("version", "")):
                    last = f"{peer}: runs WarrenMQ {info.get('version')}"
                    continue
                joined = await call_node(cookie, peer, "cluster_join",
                                         {"node": me, "node_id": node_id,
                                          "version": __version__}, 30.0)
                log.info("node %s: joined the cluster of %s (classic config)", me, peer)
                return {k: int(v) for k, v in joined["members"].items()}
            except ControlError as e:
                last = f"{peer}: {e}"
        await asyncio.sleep(0.5)
    log.warning("node %s: no peer of the classic config could be joined within %gs (%s); "
                "starting as a standalone node", me, timeout_s, last)
    return None


def compatible(version: str) -> bool:
    """Nodes of one cluster run the same major.minor version."""
    return version.split(".")[:2] == __version__.split(".")[:2]


class Cluster:
    def __init__(self, app: App, node_id: int, cookie: str) -> None:
        self.app = app
        self.node_id = node_id
        self.name = app.config.nodename
        self.links = PeerLinks(self.name, node_id, cookie)
        self.transport = ClusterTransport(self.links, self.name_of)
        self.initial: dict[str, int] = {}  # members as told at join, until the log says
        self.links.on_request("group.propose", self._group_propose)
        self.links.on_request("meta.voter", self._meta_voter)
        self.links.on_request("meta.join", self._meta_join)
        self.links.on_request("node.info", self._node_info)
        self.links.on_peer_up(lambda peer: self.app.schedule_flush())
        self._membership = asyncio.Lock()  # one membership change at a time (on the leader)

    # -- membership view --------------------------------------------------------------------
    def members(self) -> dict[str, int]:
        members = dict(self.app.node.meta.members) or dict(self.initial)
        if not members:
            members = {self.name: self.node_id}
        return members

    def name_of(self, node_id: int) -> str | None:
        for name, nid in self.members().items():
            if nid == node_id:
                return name
        for name, nid in self.initial.items():
            if nid == node_id:
                return name
        return None

    def running(self) -> list[str]:
        up = self.links.peers_up()
        return sorted([self.name] + [m for m in self.members() if m in up and m != self.name])

    def sync(self) -> None:
        """Dial every member, forget former ones; the node learns the cluster's size."""
        members = self.members()
        for name in members:
            if not same_node(name, self.name):
                self.links.connect(name)
        for name in self.links.known() - set(members) - set(self.initial):
            self.links.disconnect(name)
        self.app.node.cluster_size = len(members)

    def describe_unreachable(self) -> str:
        members = self.members()
        if len(members) <= 1:
            return "the metadata store is not running"
        up = self.links.peers_up()
        reachable = [m for m in members if m == self.name or m in up]
        return (f"node {self.name} cannot reach a majority of the cluster ({len(reachable)} "
                f"of {len(members)} nodes reachable: {', '.join(sorted(reachable))})")

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.links.start()
        runtime_control = self.app.control
        if runtime_control is not None:
            runtime_control.link_handler = self.links.accept
        metalog = self.app.metalog
        assert metalog is not None
        metalog.forward = self.forward
        metalog.describe_unreachable = self.describe_unreachable
        self.sync()

    async def stop(self) -> None:
        if self.app.control is not None:
            self.app.control.link_handler = None
        await self.links.stop()

    # -- metadata over the links ---------------------------------------------------------------
    async def forward(self, leader_id: int, group: str, data: bytes) -> None:
        """A proposal for `group`, sent to the node that leads it."""
        leader = self.name_of(leader_id)
        if leader is None:
            raise PeerUnavailable(str(leader_id), "the leader's name is not known yet")
        reply = await self.links.request(leader, "group.propose", [group, data],
                                         REQUEST_TIMEOUT_S)
        if isinstance(reply, dict) and reply.get("not_leader"):
            raise NotLeaderHere(reply["not_leader"])

    async def _group_propose(self, peer: str, payload: Any) -> Any:  # noqa: ARG002
        group, data = payload
        try:
            propose_forwarded(self.app.host, group, bytes(data))
        except NotLeaderHere as e:
            return {"not_leader": str(e)}
        except Exception as e:  # noqa: BLE001 - an unknown group, a stopping host
            return {"not_leader": f"{type(e).__name__}: {e}"}
        return {"ok": True}

    async def _on_leader(self, kind: str, payload: dict) -> Any:
        """Run a leader-only request here if this node leads, else on the leader."""
        host = self.app.host
        assert host is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_TIMEOUT_S
        while True:
            leader = host.leader(GROUP)
            if leader == self.node_id:
                return await self._leader_do_locked(kind, payload)
            name = self.name_of(leader) if leader else None
            if name is not None:
                try:
                    return await self.links.request(name, kind, payload, REQUEST_TIMEOUT_S)
                except PeerUnavailable:
                    pass
            if loop.time() > deadline:
                raise ClusterError(self.describe_unreachable())
            await asyncio.sleep(0.1)

    async def _leader_do(self, kind: str, payload: dict) -> Any:
        host = self.app.host
        assert host is not None
        node = self.app.node
        if kind == "meta.voter":
            op = ConfChangeOp.ADD if payload["op"] == "add" else ConfChangeOp.REMOVE
            if (payload["id"] in host.group(GROUP).voters) != (payload["op"] == "add"):
                await host.propose_conf_change(GROUP, op, int(payload["id"]))
            return {"voters": sorted(host.group(GROUP).voters)}
        if kind == "meta.join":
            name, nid = payload["node"], int(payload["node_id"])
            if not compatible(payload.get("version", "")):
                raise ClusterError(f"node {name} runs WarrenMQ {payload.get('version')}, the "
                                   f"cluster runs {__version__}: upgrade one side first")
            for other, other_id in node.meta.members.items():
                if same_node(other, name) and other_id != nid:
                    # the node was reset: its former self leaves first
                    await self._leader_do("meta.voter", {"op": "remove", "id": other_id})
                    await wait(node.propose({"op": "member.remove", "name": other}))
            if not node.meta.members:
                await wait(node.propose({"op": "member.add", "name": self.name,
                                         "id": self.node_id}))
            await wait(node.propose({"op": "member.add", "name": name, "id": nid}))
            self.sync()
            await self._leader_do("meta.voter", {"op": "add", "id": nid})
            return {"members": dict(node.meta.members),
                    "cluster_name": node.meta.cluster_name or self.name}
        raise ClusterError(f"unknown leader request {kind}")

    async def _meta_voter(self, peer: str, payload: Any) -> Any:  # noqa: ARG002
        return await self._on_leader("meta.voter", payload)

    async def _meta_join(self, peer: str, payload: Any) -> Any:  # noqa: ARG002
        return await self._on_leader("meta.join", payload)

    async def _leader_do_locked(self, kind: str, payload: dict) -> Any:
        async with self._membership:
            return await self._leader_do(kind, payload)

    # -- fault injection ------------------------------------------------------------------------
    def cut(self, peers: list[str] | None = None) -> list[str]:
        """Close the links to `peers` (default: every member) and refuse them until healed:
        a real partition of this node, for tests and drills."""
        targets = peers or [m for m in self.members() if not same_node(m, self.name)]
        for peer in targets:
            self.links.cut(peer)
        return sorted(targets)

    def heal(self) -> list[str]:
        candidates = set(self.members()) | self.links.known()
        healed = [p for p in candidates if self.links.is_cut(p)]
        for peer in healed:
            self.links.heal(peer)
        return sorted(healed)

    async def _node_info(self, peer: str, payload: Any) -> Any:  # noqa: ARG002
        return self.app.node_info()

    # -- operations ---------------------------------------------------------------------------
    async def join(self, name: str, node_id: int) -> dict:
        """Handle a join request that reached this node (from the control port)."""
        return await self._on_leader("meta.join", {"node": name, "node_id": node_id,
                                                   "version": __version__})

    async def forget(self, name: str) -> None:
        members = self.members()
        target = next((m for m in members if same_node(m, name)), None)
        if target is None:
            raise ClusterError(f"node {name} is not a member of this cluster (members: "
                               f"{', '.join(sorted(members))})")
        if same_node(target, self.name):
            raise ClusterError("a node cannot forget itself: run forget_cluster_node on "
                               "another member, or reset this one")
        if target in self.links.peers_up():
            raise ClusterError(f"node {target} is running: stop it first (warrenctl -n "
                               f"{target} stop_app), then forget it")
        await self._on_leader("meta.voter", {"op": "remove", "id": members[target]})
        await wait(self.app.node.propose({"op": "member.remove", "name": target}))
        self.links.disconnect(target)

    async def gather_info(self) -> dict[str, dict]:
        """node.info of every running member (this one included)."""
        out = {self.name: self.app.node_info()}
        peers = [m for m in self.running() if m != self.name]

        async def one(peer: str) -> None:
            try:
                out[peer] = await self.links.request(peer, "node.info", {}, 5.0)
            except Exception as e:  # noqa: BLE001 - a node that does not answer is left out
                log.info("node.info from %s: %s", peer, e)

        await asyncio.gather(*(one(p) for p in peers))
        return out
