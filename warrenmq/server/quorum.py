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

Replica sets. A member is first recorded in the metadata (its node starts a replica, empty),
then added to the group's Raft configuration, after which it catches up from the leader
while the queue serves. A classic queue under `ha-sync-mode: manual` stops after the first
step: the member is recorded but gets nothing until `sync_queue` adds it to the
configuration (`quorum_ops.py`); every other replicated queue does both steps at once. One
change of a group's replica set runs at a time (`lock`), on the group's leader.

Synchronisation as operators see it: a member is in sync when it is a voter of the group,
its node is up, and the leader's match index for it is within SYNC_LAG_ENTRIES of the
leader's last index (`leader_status`). Only the leader knows match indexes; other nodes ask
it (`quorum_ops.py`) and keep the answer for a while (`remember`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
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
PROPOSE_KIND = "quorum.propose"  # a follower's command for the group's leader (one way)
RESEND_S = 1.0  # a command sent one way and not applied by then is submitted again
RECONCILE_EVERY = 8  # ticks: replica sets are checked every 2 s
# A follower this close to the leader's log is in sync: entries in flight to a replicating
# follower put it a few entries behind without it lacking anything committed long ago.
SYNC_LAG_ENTRIES = 16
STATUS_TTL_S = 10.0  # how long a leader's answer about a group it leads is shown elsewhere


def group_id(record: QueueRecord) -> str:
    return f"q/{record.id}"


class QuorumQueues:
    def __init__(self, app: App) -> None:
        self.app = app
        self.replicas: dict[str, QuorumQueue] = {}  # group id -> replica on this node
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        self._reconciling: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._seen: dict[str, tuple[float, dict]] = {}  # gid -> (monotonic, leader status)
        # commands sent one way to their leader: (sent at, gid, data, waiting, sent)
        self._in_flight: deque[tuple[float, str, bytes, Callable[[], bool], Pending]] = deque()
        from .quorum_ops import QueueOps  # it builds on this module
        self.ops = QueueOps(self)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        cluster = self.app.cluster
        if cluster is not None:
            cluster.links.on_peer_down(self._peer_down)
            cluster.links.on(PROPOSE_KIND, self._from_follower)
            self.ops.serve(cluster.links)
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
                        lambda gid=gid: self._leads(gid),
                        config_from(record.arguments, policy, record.type))
        q.on_dead = node.dead_letter
        q.on_expired = node.delete_queue
        q.clock = lambda: time.time() * 1000.0
        q.on_cancelled = self._cancelled
        voters = {self._id(m) for m in members}
        voters.discard(0)
        if not voters:
            voters = {host.node_id}
        self.replicas[gid] = q
        node.queues.setdefault(record.vhost, {})[record.name] = q
        if gid not in host.recovered_groups():
            self.app.group_born(gid)
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
                    (self.desired(q) != list(q.record.members) or self._voters_drifted(q)):
                self._reconciling.add(gid)
                self._spawn(self._reconcile(gid, q))

    def _voters_drifted(self, q: QuorumQueue) -> bool:
        missing, extra = self._voter_drift(q)
        return bool(extra or (missing and self.sync_mode(q.record) == "automatic"))

    def _voter_drift(self, q: QuorumQueue) -> tuple[set[int], set[int]]:
        """(members that are not voters, voters that are not members), by node id; a voter
        of a node no longer known (forgotten) counts as not a member."""
        host = self.app.host
        gid = group_id(q.record)
        if host is None or gid not in self.replicas:
            return set(), set()
        voters = set(host.group(gid).voters)
        ids = {self._id(m) for m in q.record.members} - {0}
        return ids - voters, voters - ids - {host.node_id}

    def sync_mode(self, record: QueueRecord) -> str:
        """"manual" for a classic queue under `ha-sync-mode: manual`: its new members wait
        for sync_queue. Otherwise "automatic", also the default (RabbitMQ's is manual, because
        its synchronisation blocks the queue; catching up here never does)."""
        if record.type == "quorum":
            return "automatic"
        mode = self._policy(record).get("ha-sync-mode", "automatic")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        return "manual" if mode == "manual" else "automatic"

    def lock(self, gid: str) -> asyncio.Lock:
        """One change of a group's replica set at a time (reconciling, CLI operations)."""
        lock = self._locks.get(gid)
        if lock is None:
            lock = self._locks[gid] = asyncio.Lock()
        return lock

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
            async with self.lock(gid):
                await self._reconcile_locked(gid, q)
        except Exception as e:  # noqa: BLE001 - retried on the next change
            log.warning("replica set of queue '%s' in vhost '%s' not changed: %s", q.name,
                        q.vhost, e)
        finally:
            self._reconciling.discard(gid)

    async def _reconcile_locked(self, gid: str, q: QuorumQueue) -> None:
        if not self._leads(gid):
            return  # leadership moved while waiting for the lock
        policy = self._policy(q.record)
        config = config_from(q.record.arguments, policy, q.record.type)
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
        await self._repair_voters(gid, q)

    async def _repair_voters(self, gid: str, q: QuorumQueue) -> None:
        """Voters in step with the members after a change that stopped half-way: a voter
        that is no member leaves; in automatic sync mode a member that is no voter joins."""
        host = self.app.host
        assert host is not None
        missing, extra = self._voter_drift(q)
        for node_id in sorted(extra):
            if len(host.group(gid).voters) > 1:
                await host.propose_conf_change(gid, ConfChangeOp.REMOVE, node_id)
        if self.sync_mode(q.record) == "automatic":
            for node_id in sorted(missing):
                await host.propose_conf_change(gid, ConfChangeOp.ADD, node_id)

    async def add_member(self, q: QuorumQueue, name: str) -> None:
        """A new replica: first in the metadata (the node starts its replica, empty), then
        in the group's configuration; it catches up from the leader while the queue serves.
        In manual sync mode the second step waits for sync_queue. The caller leads the group
        and holds its lock."""
        node = self.app.node
        members = [*q.record.members, name]
        await wait(node.propose({"op": "queue.members", "vhost": q.vhost, "name": q.name,
                                 "id": q.record.id, "members": members}))
        if self.sync_mode(q.record) == "manual":
            log.info("queue '%s' in vhost '%s': replica added on %s, not synchronised until "
                     "sync_queue (ha-sync-mode manual)", q.name, q.vhost, name)
            return
        await self.add_voter(q, name)
        log.info("queue '%s' in vhost '%s': replica added on %s", q.name, q.vhost, name)

    async def add_voter(self, q: QuorumQueue, name: str) -> None:
        """Make a recorded member a voter of the group: the leader starts sending it the
        log (or a snapshot) and it catches up in the background."""
        host = self.app.host
        assert host is not None
        gid = group_id(q.record)
        node_id = self._id(name)
        if node_id and node_id not in host.group(gid).voters:
            await host.propose_conf_change(gid, ConfChangeOp.ADD, node_id)

    async def remove_voter(self, q: QuorumQueue, name: str) -> None:
        """Take a member out of the group's configuration, keeping it recorded: it stops
        receiving the log (cancel_sync_queue)."""
        host = self.app.host
        assert host is not None
        gid = group_id(q.record)
        node_id = self._id(name)
        if node_id and node_id in host.group(gid).voters and len(host.group(gid).voters) > 1:
            await host.propose_conf_change(gid, ConfChangeOp.REMOVE, node_id)

    async def remove_member(self, q: QuorumQueue, name: str) -> None:
        """Voter first, then the member record (a recorded member without a vote is harmless,
        a vote without a record could not be named). The caller leads the group, holds its
        lock and is not `name` (a leader hands over before its own replica goes)."""
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
        self._seen.pop(gid, None)
        if not (lock := self._locks.get(gid)) or not lock.locked():
            self._locks.pop(gid, None)
        if self.replicas.pop(gid, None) is not None and self.app.host is not None:
            try:
                self.app.host.remove_group(gid)
            except Exception:  # noqa: BLE001 - already gone
                log.debug("group %s was not hosted", gid)

    def describe(self, record: QueueRecord) -> dict:
        """Leader, members, the members running now, and the replicas other than the
        leader's (`slave_nodes`) with those in sync (`synchronised_slave_nodes`), by node
        name. Synchronisation is the leader's knowledge: here if this node leads, else what
        the leader last said (`remember`), else unknown (no `synchronised_slave_nodes`)."""
        host = self.app.host
        cluster = self.app.cluster
        members = list(record.members) or [self.app.node.name]
        running = set(cluster.running()) if cluster is not None else {self.app.node.name}
        out: dict = {"members": members, "online": [m for m in members if m in running]}
        gid = group_id(record)
        status = self.leader_status(gid) or self.remembered(gid)
        if host is not None and gid in self.replicas:
            leader = host.leader(gid)
            # a member not yet synchronised hears from no leader: the leader's word counts
            out["leader"] = (self.name_of(leader) if leader else None) or \
                (status["leader"] if status is not None else "")
        elif status is not None:
            out["leader"] = status["leader"]
        leader = out.get("leader", "")
        out["slave_nodes"] = [m for m in members if m != leader]
        if status is not None:
            in_sync = set(status["in_sync"])
            out["synchronised_slave_nodes"] = [m for m in members
                                               if m != leader and m in in_sync]
            out["voters"] = list(status["voters"])
        return out

    def leader_status(self, gid: str) -> dict | None:
        """The group as its leader sees it, if this node leads it: voters, those in sync,
        those alive (this node, and peers linked and not suspected), the leader's last
        index. None when this node does not lead the group."""
        host = self.app.host
        if host is None or gid not in self.replicas or not self._leads(gid):
            return None
        st = host.status(gid)
        me = self.app.node.name
        cluster = self.app.cluster
        up = cluster.links.peers_up() if cluster is not None else set()
        suspected = host.suspected()
        last = int(st["last_index"])
        match = {int(v): int(m) for v, m in st.get("match_index", {}).items()}
        voters: list[str] = []
        alive: list[str] = []
        in_sync: list[str] = []
        for v in st["voters"]:
            name = self.name_of(v) or str(v)
            voters.append(name)
            is_alive = v == host.node_id or (name in up and v not in suspected)
            if is_alive:
                alive.append(name)
            m = match.get(v, 0)
            if v == host.node_id or (is_alive and m >= last - SYNC_LAG_ENTRIES
                                     and (m > 0 or last == 0)):
                in_sync.append(name)
        return {"leader": me, "voters": voters, "alive": alive, "in_sync": in_sync,
                "last_index": last, "term": int(st["term"])}

    def remember(self, gid: str, status: dict) -> None:
        self._seen[gid] = (time.monotonic(), status)

    def remembered(self, gid: str) -> dict | None:
        seen = self._seen.get(gid)
        if seen is None:
            return None
        if time.monotonic() - seen[0] > STATUS_TTL_S:
            del self._seen[gid]
            return None
        return seen[1]

    def known_leader(self, record: QueueRecord) -> str | None:
        """The node believed to lead the queue's group, by name (None if none is known)."""
        gid = group_id(record)
        host = self.app.host
        if host is not None and gid in self.replicas:
            leader = host.leader(gid)
            if leader:
                return self.name_of(leader)
        status = self.remembered(gid)
        return status["leader"] if status is not None else None

    def name_of(self, node_id: int) -> str | None:
        if node_id == self.app.node_id:
            return self.app.node.name
        cluster = self.app.cluster
        return cluster.name_of(node_id) if cluster is not None else None

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
        return host is not None and gid in self.replicas and host.leader(gid) == host.node_id

    # -- proposing ----------------------------------------------------------------------------------
    def _propose(self, gid: str, data: bytes, waiting: Callable[[], bool]) -> Pending:
        sent = Pending()
        host = self.app.host
        if host is not None and self._leads(gid):
            # The common case, without a task per command: append here; only a proposal
            # that fails (leadership lost, host stopping) takes the retrying path.
            host.propose_then(gid, data, partial(self._proposed, gid, data, waiting, sent))
        elif self._send_to_leader(gid, data):
            # A follower's command goes one way to the leader, in order with this node's
            # others (one link), with no task or request per command; one the leader did
            # not take (it no longer led) is submitted again by the sweep (`_resend`). The
            # replicas drop a second copy, so sending again is always safe.
            self._in_flight.append((self.app.loop.time(), gid, data, waiting,
                                    sent))
        else:
            self._spawn(self._submit(gid, data, waiting, sent))
        return sent

    def _send_to_leader(self, gid: str, data: bytes) -> bool:
        host, cluster = self.app.host, self.app.cluster
        if host is None or cluster is None or gid not in self.replicas:
            return False
        leader = host.leader(gid)
        if not leader or leader == host.node_id:
            return False
        name = cluster.name_of(leader)
        return name is not None and cluster.links.send(name, PROPOSE_KIND, [gid, data])

    def _from_follower(self, peer: str, payload: list) -> None:  # noqa: ARG002
        gid, data = payload
        host = self.app.host
        if host is None or gid not in self.replicas or not self._leads(gid):
            return  # the sender submits it again after RESEND_S
        host.propose_then(gid, bytes(data), _ignore)

    def _resend(self) -> None:
        """Commands sent one way and still not applied after RESEND_S take the retrying
        path (a new leader, a lost link); the applied ones are done."""
        now = self.app.loop.time()
        flight = self._in_flight
        while flight:
            sent_at, gid, data, waiting, sent = flight[0]
            still = waiting()
            if still and now - sent_at < RESEND_S:
                break
            flight.popleft()
            if still:
                self._spawn(self._submit(gid, data, waiting, sent))
            else:
                sent.resolve(True)

    def _proposed(self, gid: str, data: bytes, waiting: Callable[[], bool], sent: Pending,
                  result: object, error: BaseException | None) -> None:  # noqa: ARG002
        if error is not None:
            if waiting():
                self._spawn(self._submit(gid, data, waiting, sent))
            return
        sent.resolve(True)

    async def _submit(self, gid: str, data: bytes, waiting: Callable[[], bool],
                      sent: Pending) -> None:
        host = self.app.host
        cluster = self.app.cluster
        if host is None:
            sent.fail(AMQPError(INTERNAL_ERROR, "node stopping"))
            return
        describe = cluster.describe_unreachable if cluster is not None else (lambda: "")

        def unreachable() -> str:
            why = f"quorum queue group {gid} has no reachable leader ({describe()})"
            q = self.replicas.get(gid)
            if q is not None and self.sync_mode(q.record) == "manual":
                # a member waiting for sync_queue hears from no leader
                why += ("; if this node's member of the queue is not synchronised yet, run "
                        "'warrenctl sync_queue'")
            return why

        why = await submit(host, gid, data, cluster.forward if cluster else None,
                           unreachable, TIMEOUT_S, waiting, idempotent=True)
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

    def _down_departed(self) -> None:
        """Consumers of nodes that are not running go, found by whoever leads now: a new
        leader elected after its predecessor's node died never saw that node's link drop,
        and the dead node's consumers would otherwise keep their messages forever."""
        cluster = self.app.cluster
        if cluster is None:
            return
        running = set(cluster.running())
        for gid, q in list(self.replicas.items()):
            if not self._leads(gid) or not q.machine.consumers:
                continue
            gone = {c.owner.rsplit("/", 1)[0] for c in q.machine.consumers.values()
                    if c.status != "cancelled" or c.checked_out}
            for node_name in sorted(gone - running):
                q.down_node(node_name)

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
            self._resend()
            if turns % RECONCILE_EVERY == 0:
                self._reconcile_drifted()
                self._down_departed()
            now = int(time.time() * 1000)
            for gid, q in list(self.replicas.items()):
                due = q.machine.next_timeout_ms()
                if due is not None and due <= now and self._leads(gid):
                    q.tick(now)


def _ignore(result: object, error: BaseException | None) -> None:
    """A follower's one-way command: its proposer learns the outcome from the apply."""
