"""The running app's side of clustering: links to the other members, the metadata group's
voters kept in step with the member list, the requests nodes make of each other, and the
join / forget / leave procedures.

Members are metadata ("member.add" / "member.remove" commands: name -> Raft id), so every
node knows them and a restarted node knows whom to dial. Joining is two steps, both run by
the metadata group's leader: first the member record (so every node can name the new id and
the leader can reach it), then the Raft configuration change that makes it a voter. The
joining node starts its copy of the group empty, with the voters it was told, and catches up
from the leader (entries or a snapshot); it never bootstraps metadata of its own.

Leaving is the reverse, voter first, then the member record: `forget` for a member that
is down (run on any member), `leave` for a member resetting itself, which runs its metadata
group for the occasion so that it votes for its own removal (a cluster of two cannot remove
a member without it). A leader never removes itself: it hands leadership to another voter,
which then removes it.

Requests between nodes (over `cluster/links.py`):
  group.propose a follower's proposal to a group (metadata, a quorum queue), appended by
                the group's leader
  meta.voter    add/remove a voter (run on the leader)
  meta.join     a node asks to join: member record + voter, answered with the members
  node.info     name, version, listeners, alarms: what cluster_status shows per node

Every refusal is a ClusterError whose text says why and what to do, and whose exit status
travels with it across the links to warrenctl.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..amqp.errors import AMQPError
from ..cluster.control import (
    EX_DATAERR,
    EX_TEMPFAIL,
    ControlClient,
    ControlError,
    RemoteError,
)
from ..cluster.links import PeerLinks, PeerUnavailable, same_node
from ..cluster.names import parse as parse_name
from ..cluster.raft_transport import ClusterTransport
from ..raft import ConfChangeOp, RaftError
from ..replication.host import ReplicationError
from .forwarding import Forwarding
from .metalog import GROUP, NotLeaderHere, propose_forwarded, wait

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("warrenmq.cluster")

JOIN_FILE = "cluster.json"  # written by join_cluster, read by the next start
REQUEST_TIMEOUT_S = 10.0
# a join (member record, then voter) or a removal, on the leader; under the 30 s a joining
# node waits for the answer
CHANGE_TIMEOUT_S = 20.0
HAND_OVER_TIMEOUT_S = 5.0


class ClusterError(Exception):
    """A membership operation that cannot be done, with the reason and the fix.
    `exit_status` is warrenctl's: EX_TEMPFAIL for what may work later (no majority yet),
    EX_DATAERR for what will not (not a member, another version)."""

    def __init__(self, message: str, exit_status: int = EX_TEMPFAIL) -> None:
        super().__init__(message)
        self.exit_status = exit_status


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
        self.links.on_request("meta.members", self._meta_members)
        self.links.on_peer_up(self._peer_up)
        self.links.on_peer_down(self._peer_down)
        self._membership = asyncio.Lock()  # one membership change at a time (on the leader)
        # a member that no longer lists this node, whose log is at least as far as ours:
        # this node was forgotten while it was down
        self.removed_by: str | None = None
        self._checks: set[asyncio.Task] = set()
        # classic queues used from every node (publishes, deliveries, requests)
        self.forwarding = Forwarding(app, self.links)

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

    def reachability(self) -> tuple[bool, str]:
        """Whether this node reaches a majority of the members, and who it reaches."""
        members = self.members()
        up = self.links.peers_up()
        reachable = sorted(m for m in members if m == self.name or m in up)
        return (len(reachable) * 2 > len(members),
                f"{len(reachable)} of {len(members)} nodes reachable: {', '.join(reachable)}")

    def describe_unreachable(self) -> str:
        """Why no leader (of the metadata, or of a group on the same nodes) is reachable."""
        if self.removed_by is not None:
            return (f"node {self.name} is no longer a member of the cluster ({self.removed_by} "
                    "does not list it: it was forgotten while it was down): reset it "
                    "('warrenctl stop_app', 'warrenctl reset', 'warrenctl start_app') and join "
                    "the cluster again")
        if len(self.members()) <= 1:
            return "the metadata store is not running"
        majority, seen = self.reachability()
        if majority:
            return (f"no leader is known yet, though a majority of the cluster is reachable "
                    f"({seen}): an election may be under way; retry")
        return f"node {self.name} cannot reach a majority of the cluster ({seen})"

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
        self.forwarding.start()

    async def stop(self) -> None:
        for task in list(self._checks):
            task.cancel()
        if self.app.control is not None:
            self.app.control.link_handler = None
        await self.forwarding.stop()
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

    async def _on_leader(self, kind: str, payload: dict, here: bool = True) -> Any:
        """Run a leader-only request here if this node leads (unless `here` is False: a
        leader handing over waits for the next one), else on the leader. The leader's
        refusal is raised as a ClusterError with its text and exit status."""
        host = self.app.host
        assert host is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_TIMEOUT_S
        why = ""
        while True:
            leader = host.leader(GROUP)
            if leader == self.node_id and here:
                return await self._leader_do_locked(kind, payload)
            name = self.name_of(leader) if leader and leader != self.node_id else None
            if name is not None:
                try:
                    return await self.links.request(name, kind, payload, CHANGE_TIMEOUT_S)
                except RemoteError as e:
                    raise ClusterError(str(e), e.exit_status) from None
                except (PeerUnavailable, TimeoutError) as e:
                    why = str(e)
            if loop.time() > deadline:
                raise ClusterError(f"{self.describe_unreachable()}{'; ' if why else ''}{why}")
            await asyncio.sleep(0.1)

    async def _leader_do(self, kind: str, payload: dict) -> Any:
        host = self.app.host
        assert host is not None
        node = self.app.node
        if kind == "meta.voter":
            nid, add = int(payload["id"]), payload["op"] == "add"
            voters = host.group(GROUP).voters
            if not add and nid == self.node_id and voters - {nid}:
                # a leader that removed itself would leave the others to notice its silence
                # before electing; handing over first keeps the cluster led throughout
                await self._hand_over(voters - {nid})
                return await self._on_leader(kind, payload, here=False)
            if (nid in voters) != add:
                op = ConfChangeOp.ADD if add else ConfChangeOp.REMOVE
                await host.propose_conf_change(GROUP, op, nid)
            return {"voters": sorted(host.group(GROUP).voters)}
        if kind == "meta.join":
            name, nid = payload["node"], int(payload["node_id"])
            if not compatible(payload.get("version", "")):
                raise ClusterError(f"node {name} runs WarrenMQ {payload.get('version')}, the "
                                   f"cluster runs {__version__}: nodes of a cluster run the "
                                   "same major.minor version; upgrade the older side first",
                                   EX_DATAERR)
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
            try:
                return await asyncio.wait_for(self._leader_do(kind, payload), CHANGE_TIMEOUT_S)
            except ClusterError:
                raise
            except TimeoutError:
                _, seen = self.reachability()
                raise ClusterError(f"the membership change was not committed within "
                                   f"{CHANGE_TIMEOUT_S:g}s ({seen}): retry once a majority of "
                                   "the cluster is up") from None
            except (RaftError, ReplicationError, AMQPError) as e:
                text = e.reply_text if isinstance(e, AMQPError) else str(e)
                _, seen = self.reachability()
                raise ClusterError(f"the membership change did not complete: "
                                   f"{re.sub(r'^[A-Z_]+ - ', '', text)} ({seen}); retry") from None

    async def _hand_over(self, to: AbstractSet[int]) -> None:
        """Pass this node's leadership of the metadata to one of `to`, preferring one that
        is up; returns once another node leads."""
        host = self.app.host
        assert host is not None
        up = self.links.peers_up()
        ids = {nid: name for name, nid in self.members().items()}
        target = min(to, key=lambda nid: (ids.get(nid) not in up, nid))
        try:
            host.transfer_leadership(GROUP, target)
        except RaftError as e:
            raise ClusterError(f"cannot hand the metadata leadership over to "
                               f"{ids.get(target, target)}: {e}; retry") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HAND_OVER_TIMEOUT_S
        while host.leader(GROUP) in (self.node_id, 0):
            if loop.time() > deadline:
                raise ClusterError(f"the metadata leadership did not pass to "
                                   f"{ids.get(target, target)} within "
                                   f"{HAND_OVER_TIMEOUT_S:g}s; retry")
            await asyncio.sleep(0.05)

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

    # -- a node forgotten while it was down ------------------------------------------------------
    def _peer_up(self, peer: str) -> None:
        self.app.schedule_flush()
        if self.removed_by is None and peer in self.members():
            task = asyncio.get_running_loop().create_task(self._check_membership(peer))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    def _peer_down(self, peer: str) -> None:
        node_id = self.members().get(peer) or self.initial.get(peer)
        host = self.app.host
        if node_id and host is not None:
            host.peer_down(node_id)

    async def _meta_members(self, peer: str, payload: Any) -> Any:  # noqa: ARG002
        host = self.app.host
        applied = host.group(GROUP).applied_index if host is not None else 0
        return {"members": sorted(self.members()), "applied": applied}

    async def _check_membership(self, peer: str) -> None:
        """Ask `peer` whether it still counts this node in. A peer that has applied at least
        as much of the metadata log as we have has applied our member record, so if it no
        longer lists us, a later entry removed us. A lagging peer proves nothing; nor does
        anything before our own member record is applied here (a node just joining or still
        replaying its log)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_TIMEOUT_S
        while not any(same_node(m, self.name) for m in self.app.node.meta.members):
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.05)
        try:
            reply = await self.links.request(peer, "meta.members", {}, REQUEST_TIMEOUT_S)
            theirs, applied = list(reply["members"]), int(reply["applied"])
        except Exception as e:  # noqa: BLE001 - lost link, older peer: nothing learnt
            log.debug("membership check with %s: %s", peer, e)
            return
        host = self.app.host
        if host is None or applied < host.group(GROUP).applied_index:
            return
        if any(same_node(m, self.name) for m in theirs) or self.removed_by is not None:
            return
        self.removed_by = peer
        log.error("node %s: %s", self.name, self.describe_unreachable())

    # -- operations ---------------------------------------------------------------------------
    async def join(self, name: str, node_id: int, version: str) -> dict:
        """Handle a join request that reached this node (from the control port); `version`
        is the joining node's, checked by the leader."""
        return await self._on_leader("meta.join", {"node": name, "node_id": node_id,
                                                   "version": version})

    def _member(self, name: str) -> str | None:
        return next((m for m in self.members() if same_node(m, name)), None)

    async def forget(self, name: str) -> None:
        """Remove a member that is down (forget_cluster_node, run on another member)."""
        members = self.members()
        target = self._member(name)
        if target is None:
            raise ClusterError(f"node {name} is not a member of this cluster (members: "
                               f"{', '.join(sorted(members))})", EX_DATAERR)
        if same_node(target, self.name):
            raise ClusterError("a node cannot forget itself: run forget_cluster_node on "
                               "another member, or reset this one", EX_DATAERR)
        if target in self.links.peers_up():
            raise ClusterError(f"node {target} is running: stop it first (warrenctl -n "
                               f"{target} stop_app), then forget it", EX_DATAERR)
        await self._remove(target)

    async def leave(self, name: str, node_id: int | None) -> str:
        """A member resetting itself asks to be removed; it may be up (see the module's
        docstring). A node that is no longer a member, or whose name now belongs to another
        incarnation, has nothing to leave."""
        target = self._member(name)
        if target is None:
            return f"node {name} was not a member any more"
        if node_id is not None and self.members()[target] != int(node_id):
            return f"node {name} had left already (the member of that name is another one)"
        if same_node(target, self.name):
            raise ClusterError("a node leaves through another member", EX_DATAERR)
        await self._remove(target)
        return f"node {target} left the cluster"

    async def _remove(self, target: str) -> None:
        """Voter first, then the member record: a member without a vote is harmless, a vote
        without a member record could never be removed by name."""
        await self._on_leader("meta.voter", {"op": "remove", "id": self.members()[target]})
        try:
            await wait(self.app.node.propose({"op": "member.remove", "name": target}))
        except AMQPError as e:
            raise ClusterError(f"node {target} no longer votes, but its member record was not "
                               f"removed: {re.sub(r'^[A-Z_]+ - ', '', e.reply_text)}; run the "
                               "command again") from None
        self.links.disconnect(target)
        log.info("node %s: removed %s from the cluster", self.name, target)

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
