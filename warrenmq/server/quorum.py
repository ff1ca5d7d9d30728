"""Quorum queues on a node: one Raft group per queue on the node's RaftHost.

When the metadata says a quorum queue exists (its record names its member nodes), every
member hosts a replica (`queues/quorum/replica.py`) as the group `q/<queue id>`; the declaring
node campaigns at once so the queue has a leader before its first publish. A replica's
proposals go to the group's leader, here or over the cluster links (metalog.submit).

Leader duties, done by whichever replica leads: when a node leaves (its link drops), its
consumers are `down`ed so their unacknowledged messages go back to the queue (and are
redelivered, flagged, to consumers elsewhere); timers (message TTL, consumer ack timeout)
are `tick` commands proposed when the machine says one is due. A node that starts again
`down`s its own former consumers once its replicas are up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..amqp.constants import INTERNAL_ERROR
from ..amqp.errors import AMQPError
from ..core.pending import Pending
from ..core.replicas import policy_replicas
from ..meta.policies import effective_policy
from ..queues.quorum.replica import QuorumQueue, config_from
from ..raft import ConfChangeOp
from .metalog import submit, wait

if TYPE_CHECKING:
    from ..meta.records import QueueRecord
    from .app import App

log = logging.getLogger("warrenmq.quorum")

TIMEOUT_S = 10.0
TICK_S = 0.25
RECONCILE_EVERY = 8  # ticks: replica sets are checked every 2 s


def group_id(record: QueueRecord) -> str:
    return f"q/{record.id}"


class QuorumQueues:
    def __init__(self, app: App) -> None:
        self.app = app
        self.replicas: dict[str, QuorumQueue] = {}  # group id -> replica on this node
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        self._reconciling: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        cluster = self.app.cluster
        if cluster is not None:
            cluster.links.on_peer_down(self._peer_down)
        # consumers of this node's previous run are gone: return what they held
        for q in list(self.replicas.values()):
            self._spawn(self._when_led(
                q, lambda q=q: q.down_node(self.app.node.name, keep=q.origin)))

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for task in list(self._tasks):
            task.cancel()

    # -- replicas ---------------------------------------------------------------------------------
    def created(self, record: QueueRecord) -> None:
        """The record is new, or its members changed: host, keep or drop the replica."""
        node = self.app.node
        host = self.app.host
        assert host is not None
        members = record.members or [node.name]
        gid = group_id(record)
        if node.name not in members:
            if gid in self.replicas:
                self._drop(gid)
            return  # not a replica here (using it from here is forwarding's business)
        if gid in self.replicas:
            return
        policy = self._policy(record)
        q = QuorumQueue(record, node.origin, node.name,
                        lambda data, waiting, gid=gid: self._propose(gid, data, waiting),
                        lambda gid=gid: self._leads(gid), config_from(record.arguments, policy))
        q.on_dead = node.dead_letter
        q.clock = lambda: time.time() * 1000.0
        q.on_cancelled = self._cancelled
        for attr, arg, key in (("dead_letter_exchange", "x-dead-letter-exchange",
                                "dead-letter-exchange"),
                               ("dead_letter_routing_key", "x-dead-letter-routing-key",
                                "dead-letter-routing-key")):
            value = record.arguments.get(arg, policy.get(key))
            setattr(q, attr, value.decode() if isinstance(value, bytes) else value)
        voters = {self._id(m) for m in members}
        voters.discard(0)
        if not voters:
            voters = {host.node_id}
        self.replicas[gid] = q
        node.queues.setdefault(record.vhost, {})[record.name] = q
        host.add_group(gid, voters, lambda index, data, q=q: self._apply(q, index, data),
                       q.restore)
        if record.node == node.name and len(voters) > 1:
            host.campaign(gid)  # the declaring node leads first: no election timeout to wait

    def _drop(self, gid: str) -> None:
        """This node is no longer a replica: stop hosting the group; consumers here end."""
        q = self.replicas.pop(gid)
        node = self.app.node
        if node.queues.get(q.vhost, {}).get(q.name) is q:
            del node.queues[q.vhost][q.name]
        for consumer in list(q.consumers):
            q._forget(consumer)
            self._cancelled(consumer)
        q.delete()
        if self.app.host is not None:
            try:
                self.app.host.remove_group(gid)
            except Exception:  # noqa: BLE001 - already gone
                log.debug("group %s was not hosted", gid)

    # -- replica sets: policies, joins, forgotten nodes -------------------------------------------
    def reconcile_all(self) -> None:
        """Each replica led here checks its replica set (and settings) against the policy and
        the cluster; changes run in the background, one queue at a time."""
        for gid, q in list(self.replicas.items()):
            if self._leads(gid) and gid not in self._reconciling:
                self._reconciling.add(gid)
                self._spawn(self._reconcile(gid, q))

    def _reconcile_drifted(self) -> None:
        """A replica set that differs from what it should be (a change that failed, a
        leadership handed over mid-change) is reconciled again by its leader."""
        for gid, q in list(self.replicas.items()):
            if gid not in self._reconciling and self._leads(gid) and \
                    self.desired(q) != list(q.record.members):
                self._reconciling.add(gid)
                self._spawn(self._reconcile(gid, q))

    def desired(self, q: QuorumQueue) -> list[str]:
        record = q.record
        cluster = self.app.cluster
        alive = sorted(cluster.members()) if cluster is not None else [self.app.node.name]
        current = [m for m in record.members if m in alive] or [self.app.node.name]
        if record.type == "quorum":
            return current  # grown and shrunk only on command (rabbitmq-queues' verbs)
        policy = self._policy(record)
        home = record.node if record.node in alive else current[0]
        return policy_replicas(policy, home, current, alive) or [current[0]]

    async def _reconcile(self, gid: str, q: QuorumQueue) -> None:
        try:
            policy = self._policy(q.record)
            config = config_from(q.record.arguments, policy)
            if config != q.machine.config:
                q.update_config(config)
            want = self.desired(q)
            me = self.app.node.name
            if me not in want and me in q.record.members:
                # a leader does not remove itself: it hands over, and the new leader (its
                # periodic reconcile) removes this replica
                host = self.app.host
                voters = host.group(gid).voters if host is not None else set()
                target = next((self._id(n) for n in want if self._id(n) in voters), 0)
                if target and host is not None:
                    host.transfer_leadership(gid, target)
                return
            for name in [n for n in want if n not in q.record.members]:
                await self.add_member(q, name)
            for name in [n for n in q.record.members if n not in want]:
                await self.remove_member(q, name)
        except Exception as e:  # noqa: BLE001 - retried on the next change
            log.warning("replica set of queue '%s' in vhost '%s' not changed: %s", q.name,
                        q.vhost, e)
        finally:
            self._reconciling.discard(gid)

    async def add_member(self, q: QuorumQueue, name: str) -> None:
        """A new replica: first in the metadata (the node starts its replica, empty), then
        in the group's configuration; it catches up from the leader while the queue serves."""
        host = self.app.host
        node = self.app.node
        assert host is not None
        gid = group_id(q.record)
        members = [*q.record.members, name]
        await wait(node.propose({"op": "queue.members", "vhost": q.vhost, "name": q.name,
                                 "id": q.record.id, "members": members}))
        node_id = self._id(name)
        if node_id and node_id not in host.group(gid).voters:
            await host.propose_conf_change(gid, ConfChangeOp.ADD, node_id)
        log.info("queue '%s' in vhost '%s': replica added on %s", q.name, q.vhost, name)

    async def remove_member(self, q: QuorumQueue, name: str) -> None:
        host = self.app.host
        node = self.app.node
        assert host is not None
        gid = group_id(q.record)
        node_id = self._id(name)
        if node_id and node_id in host.group(gid).voters and len(host.group(gid).voters) > 1:
            await host.propose_conf_change(gid, ConfChangeOp.REMOVE, node_id)
        members = [m for m in q.record.members if m != name]
        await wait(node.propose({"op": "queue.members", "vhost": q.vhost, "name": q.name,
                                 "id": q.record.id, "members": members}))
        log.info("queue '%s' in vhost '%s': replica removed from %s", q.name, q.vhost, name)

    def _apply(self, q: QuorumQueue, index: int, data: bytes) -> object:
        reply = q.apply(index, data)
        self.app.schedule_flush()  # confirms, consume-oks and deliveries it wrote
        return reply

    def gone(self, q: object) -> None:
        if not isinstance(q, QuorumQueue):
            return
        gid = group_id(q.record)
        if self.replicas.pop(gid, None) is not None and self.app.host is not None:
            try:
                self.app.host.remove_group(gid)
            except Exception:  # noqa: BLE001 - already gone
                log.debug("group %s was not hosted", gid)

    def describe(self, record: QueueRecord) -> dict:
        """Leader, members and the members running now, by node name."""
        host = self.app.host
        cluster = self.app.cluster
        members = list(record.members) or [self.app.node.name]
        running = set(cluster.running()) if cluster is not None else {self.app.node.name}
        out = {"members": members, "online": [m for m in members if m in running]}
        gid = group_id(record)
        if host is not None and gid in self.replicas:
            leader = host.leader(gid)
            name = cluster.name_of(leader) if cluster is not None and leader else None
            out["leader"] = name or ""
        return out

    def _policy(self, record: QueueRecord) -> dict:
        meta = self.app.node.meta
        vhost = meta.vhosts.get(record.vhost)
        if vhost is None or not vhost.policies:
            return {}
        policy = effective_policy(meta, record.vhost, "queue", record.name)
        return policy.definition if policy is not None else {}

    def _id(self, name: str) -> int:
        cluster = self.app.cluster
        members = cluster.members() if cluster is not None else {}
        return int(members.get(name, 0)) or (self.app.node_id if name == self.app.node.name
                                             else 0)

    def _leads(self, gid: str) -> bool:
        host = self.app.host
        return host is not None and host.leader(gid) == host.node_id

    # -- proposing ----------------------------------------------------------------------------------
    def _propose(self, gid: str, data: bytes, waiting: Callable[[], bool]) -> Pending:
        sent = Pending()
        self._spawn(self._submit(gid, data, waiting, sent))
        return sent

    async def _submit(self, gid: str, data: bytes, waiting: Callable[[], bool],
                      sent: Pending) -> None:
        host = self.app.host
        cluster = self.app.cluster
        if host is None:
            sent.fail(AMQPError(INTERNAL_ERROR, "node stopping"))
            return
        describe = cluster.describe_unreachable if cluster is not None else (lambda: "")
        why = await submit(host, gid, data, cluster.forward if cluster else None,
                           lambda: f"quorum queue group {gid} has no reachable leader "
                                   f"({describe()})", TIMEOUT_S, waiting)
        if waiting():
            sent.fail(AMQPError(INTERNAL_ERROR, f"not committed within {TIMEOUT_S:g}s: {why}"))
        else:
            sent.resolve(True)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _when_led(self, q: QuorumQueue, action: Callable[[], Pending],
                        timeout_s: float = 30.0) -> None:
        """Run `action` once the group has a leader somewhere (proposals need one)."""
        host = self.app.host
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        gid = group_id(q.record)
        while host is not None and gid in self.replicas and loop.time() < deadline:
            if host.leader(gid):
                action()
                return
            await asyncio.sleep(0.05)

    # -- leader duties ---------------------------------------------------------------------------
    def _peer_down(self, peer: str) -> None:
        for gid, q in list(self.replicas.items()):
            if self._leads(gid):
                q.down_node(peer)

    def _cancelled(self, consumer) -> None:
        channel = consumer.channel
        channel.consumers.pop(consumer.tag, None)
        if channel.conn.capabilities.get("consumer_cancel_notify"):
            from pamqp import commands as C

            from ..amqp import codec
            channel.send(codec.make(C.Basic.Cancel, consumer_tag=consumer.tag, nowait=True))
        self.app.schedule_flush()

    async def _tick(self) -> None:
        turns = 0
        while True:
            await asyncio.sleep(TICK_S)
            turns += 1
            if turns % RECONCILE_EVERY == 0:
                self._reconcile_drifted()
            now = int(time.time() * 1000)
            for gid, q in list(self.replicas.items()):
                due = q.machine.next_timeout_ms()
                if due is not None and due <= now and self._leads(gid):
                    q.tick(now)
