"""Operations on a replicated queue, run by the leader of its Raft group wherever it is: add
or delete a member, hand leadership over, synchronise members (ha-sync-mode manual) or stop
synchronising them, and report the group as the leader sees it.

Theory of operation. Replica sets and leadership are the group's configuration, which only
its leader can change. A control command runs on whichever node the operator's tool reached;
`on_leader` runs the operation here if this node leads the group, else sends it ("queue.op"
over the cluster links) to the node believed to lead it (the one this node's replica names,
else a running member), whose answer names the leader when it does not lead, and the request
follows. A leader asked to remove its own replica first hands leadership to an in-sync voter
and answers with the new leader's name. On the leader an operation holds the group's lock
(`QuorumQueues.lock`), so it never interleaves with the periodic reconciliation.

Statuses ("queue.status") are asked for many queues at once, one request per node, within
one deadline; a queue whose leader cannot be found, or does not answer in time, comes back
with the reason instead (what list_unresponsive_queues lists). Answers are remembered for a
while (`QuorumQueues.remember`) so listings on any node can show who leads and who is in
sync.

Errors are CommandErrors with warrenctl's exit statuses; raised on the leader they cross the
links as RemoteErrors and are raised again here with the same text and status.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..amqp.errors import AMQPError
from ..cluster.control import EX_DATAERR, EX_TEMPFAIL, EX_USAGE, CommandError, RemoteError
from ..cluster.links import PeerUnavailable
from ..raft import RaftError
from ..replication.host import ReplicationError
from .metalog import GROUP as META_GROUP
from .quorum import group_id

if TYPE_CHECKING:
    from ..cluster.links import PeerLinks
    from ..meta.records import QueueRecord
    from ..queues.quorum.replica import QuorumQueue
    from .quorum import QuorumQueues

log = logging.getLogger("warrenmq.quorum")

OP_TIMEOUT_S = 20.0  # one operation, asked anywhere, answered by the leader
HAND_OVER_TIMEOUT_S = 5.0
SYNC_WAIT_S = 10.0  # sync_queue answers once the members are in sync, or after this
RETRY_S = 0.1
BARRIER_TIMEOUT_S = 3.0


class Moved(Exception):
    """This node no longer leads the group (it handed over, or lost it); `leader` is the
    node believed to lead it now ("" if unknown)."""

    def __init__(self, leader: str) -> None:
        super().__init__(f"leadership moved to {leader or 'an unknown node'}")
        self.leader = leader


def readable(record: QueueRecord) -> str:
    return f"queue '{record.name}' in vhost '{record.vhost}'"


class QueueOps:
    def __init__(self, quorum: QuorumQueues) -> None:
        self.quorum = quorum
        self.app = quorum.app

    def serve(self, links: PeerLinks) -> None:
        links.on_request("queue.op", self._serve_op)
        links.on_request("queue.status", self._serve_status)
        links.on_request("meta.commit", self._serve_commit)

    # -- reading the metadata after every change committed so far -----------------------------------
    async def metadata_barrier(self, timeout_s: float = BARRIER_TIMEOUT_S) -> bool:
        """Wait until this node has applied every metadata change committed when the call
        began (the metadata leader's commit index), so a command sent here right after one
        sent to another node sees its effect (a grow after a grow). Best effort: False, and
        the node's current view, when no leader answers within `timeout_s`."""
        host = self.app.host
        if host is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        raft = host.group(META_GROUP)
        leader = host.leader(META_GROUP)
        try:
            if leader == host.node_id:
                commit = raft.commit_index
            else:
                name = self.quorum.name_of(leader) if leader else None
                links = self._links()
                if name is None or links is None:
                    return False
                commit = int((await links.request(name, "meta.commit", {}, timeout_s))["commit"])
        except Exception as e:  # noqa: BLE001 - the command goes on with what it has
            log.debug("no metadata commit index from the leader: %s", e)
            return False
        while raft.applied_index < commit:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _serve_commit(self, peer: str, payload: Any) -> Any:  # noqa: ARG002
        host = self.app.host
        if host is None or host.leader(META_GROUP) != host.node_id:
            raise CommandError("not the metadata leader", EX_TEMPFAIL)
        return {"commit": host.group(META_GROUP).commit_index}

    # -- lookups ------------------------------------------------------------------------------------
    def record(self, vhost: str, name: str, queue_id: str = "") -> QueueRecord | None:
        v = self.app.node.meta.vhosts.get(vhost)
        record = v.queues.get(name) if v is not None else None
        if record is None or (queue_id and record.id != queue_id):
            return None
        return record

    def online(self, record: QueueRecord) -> list[str]:
        cluster = self.app.cluster
        running = set(cluster.running()) if cluster is not None else {self.app.node.name}
        return [m for m in record.members if m in running]

    def _links(self) -> PeerLinks | None:
        cluster = self.app.cluster
        return cluster.links if cluster is not None else None

    # -- running an operation on the leader -----------------------------------------------------------
    async def on_leader(self, record: QueueRecord, op: str, args: dict | None = None,
                        timeout_s: float = OP_TIMEOUT_S) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        me = self.app.node.name
        payload = {"vhost": record.vhost, "name": record.name, "id": record.id, "op": op,
                   "args": args or {}}
        hint: str | None = None
        tried: list[str] = []
        why = ""
        while True:
            if self.quorum._leads(group_id(record)):
                try:
                    return await self.leader_op(record, op, args or {})
                except Moved as e:
                    hint, why = e.leader or None, str(e)
            else:
                target = hint or self.quorum.known_leader(record)
                hint = None
                if target is None or target == me or target in tried:
                    others = [m for m in self.online(record) if m != me and m not in tried]
                    target = others[0] if others else None
                links = self._links()
                if target is None or links is None:
                    tried.clear()  # every member was asked: start over until the deadline
                    why = why or "no member of it that leads it is running"
                else:
                    tried.append(target)
                    try:
                        reply = await links.request(target, "queue.op", payload,
                                                    max(0.5, deadline - loop.time()))
                    except RemoteError as e:
                        raise CommandError(str(e), e.exit_status) from None
                    except (PeerUnavailable, TimeoutError) as e:
                        why = str(e)
                    else:
                        if "ok" in reply:
                            return reply["ok"]
                        hint = reply.get("not_leader") or None
                        why = f"node {target} does not lead it"
            if loop.time() > deadline:
                raise CommandError(
                    f"{readable(record)} has no leader reachable from node {me} ({why}); "
                    f"retry once a majority of its members ({', '.join(record.members)}) "
                    "are running", EX_TEMPFAIL)
            await asyncio.sleep(RETRY_S)

    async def _serve_op(self, peer: str, payload: Any) -> Any:  # noqa: ARG002
        record = self.record(payload["vhost"], payload["name"], payload.get("id", ""))
        if record is None:
            return {"not_leader": ""}  # its metadata has not reached this node (yet)
        if not self.quorum._leads(group_id(record)):
            return {"not_leader": self.quorum.known_leader(record) or ""}
        try:
            return {"ok": await self.leader_op(record, payload["op"], payload.get("args") or {})}
        except Moved as e:
            return {"not_leader": e.leader}

    async def leader_op(self, record: QueueRecord, op: str, args: dict) -> Any:
        handlers = {"add_member": self._add_member, "delete_member": self._delete_member,
                    "transfer": self._transfer, "sync": self._sync,
                    "cancel_sync": self._cancel_sync}
        handler = handlers.get(op)
        if handler is None:
            raise CommandError(f"unknown queue operation '{op}'", EX_USAGE)
        gid = group_id(record)
        async with self.quorum.lock(gid):
            if not self.quorum._leads(gid):
                raise Moved(self.quorum.known_leader(record) or "")
            q = self.quorum.replicas[gid]
            try:
                return await handler(q, args)
            except (RaftError, ReplicationError) as e:
                raise CommandError(f"{readable(record)}: the change did not complete: {e}; "
                                   "retry", EX_TEMPFAIL) from None
            except AMQPError as e:
                text = re.sub(r"^[A-Z_]+ - ", "", e.reply_text)
                raise CommandError(f"{readable(record)}: the change did not complete: {text}",
                                   EX_TEMPFAIL) from None

    # -- the operations (on the leader, under the group's lock) ---------------------------------------
    async def _add_member(self, q: QuorumQueue, args: dict) -> dict:
        name = args["node"]
        if name in q.record.members:
            raise CommandError(f"node {name} already hosts a member of {readable(q.record)}",
                               EX_DATAERR)
        await self.quorum.add_member(q, name)
        return {"members": list(q.record.members)}

    async def _delete_member(self, q: QuorumQueue, args: dict) -> dict:
        name = args["node"]
        record = q.record
        if name not in record.members:
            raise CommandError(f"node {name} is not a member of {readable(record)} (members: "
                               f"{', '.join(record.members)})", EX_DATAERR)
        if len(record.members) == 1:
            raise CommandError(f"node {name} holds the last member of {readable(record)}, "
                               "which cannot be removed (delete the queue instead)", EX_DATAERR)
        if name == self.app.node.name:
            raise Moved(await self._hand_over(q))
        await self.quorum.remove_member(q, name)
        return {"members": list(record.members)}

    async def _transfer(self, q: QuorumQueue, args: dict) -> dict:
        name = args["node"]
        record = q.record
        me = self.app.node.name
        if name == me:
            return {"leader": me}
        status = self.quorum.leader_status(group_id(record))
        assert status is not None  # the lock is held by the leader
        if name not in record.members:
            raise CommandError(f"node {name} is not a member of {readable(record)} (members: "
                               f"{', '.join(record.members)})", EX_DATAERR)
        if name not in status["voters"]:
            raise CommandError(f"the member of {readable(record)} on node {name} is not "
                               "synchronised, so it cannot lead: run 'warrenctl sync_queue' "
                               "first", EX_DATAERR)
        if name not in status["alive"]:
            raise CommandError(f"node {name} is not running: it cannot take the leadership of "
                               f"{readable(record)}", EX_TEMPFAIL)
        return {"leader": await self._hand_over(q, name)}

    async def _hand_over(self, q: QuorumQueue, to: str | None = None) -> str:
        """Pass the group's leadership to `to` (default: an in-sync voter that is alive) and
        wait until another node leads; returns its name."""
        host = self.app.host
        assert host is not None
        gid = group_id(q.record)
        me = self.app.node.name
        status = self.quorum.leader_status(gid)
        assert status is not None
        if to is None:
            ready = [n for n in status["in_sync"] if n != me and n in status["alive"]]
            if not ready:
                raise CommandError(f"{readable(q.record)}: no other member is running and in "
                                   "sync, so this node cannot hand its leadership over; retry "
                                   "once one is", EX_TEMPFAIL)
            to = ready[0]
        target = self.quorum._id(to)
        try:
            host.transfer_leadership(gid, target)
        except RaftError as e:
            raise CommandError(f"{readable(q.record)}: cannot hand the leadership over to {to}: "
                               f"{e}", EX_TEMPFAIL) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HAND_OVER_TIMEOUT_S
        while host.leader(gid) in (host.node_id, 0):
            if loop.time() > deadline:
                raise CommandError(f"{readable(q.record)}: the leadership did not pass to {to} "
                                   f"within {HAND_OVER_TIMEOUT_S:g}s; retry", EX_TEMPFAIL)
            await asyncio.sleep(0.02)
        leader = self.quorum.name_of(host.leader(gid)) or ""
        log.info("%s: leadership handed over from %s to %s", readable(q.record), me, leader)
        return leader

    async def _sync(self, q: QuorumQueue, args: dict) -> dict:  # noqa: ARG002
        """Make every recorded member a voter, then wait (a while) until each is in sync: the
        queue serves throughout, the members catch up in the background."""
        gid = group_id(q.record)
        status = self.quorum.leader_status(gid)
        assert status is not None
        added = [m for m in q.record.members if m not in status["voters"]]
        for name in added:
            await self.quorum.add_voter(q, name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SYNC_WAIT_S
        while True:
            status = self.quorum.leader_status(gid)
            if status is None:
                raise Moved(self.quorum.known_leader(q.record) or "")
            behind = [m for m in q.record.members if m not in status["in_sync"]]
            if not behind or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        if added:
            log.info("%s: members %s added to the group (sync_queue)", readable(q.record),
                     ", ".join(added))
        return {"added": added, "in_sync": [m for m in q.record.members if m not in behind],
                "catching_up": behind}

    async def _cancel_sync(self, q: QuorumQueue, args: dict) -> dict:  # noqa: ARG002
        """Members still catching up leave the group's configuration (they stay recorded,
        not synchronised, until the next sync_queue)."""
        record = q.record
        if self.quorum.sync_mode(record) != "manual":
            raise CommandError(f"{readable(record)} synchronises its members automatically "
                               "(ha-sync-mode automatic): set ha-sync-mode to manual in its "
                               "policy to control synchronisation", EX_DATAERR)
        status = self.quorum.leader_status(group_id(record))
        assert status is not None
        me = self.app.node.name
        cancelled = [n for n in status["voters"] if n != me and n not in status["in_sync"]]
        for name in cancelled:
            await self.quorum.remove_voter(q, name)
        return {"cancelled": cancelled}

    # -- statuses ------------------------------------------------------------------------------------
    async def statuses(self, records: Iterable[QueueRecord], timeout_s: float) -> dict[str, dict]:
        """Group id -> the leader's status of the group (`QuorumQueues.leader_status`), or
        {"error": why} when no leader could be found or none answered within `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        me = self.app.node.name
        out: dict[str, dict] = {}
        todo: dict[str, QueueRecord] = {}
        for record in records:
            gid = group_id(record)
            status = self.quorum.leader_status(gid)
            if status is not None:
                out[gid] = status
            else:
                todo[gid] = record
        hints: dict[str, str] = {}
        tried: dict[str, set[str]] = defaultdict(set)
        why: dict[str, str] = {}
        links = self._links()
        while todo and links is not None and loop.time() < deadline:
            by_node: dict[str, list[str]] = defaultdict(list)
            for gid, record in list(todo.items()):
                target = hints.pop(gid, "") or self.quorum.known_leader(record)
                if target is None or target == me or target in tried[gid]:
                    target = next((m for m in self.online(record)
                                   if m != me and m not in tried[gid]), None)
                if target is None:
                    out[gid] = {"error": why.get(gid) or "no leader is known here and no "
                                "other member is running"}
                    del todo[gid]
                    continue
                tried[gid].add(target)
                by_node[target].append(gid)

            async def ask(node: str, gids: list[str]) -> None:
                wanted = [[todo[g].vhost, todo[g].name, todo[g].id] for g in gids]
                try:
                    reply = await links.request(node, "queue.status", wanted,
                                                max(0.05, deadline - loop.time()))
                except Exception as e:  # noqa: BLE001 - the reason is the answer
                    for g in gids:
                        why[g] = f"node {node} did not answer: {e}"
                    return
                for g in gids:
                    answer = reply.get(g) or {}
                    if "leader" in answer:
                        out[g] = answer
                        self.quorum.remember(g, answer)
                        todo.pop(g, None)
                    else:
                        hints[g] = answer.get("not_leader") or ""
                        why[g] = f"node {node} does not lead it"

            await asyncio.gather(*(ask(n, gids) for n, gids in by_node.items()))
        for gid in todo:
            out[gid] = {"error": why.get(gid) or f"no answer within {timeout_s:g}s"}
        return out

    async def _serve_status(self, peer: str, payload: Any) -> Any:  # noqa: ARG002
        out: dict[str, dict] = {}
        for vhost, name, queue_id in payload:
            record = self.record(vhost, name, queue_id)
            if record is None:
                continue
            gid = group_id(record)
            status = self.quorum.leader_status(gid)
            out[gid] = status if status is not None else \
                {"not_leader": self.quorum.known_leader(record) or ""}
        return out

    async def refresh(self, records: Iterable[QueueRecord], timeout_s: float = 2.0) -> None:
        """Ask the leaders of the groups not led here, so that `describe` can show who leads
        them and which members are in sync."""
        wanted = [r for r in records if r.members
                  and self.quorum.leader_status(group_id(r)) is None]
        if wanted:
            await self.statuses(wanted, timeout_s)
