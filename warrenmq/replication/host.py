"""`RaftHost`: every Raft group of one node, driven by one asyncio task.

Theory of operation. One loop turn:
1. tick, if the tick interval has passed: only the *awake* groups are ticked (see below),
   and every known peer node is owed a batch this turn (the node-level heartbeat);
2. step the messages that arrived since the last turn into their groups;
3. take the Ready of every dirty group (proposals of the turn are broadcast first, so a
   follower gets them in one append); append all their entries, hard states and snapshots
   to the node's one WAL as one batch of records; a leader's appends, heartbeats and
   snapshots leave now, while the write is in flight (Raft thesis 10.2.1: the leader counts
   itself only once `advance` runs); so are committed entries applied, through each
   group's `apply(index, data)`, resolving the proposals they answer (committed means on
   a majority's disks: a confirm or a delivery need not wait for this turn's new records);
   then wait once for the batch to be durable, unless only commit indexes moved (etcd's
   MustSync: a commit index need not be synchronous);
4. only then send the rest (replies, votes): the messages of every group for one peer go
   in one batch, sent from the WAL's durable callback itself (a loop iteration before the
   turn's task resumes), unless a snapshot is to be installed first;
5. `advance` every Ready (a compaction asked for before that snapshots at the index
   applied, `applied_early`, not the core's).
Persist-before-reply holds because step 4 starts after step 3's durable callback.

While a turn waits for the disk, whatever arrives (a proposal, a batch from a peer) is not
left for the next turn: a pass (`_while_persisting`) steps it into its group and sends what
may leave before its Ready is persisted, the messages of step 3's early kind. So a proposal
made meanwhile reaches the followers at once, and followers' answers stepped meanwhile
commit entries and carry the new commit index out. The entries the pass stepped in are
written at once too (`RaftNode.take_unwritten`: they join the next fsync rather than wait
for the turn to end), and the replies that came with them leave once they are durable (the
WAL's callbacks fire in order, so after the waiting turn's records too); the next Ready
hands them back as `written_entries`, to be stored and made stable. A group whose term or
vote changed meanwhile, or that got a snapshot, keeps all of it for the next Ready, which
persists the hard state first; entries to apply always wait for the next turn. (etcd's
raft allows a Step between Ready and Advance; this is its asynchronous storage writes, for
what arrives while a write is in flight.) A compaction between turns writes such entries
again after the snapshot, as they are not in the storage yet.

Idle groups cost nothing per tick. The Raft core heartbeats from every leader on every
tick; the host does not tick a group that is *quiet*:
- a leader is quiet once every live peer matches its last index, everything is
  committed, and it saw no activity (anything but heartbeats) for 2 x election_tick ticks;
- a follower is quiet once it saw no activity for election_tick ticks and knows a leader
  whose node the failure detector holds alive. That is sooner than its leader, so it is
  never left ticking without heartbeats (which would start an election).
Liveness comes from the node-level failure detector instead: every batch, empty or not,
proves its sender alive; a peer silent for election_tick ticks is suspected. A suspected
leader's followers wake (and elect, with pre-vote); a peer that comes back, or restarts
with a new incarnation, wakes every group it is a voter of (its leaders then bring it up
to date). Any activity (proposal, non-heartbeat message, Ready with entries or commits)
wakes a group.

Peers. The nodes the host heartbeats and watches are the voters of its groups (plus the
static `peers` it was built with): a conf change or an installed snapshot that changes a
group's voters changes that set, so a node removed from every group it shared with us is
no longer sent to.

Membership. `propose_conf_change` adds or removes one voter (the Raft core's single-server
changes). A node added to an existing group calls `add_group` with the group's current
voters, itself included, and an empty log: it waits as a follower (its pre-votes cannot win
with an empty log, and cannot raise anyone's term) until the leader, once the change is
applied there, brings it up to date with entries or, if they are compacted, a snapshot.

Compaction. `compact(group, data)` snapshots a group at its applied index with `data` as
the state machine image. It runs inside the loop between turns, when everything the group
has handed to the WAL is also in its in-memory storage, and writes in ONE WAL batch the
snapshot, the current hard state and every entry after the snapshot index. A snapshot
record replaces a group's whole log on replay, so that batch alone restores the group: the
future resolves (once it is durable) with the batch's WAL `Location`, and every segment
before the lowest such `segment_id` over all groups (and the node's other WAL users) may be
deleted. `remove_group` writes a RAFT_REMOVED record so that a replay forgets the group.

The host does not own the WAL: the node's composition root opens it once, passes the
recovered records to `recover` (other kinds are skipped) and closes it after `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from warrenmq.raft import (
    NONE,
    ConfChange,
    ConfChangeOp,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    NotLeader,
    RaftConfig,
    RaftError,
    RaftNode,
    Ready,
    Role,
)
from warrenmq.store.wal import WAL, Location, WALError

from . import records
from .transport import Batch, Transport

log = logging.getLogger("warrenmq.replication")

ApplyFn = Callable[[int, bytes], object]
RestoreFn = Callable[[int, bytes], None]
_HEARTBEATS = (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP)
# what only a leader sends: may leave before the leader's own write is durable
SENT_BEFORE_DURABLE = frozenset((MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT))
_AFTER_DURABLE = frozenset(MessageType) - SENT_BEFORE_DURABLE


def _raft_debug(group_id: str, text: str) -> None:
    log.debug("group %r: %s", group_id, text)


class ReplicationError(Exception):
    """A proposal the host could not see through."""


class UnknownGroup(ReplicationError):
    def __init__(self, group_id: str) -> None:
        super().__init__(f"no Raft group {group_id!r} on this node")
        self.group_id = group_id


class LeadershipLost(ReplicationError):
    """This node stopped leading before the entry was applied here: the outcome is
    unknown (a new leader may still commit it); `leader_id` is the new leader, if known."""

    def __init__(self, group_id: str, leader_id: int) -> None:
        super().__init__(
            f"group {group_id!r}: leadership lost before the proposal was applied "
            f"(leader is now {leader_id or 'unknown'})"
        )
        self.group_id = group_id
        self.leader_id = leader_id


class HostStopped(ReplicationError):
    pass


@dataclass(slots=True)
class HostStats:
    turns: int = 0
    passes: int = 0  # steps and sends while a turn waited for the disk
    ticks: int = 0
    groups_ticked: int = 0  # group ticks actually done (quiet groups are skipped)
    wal_batches: int = 0  # turns that appended records
    records: int = 0
    batches_sent: int = 0
    messages_sent: int = 0
    batches_received: int = 0
    unknown_group_messages: int = 0


class _Group:
    __slots__ = ("id", "node", "storage", "apply", "restore", "pending", "idle_ticks", "voters",
                 "applied_early")

    def __init__(
        self,
        group_id: str,
        node: RaftNode,
        storage: MemoryStorage,
        apply: ApplyFn,
        restore: RestoreFn | None,
    ) -> None:
        self.id = group_id
        self.node = node
        self.storage = storage
        self.apply = apply
        self.restore = restore
        # index -> (term, future): proposals of this leader waiting for their entry.
        self.pending: dict[int, tuple[int, asyncio.Future[object] | _Callback]] = {}
        self.idle_ticks = 0
        self.voters: frozenset[int] = frozenset()  # as counted in the host's peer set
        # the last entry the host applied; ahead of the core's applied index while a turn
        # that applied before its write was durable awaits the disk (the core learns it
        # at `advance`): a compaction asked for meanwhile snapshots the state at this index
        self.applied_early = 0


OnDone = Callable[[object, "BaseException | None"], None]


class _Callback:
    """A proposal's outcome delivered to a plain callback: the host's future protocol
    (done, set_result, set_exception) without a future."""

    __slots__ = ("_fn", "_done")

    def __init__(self, fn: OnDone) -> None:
        self._fn = fn
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, value: object) -> None:
        self._call(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._call(None, error)

    def _call(self, value: object, error: BaseException | None) -> None:
        # called inside the host's turn (an asyncio future's callbacks ran later, from the
        # loop): a caller's bug must not stop every group, nor the proposals after it
        self._done = True
        try:
            self._fn(value, error)
        except Exception:
            log.exception("a proposal's callback failed")


@dataclass(slots=True)
class _Compaction:
    group: _Group
    index: int
    data: bytes
    future: asyncio.Future[Location]


class RaftHost:
    def __init__(
        self,
        node_id: int,
        wal: WAL,
        transport: Transport,
        *,
        tick_interval_s: float = 0.1,
        config: RaftConfig | None = None,
        rng: random.Random | None = None,
        peers: Iterable[int] = (),
    ) -> None:
        if node_id <= 0:
            raise ValueError(f"node ids are positive, got {node_id}")
        if tick_interval_s <= 0:
            raise ValueError(f"tick_interval_s must be positive, got {tick_interval_s}")
        self.node_id = node_id
        self.wal = wal
        self.transport = transport
        self.tick_interval_s = tick_interval_s
        self.config = config or RaftConfig()
        self.rng = rng or random.Random()
        self.incarnation = self.rng.getrandbits(63) or 1
        self.stats = HostStats()
        self._groups: dict[str, _Group] = {}
        self._recovered: dict[str, records.RecoveredGroup] = {}
        self._static_peers: frozenset[int] = frozenset(peers) - {node_id}
        self._voter_refs: Counter[int] = Counter()  # peer -> groups it is a voter of
        self._peers: set[int] = set(self._static_peers)
        self._compactions: list[_Compaction] = []
        self._awake: set[_Group] = set()
        self._dirty: set[_Group] = set()
        self._unsent: set[_Group] = set()  # proposals not yet broadcast (one append per turn)
        # WAL records (a count) that must be durable before the replies being sent leave:
        # the entries, terms, votes and snapshots they may acknowledge (a check for tests)
        self.must_be_durable = 0
        self._inbox: list[Batch] = []
        self._tick_no = 0
        self._heard: dict[int, int] = {}  # peer -> tick number it was last heard at
        self._incarnations: dict[int, int] = {}
        self._suspected: set[int] = set()
        self._wake: asyncio.Event | None = None
        self._persisting = False  # a turn waits for its records to be durable
        self._between_scheduled = False
        self._task: asyncio.Task[None] | None = None
        # asyncio.get_running_loop() makes a getpid() system call on every call (3.11's
        # fork check): a tenth of a busy leader's time when called per proposal
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # -- set-up -------------------------------------------------------------------------
    def recover(self, wal_records: Iterable[tuple[object, int, bytes]]) -> None:
        """Take the WAL's recovered (location, kind, payload) records before adding groups."""
        if self._groups:
            raise ReplicationError("recover() must run before any group is added")
        self._recovered = records.replay((kind, payload) for _, kind, payload in wal_records)

    def recovered_groups(self) -> list[str]:
        return sorted(self._recovered)

    def add_group(
        self, group_id: str, voters: Iterable[int], apply: ApplyFn, restore: RestoreFn | None = None
    ) -> None:
        """Host a group. A group found in the WAL restarts from its recovered state and
        re-applies its committed log from its snapshot (or the start) through `apply`."""
        if group_id in self._groups:
            raise ReplicationError(f"group {group_id!r} already exists on this node")
        voter_set = frozenset(voters)
        if not voter_set or any(v <= 0 for v in voter_set):
            raise ValueError(f"voters must be positive node ids, got {sorted(voter_set)}")
        rec = self._recovered.pop(group_id, None)
        storage = rec.storage(voter_set) if rec is not None else MemoryStorage(voter_set)
        snap = storage.snapshot()
        if snap.index and restore is None:
            raise ReplicationError(f"group {group_id!r} recovered a snapshot: needs restore")
        if snap.index and restore is not None:
            restore(snap.index, snap.data)
        node = RaftNode(self.node_id, storage, self.rng, self.config,
                        partial(_raft_debug, group_id))
        g = _Group(group_id, node, storage, apply, restore)
        self._groups[group_id] = g
        # Until the log replays, the group may name more voters than its snapshot's.
        self._set_voters(g, node.voters | voter_set)
        self._touch(g)
        if len(node.voters) == 1 and self.node_id in node.voters:
            node.campaign()  # a group of one needs no timeout to know it wins
            self._dirty.add(g)
        self._kick()

    async def start(self) -> None:
        if self._task is not None:
            raise ReplicationError("host already started")
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        for peer in self._peers:
            self._heard[peer] = 0  # every peer gets a full timeout's grace at start
        self.transport.bind(self.node_id, self._receive)
        self._task = asyncio.create_task(self._run(), name=f"raft-host {self.node_id}")

    async def stop(self) -> None:
        """Stop the loop (a turn in progress finishes) and fail every waiting proposal."""
        self._stopping = True
        self.transport.unbind(self.node_id)
        if self._task is not None:
            self._kick()
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for g in list(self._groups.values()):
            self._fail_pending(g, HostStopped(f"node {self.node_id} stopped"))
        compactions, self._compactions = self._compactions, []
        for c in compactions:
            if not c.future.done():
                c.future.set_exception(HostStopped(f"node {self.node_id} stopped"))

    # -- the API ------------------------------------------------------------------------
    def propose(self, group_id: str, data: bytes) -> asyncio.Future[object]:
        """Propose `data`; the future gets `apply`'s result once the entry is committed and
        applied here, or NotLeader (with the leader's node id), LeadershipLost, ..."""
        fut: asyncio.Future[object] = self._future()
        self._propose(group_id, data, fut)
        return fut

    def propose_then(self, group_id: str, data: bytes, on_done: OnDone) -> None:
        """`propose` for the per-message path: `on_done(result, None)` or `on_done(None,
        error)` is called as the outcome is known (at once if refused), with no future and
        no loop callback per proposal."""
        self._propose(group_id, data, _Callback(on_done))

    def _propose(self, group_id: str, data: bytes, fut: asyncio.Future[object] | _Callback
                 ) -> None:
        g = self._groups.get(group_id)
        if g is None:
            fut.set_exception(UnknownGroup(group_id))
            return
        if not data:
            # The leader's own no-op entries are empty: an empty command would be ambiguous.
            fut.set_exception(ValueError("a proposal needs non-empty data"))
            return
        if self._stopping or self._task is None:
            fut.set_exception(HostStopped(f"node {self.node_id} is not running"))
            return
        try:
            index = g.node.propose(bytes(data), broadcast=False)
        except RaftError as exc:
            fut.set_exception(exc)
            return
        g.pending[index] = (g.node.term, fut)
        self._unsent.add(g)
        self._touch(g)
        self._dirty.add(g)
        self._kick()

    def propose_conf_change(
        self, group_id: str, op: ConfChangeOp, node_id: int
    ) -> asyncio.Future[object]:
        """Add or remove one voter. The future gets the group's new voter set once the
        change is applied here, or NotLeader, ProposalDropped (a change is still pending),
        RaftError (already a voter / not a voter), LeadershipLost..."""
        fut, g = self._new_future(group_id)
        if g is None:
            return fut
        try:
            index = g.node.propose_conf_change(ConfChangeOp(op), node_id)
        except RaftError as exc:
            fut.set_exception(exc)
            return fut
        g.pending[index] = (g.node.term, fut)
        self._touch(g)
        self._dirty.add(g)
        self._kick()
        return fut

    def transfer_leadership(self, group_id: str, to: int) -> None:
        """Ask this node's leadership of `group_id` to pass to node `to` (NotLeader if this
        node does not lead; RaftError if `to` is not a voter). Proposals are refused until
        the transfer ends; it is abandoned after an election timeout."""
        g = self._get(group_id)
        g.node.transfer_leadership(to)
        self._touch(g)
        self._dirty.add(g)
        self._kick()

    def applied_index(self, group_id: str) -> int:
        """The last entry of `group_id` applied here (the image a compaction takes now is
        the state at this index; see `compact`)."""
        g = self._get(group_id)
        return max(g.node.applied_index, g.applied_early)

    def compact(self, group_id: str, data: bytes,
                index: int | None = None) -> asyncio.Future[Location]:
        """Snapshot `group_id` at its applied index, `data` being the state machine's image
        at that index (take it between two awaits: the index is the last entry the host
        applied, `applied_early`, which a turn may set before its `advance` while it waits
        for the disk, so the image and the index agree there); or at `index`, an earlier
        `applied_index`, for an image taken then. The future resolves, once durable,
        with the WAL Location of the compaction batch (snapshot, hard state, entries after
        it): the group needs no record before that location, so segments before
        `location.segment_id` are free of it. If the group meanwhile installed a newer
        snapshot from its leader, that snapshot is rewritten instead and `data` unused."""
        fut: asyncio.Future[Location] = self._future()
        g = self._groups.get(group_id)
        if g is None:
            fut.set_exception(UnknownGroup(group_id))
        elif self._stopping or self._task is None:
            fut.set_exception(HostStopped(f"node {self.node_id} is not running"))
        else:
            if index is None:
                index = max(g.node.applied_index, g.applied_early)
            self._compactions.append(_Compaction(g, index, bytes(data), fut))
            self._kick()
        return fut

    def remove_group(self, group_id: str) -> None:
        """Stop hosting `group_id` here: its waiting proposals fail, its peers are dropped
        unless another group needs them, and a record tells the next replay to forget it.
        (Removing this node from the group's configuration is `propose_conf_change`'s job;
        this is what follows it.) A group recovered from the WAL but never added can be
        removed too, before or after `start`."""
        g = self._groups.pop(group_id, None)
        if g is None and self._recovered.pop(group_id, None) is None:
            raise UnknownGroup(group_id)
        if g is not None:
            self._awake.discard(g)
            self._dirty.discard(g)
            self._set_voters(g, frozenset())
            self._fail_pending(g, UnknownGroup(group_id))
        if not self._stopping:
            self.wal.append(records.RAFT_REMOVED, records.encode_removed(group_id))

    def status(self, group_id: str) -> dict[str, Any]:
        """The group as this node sees it; a leader adds each voter's match index."""
        g = self._get(group_id)
        node = g.node
        out: dict[str, Any] = {
            "group": group_id,
            "node_id": self.node_id,
            "role": node.role.value,
            "term": node.term,
            "leader_id": node.leader_id,
            "commit_index": node.commit_index,
            "applied_index": node.applied_index,
            "last_index": node.log.last_index(),
            "snapshot_index": g.storage.snapshot().index,
            "voters": sorted(node.voters),
            "quiet": g not in self._awake,
        }
        if node.role is Role.LEADER:
            out["match_index"] = {v: pr.match_index for v, pr in sorted(node.progress.items())}
            out["progress"] = {v: pr.state.value for v, pr in sorted(node.progress.items())}
        return out

    def groups(self) -> list[str]:
        return sorted(self._groups)

    def peers(self) -> frozenset[int]:
        """The nodes this host heartbeats and watches."""
        return frozenset(self._peers)

    def leader(self, group_id: str) -> int:
        """The node believed to lead `group_id` (0 if none is known)."""
        g = self._groups.get(group_id)
        if g is None:
            raise UnknownGroup(group_id)
        return g.node.leader_id

    def campaign(self, group_id: str) -> None:
        """Start an election in `group_id` now (boot, tests, leadership placement)."""
        g = self._groups[group_id]
        g.node.campaign()
        self._touch(g)
        self._dirty.add(g)
        self._kick()

    def peer_down(self, peer: int) -> None:
        """`peer`'s node is gone (its link dropped: a crash closes its sockets at once), so
        the failure detector need not wait for its silence: the groups it led elect a new
        leader now. Pre-vote keeps this harmless if the peer is in fact alive and still
        heard by a majority (they refuse while its lease runs)."""
        if peer == self.node_id or peer not in self._peers:
            return
        if peer not in self._suspected:
            self._suspected.add(peer)
            log.info("node %s: node %s is down (link lost)", self.node_id, peer)
        for g in self._groups.values():
            node = g.node
            if node.leader_id != peer:
                continue
            alive = [v for v in node.voters if v != peer and self._alive(v)]
            soon = bool(alive) and min(alive) == self.node_id
            node.leader_lost(peer, soon=soon)
            log.debug("node %s: group %r lost its leader %s; campaigning %s", self.node_id,
                      g.id, peer, "now" if soon else "later")
            self._touch(g)
            if node.has_ready():
                self._dirty.add(g)
        self._kick()

    def group(self, group_id: str) -> RaftNode:
        """The group's Raft node, read-only by convention (diagnostics and tests)."""
        return self._groups[group_id].node

    def is_quiet(self, group_id: str) -> bool:
        return self._groups[group_id] not in self._awake

    def suspected(self) -> frozenset[int]:
        return frozenset(self._suspected)

    # -- the loop -----------------------------------------------------------------------
    def _get(self, group_id: str) -> _Group:
        g = self._groups.get(group_id)
        if g is None:
            raise UnknownGroup(group_id)
        return g

    def _future(self) -> asyncio.Future[Any]:
        return (self._loop or asyncio.get_running_loop()).create_future()

    def _new_future(self, group_id: str) -> tuple[asyncio.Future[object], _Group | None]:
        """A future for a proposal, already failed (and no group) if it cannot be made."""
        fut: asyncio.Future[object] = self._future()
        g = self._groups.get(group_id)
        if g is None:
            fut.set_exception(UnknownGroup(group_id))
            return fut, None
        if self._stopping or self._task is None:
            fut.set_exception(HostStopped(f"node {self.node_id} is not running"))
            return fut, None
        return fut, g

    def _set_voters(self, g: _Group, voters: frozenset[int]) -> None:
        """Count `g`'s voters in the peer set: peers come and go with the groups."""
        old = g.voters
        if voters == old:
            return
        g.voters = voters
        self._voter_refs.update(voters - old)
        self._voter_refs.subtract(old - voters)
        for peer in (old | voters) - {self.node_id}:
            wanted = self._voter_refs[peer] > 0 or peer in self._static_peers
            if wanted and peer not in self._peers:
                self._peers.add(peer)
                self._heard[peer] = self._tick_no  # a new peer gets a full timeout's grace
            elif not wanted and peer in self._peers:
                self._peers.discard(peer)
                self._heard.pop(peer, None)
                self._suspected.discard(peer)
                self._incarnations.pop(peer, None)
            if self._voter_refs[peer] <= 0:
                del self._voter_refs[peer]

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self._persisting and not self._between_scheduled:
            self._between_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._while_persisting)

    def _while_persisting(self) -> None:
        """While a turn waits for the disk: step what arrived and send what may leave
        before its Ready is persisted (a leader's appends and heartbeats), so a proposal or
        an answer that comes meanwhile does not wait for the turn to end; write the entries
        stepped in, their replies to follow once durable (`_write_while_persisting`).
        Entries to apply, and a group whose term or vote changed, wait for the next turn."""
        self._between_scheduled = False
        if not self._persisting or self._stopping:
            return
        self.stats.passes += 1
        try:
            unsent, self._unsent = self._unsent, set()
            for g in unsent:
                if self._groups.get(g.id) is g:
                    g.node.broadcast()
            self._step_inbox()
            out: dict[int, list[tuple[str, Message]]] = {}
            for g in (*unsent, *self._dirty):
                for m in g.node.take_messages(SENT_BEFORE_DURABLE):
                    out.setdefault(m.to, []).append((g.id, m))
            self._send_batches(out)
            self._write_while_persisting()
        except Exception:
            log.exception("node %s: the Raft host failed and stops", self.node_id)
            self._halt("Raft host failed")

    def _touch(self, g: _Group) -> None:
        g.idle_ticks = 0
        self._awake.add(g)

    def _receive(self, batch: Batch) -> None:
        self._inbox.append(batch)
        self._kick()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        next_tick = loop.time() + self.tick_interval_s
        try:
            while not self._stopping:
                timeout = next_tick - loop.time()
                if timeout > 0 and not self._inbox and not self._dirty and not self._compactions:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    if self._stopping:
                        break
                self._wake.clear()
                heartbeat_due = False
                now = loop.time()
                if now >= next_tick:
                    self._tick()
                    heartbeat_due = True
                    # A late turn does not owe several ticks: the timer skips, not bursts.
                    next_tick = max(next_tick + self.tick_interval_s, now)
                self._step_inbox()
                await self._handle_readies(heartbeat_due)
                if self._compactions:
                    self._compact()
        except WALError:
            # Nothing more may be acknowledged on a node whose log failed.
            log.exception("node %s: the WAL failed; the Raft host stops", self.node_id)
            self._halt("WAL failed")
        except Exception:
            # A bug must not leave the node looking alive with every group frozen: say so
            # loudly and stop, so that peers elect elsewhere and waiting callers fail.
            log.exception("node %s: the Raft host failed and stops", self.node_id)
            self._halt("Raft host failed")

    def _halt(self, why: str) -> None:
        self._stopping = True
        self.transport.unbind(self.node_id)
        for g in list(self._groups.values()):
            self._fail_pending(g, HostStopped(f"node {self.node_id}: {why}"))

    def _tick(self) -> None:
        self._tick_no += 1
        self.stats.ticks += 1
        self._detect_failures()
        for g in list(self._awake):
            g.node.tick()
            g.idle_ticks += 1
            self.stats.groups_ticked += 1
            if g.node.has_ready():
                self._dirty.add(g)
            if self._quiet(g):
                self._awake.discard(g)

    def _alive(self, peer: int) -> bool:
        return peer == self.node_id or peer not in self._suspected

    def _quiet(self, g: _Group) -> bool:
        node = g.node
        e = self.config.election_tick
        if node.role is Role.LEADER:
            last = node.log.last_index()
            return (
                g.idle_ticks >= 2 * e
                and node.commit_index == last
                and all(
                    pr.match_index == last or not self._alive(v) for v, pr in node.progress.items()
                )
            )
        if node.role is Role.FOLLOWER:
            return g.idle_ticks >= e and node.leader_id != NONE and self._alive(node.leader_id)
        return False

    def _detect_failures(self) -> None:
        limit = self.config.election_tick
        for peer in self._peers:
            silent = self._tick_no - self._heard.get(peer, 0) > limit
            if silent and peer not in self._suspected:
                self._suspected.add(peer)
                log.info("node %s suspects node %s", self.node_id, peer)
                for g in self._groups.values():
                    if g.node.leader_id == peer:
                        self._touch(g)

    def _peer_back(self, peer: int) -> None:
        """`peer` returned or restarted: wake the groups it belongs to, so their leaders
        heartbeat it (and catch it up) and their followers re-learn who leads."""
        self._suspected.discard(peer)
        for g in self._groups.values():
            if peer in g.node.voters:
                self._touch(g)

    def _step_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for batch in inbox:
            self.stats.batches_received += 1
            peer = batch.from_node
            # Only peers are heard: a sender outside every group (a node added to a group
            # whose change is not applied here yet) must not join the heartbeat set.
            if peer in self._peers:
                self._heard[peer] = self._tick_no
            known = self._incarnations.get(peer)
            self._incarnations[peer] = batch.incarnation
            if peer in self._suspected or (known is not None and known != batch.incarnation):
                self._peer_back(peer)
            for group_id, msg in batch.messages:
                g = self._groups.get(group_id)
                if g is None:
                    self.stats.unknown_group_messages += 1
                    continue
                g.node.step(msg)
                if msg.type not in _HEARTBEATS:
                    self._touch(g)
                if g.node.has_ready():
                    self._dirty.add(g)

    async def _handle_readies(self, heartbeat_due: bool) -> None:
        self.stats.turns += 1
        unsent, self._unsent = self._unsent, set()
        for g in unsent:
            if self._groups.get(g.id) is g:
                g.node.broadcast()
        work: list[tuple[_Group, Ready]] = []
        for g in self._dirty:
            rd = g.node.ready()
            if rd is not None:
                work.append((g, rd))
        self._dirty.clear()
        # 1. persist: one append for every group's records, one wait for durability.
        recs: list[tuple[int, bytes]] = []
        must_wait = False
        for g, rd in work:
            if rd.snapshot is not None:
                recs.append((records.RAFT_SNAPSHOT, records.encode_snapshot(g.id, rd.snapshot)))
                must_wait = True
            if rd.entries:
                recs.append((records.RAFT_ENTRIES, records.encode_entries(g.id, rd.entries)))
                must_wait = True
            if rd.written_entries:
                must_wait = True  # written while a turn waited: not known durable yet
            hs = rd.hard_state
            if hs is not None:
                recs.append((records.RAFT_HARD_STATE, records.encode_hard_state(g.id, hs)))
                was = g.storage.hard_state
                must_wait = must_wait or hs.term != was.term or hs.vote != was.vote
        sent_early: set[int] = set()
        applied: set[str] = set()  # groups whose committed entries are applied already
        late: dict[int, list[tuple[_Group, Message]]] | None = None  # sent once durable
        needs = self.must_be_durable  # the WAL records this turn's replies acknowledge
        if recs and not must_wait:
            # Only commit indexes moved: nothing sent or applied this turn relies on them
            # being on disk (a commit index lost in a crash is learnt again from the
            # leader, or re-established by a new one), so the turn does not wait for them;
            # the WAL makes them durable with its next fsync (etcd's raft.MustSync draws the
            # same line: only entries, term and vote need a synchronous write).
            self.wal.append_many(recs)
            self.stats.wal_batches += 1
            self.stats.records += len(recs)
        elif must_wait:
            if recs:
                self.wal.append_many(recs)
                self.stats.wal_batches += 1
                self.stats.records += len(recs)
            needs = self.wal.appended
            # A leader's appends and heartbeats go out while its own write is in flight
            # [Raft thesis 10.2.1]: it counts itself towards a commit only once `advance`
            # runs, after the write is durable, so a majority of *other* replicas having an
            # entry on disk is what may commit it meanwhile. Everything else (votes, replies
            # to a leader) waits for the disk: a reply promises what it acknowledges is there.
            early: dict[int, list[tuple[str, Message]]] = {}
            for g, rd in work:
                for m in rd.messages:
                    if m.type in SENT_BEFORE_DURABLE:
                        early.setdefault(m.to, []).append((g.id, m))
            self._send_batches(early)
            sent_early = set(early)
            # Committed entries are on a majority's disks already: applying them (a
            # publisher's confirm, a delivery to a consumer here) does not wait for this
            # turn's new records to be durable too.
            # (Not a group with a conf change among them: its caller would resume before
            # `advance` gives the core the new voters.)
            applied = self._apply_committed(
                [(g, rd) for g, rd in work
                 if not any(e.kind is EntryKind.CONF_CHANGE for e in rd.committed_entries)])
            # The replies and votes of this turn are known now: they leave from the WAL's
            # durable callback itself, a loop iteration before this task resumes. (Not
            # with a snapshot to install: its reply waits until it is restored.)
            if not any(rd.snapshot is not None for _, rd in work):
                late = self._late_messages(work, sent_early, heartbeat_due)
                self._send_once_durable(late)
            self._persisting = True
            try:
                await self._durable()
            finally:
                self._persisting = False
        # A group removed while its records were being made durable is not served further.
        work = [(g, rd) for g, rd in work if self._groups.get(g.id) is g]
        for g, rd in work:
            if rd.snapshot is not None:
                g.storage.apply_snapshot(rd.snapshot)
                if g.restore is None:
                    raise ReplicationError(f"group {g.id!r} got a snapshot: needs restore")
                g.restore(rd.snapshot.index, rd.snapshot.data)
            g.storage.append(rd.written_entries + rd.entries if rd.written_entries
                             else rd.entries)
            if rd.hard_state is not None:
                g.storage.set_hard_state(rd.hard_state)
        # 2. send (unless sent as the records became durable): one batch per peer node,
        # carrying every group's messages for it.
        if late is None:
            self._send_late(self._late_messages(work, sent_early, heartbeat_due), needs)
        # 3. apply (unless done above), then advance.
        self._apply_committed([(g, rd) for g, rd in work if g.id not in applied])
        for g, rd in work:
            g.node.advance(rd)
            if g.voters != g.node.voters:  # a conf change applied, or a snapshot installed
                self._set_voters(g, g.node.voters)
            if g.pending and g.node.role is not Role.LEADER:
                self._fail_pending(g, LeadershipLost(g.id, g.node.leader_id))
            if g.node.has_ready():
                self._dirty.add(g)

    def _apply_committed(self, work: list[tuple[_Group, Ready]]) -> set[str]:
        """Apply the committed entries of `work`; the ids of its groups."""
        for g, rd in work:
            if rd.entries or rd.committed_entries or rd.hard_state is not None:
                self._touch(g)
            for e in rd.committed_entries:
                self._apply(g, e.index, e.term, e.kind, e.data)
            if rd.committed_entries:
                g.applied_early = rd.committed_entries[-1].index
        return {g.id for g, _ in work}

    def _send_batches(self, out: dict[int, list[tuple[str, Message]]]) -> None:
        for peer in sorted(out):
            msgs = out[peer]
            try:
                self.transport.send(peer, Batch(self.node_id, self.incarnation, tuple(msgs)))
            except Exception:  # Raft sends again; one batch must not stop every group
                log.exception("node %s: a batch of %d messages for node %s was not sent",
                              self.node_id, len(msgs), peer)
                continue
            self.stats.batches_sent += 1
            self.stats.messages_sent += len(msgs)

    def _compact(self) -> None:
        """Carry out the queued compactions. Called between turns only: every record the
        groups handed to the WAL is then in their storage too, but for entries written while
        the last turn waited (the log's `written` ones), which the batch carries after the
        storage's; so it is complete and later records can only extend it."""
        todo, self._compactions = self._compactions, []
        batch: list[tuple[int, bytes]] = []
        done: list[tuple[_Compaction, int]] = []
        for c in todo:
            g = c.group
            if self._groups.get(g.id) is not g:
                c.future.set_exception(UnknownGroup(g.id))
                continue
            storage = g.storage
            snap = storage.snapshot()
            if c.index > snap.index:
                snap = storage.create_snapshot(c.index, self._voters_at(g, c.index), c.data)
            first = len(batch)
            batch.append((records.RAFT_SNAPSHOT, records.encode_snapshot(g.id, snap)))
            batch.append(
                (records.RAFT_HARD_STATE, records.encode_hard_state(g.id, storage.hard_state))
            )
            last = storage.last_index()
            if last > snap.index:
                entries = storage.entries(snap.index + 1, last + 1, 1 << 62)
                batch.append((records.RAFT_ENTRIES, records.encode_entries(g.id, entries)))
            log_ = g.node.log
            if log_.written:  # written while a turn waited, stored after the next one
                batch.append((records.RAFT_ENTRIES,
                              records.encode_entries(g.id, log_.unstable[: log_.written])))
            storage.compact(snap.index)
            done.append((c, first))
        if not batch:
            return
        try:
            locations = self.wal.append_many(batch)
        except WALError as exc:
            for c, _ in done:
                c.future.set_exception(exc)
            raise
        self.stats.wal_batches += 1
        self.stats.records += len(batch)

        def durable(error: WALError | None) -> None:
            for c, first in done:
                if c.future.done():
                    continue
                if error is None:
                    c.future.set_result(locations[first])
                else:
                    c.future.set_exception(error)

        self.wal.on_durable(durable)

    @staticmethod
    def _voters_at(g: _Group, index: int) -> frozenset[int]:
        """The group's voters in force at `index` (a stored index past the snapshot): the
        snapshot's, changed by the conf-change entries up to `index`. The node's current
        voters may already be later ones (an incoming snapshot sets them early)."""
        storage = g.storage
        snap = storage.snapshot()
        voters = snap.voters
        if index > snap.index:
            for e in storage.entries(snap.index + 1, index + 1, 1 << 62):
                if e.kind is EntryKind.CONF_CHANGE:
                    voters = ConfChange.decode(e.data).voters
        return voters

    def _write_while_persisting(self) -> None:
        """Write the entries stepped in meanwhile, and send the replies stepped in with them
        once they are durable (the WAL's callbacks fire in order: after this turn's own
        records too). Not a group whose term or vote changed meanwhile, or that got a
        snapshot: those wait for the next Ready, which persists the hard state first."""
        recs: list[tuple[int, bytes]] = []
        late: dict[int, list[tuple[_Group, Message]]] = {}
        for g in self._dirty:
            if self._groups.get(g.id) is not g or not g.node.may_reply_early():
                continue
            ents = g.node.take_unwritten()
            if ents:
                recs.append((records.RAFT_ENTRIES, records.encode_entries(g.id, ents)))
            for m in g.node.take_messages(_AFTER_DURABLE):
                late.setdefault(m.to, []).append((g, m))
        if recs:
            self.wal.append_many(recs)
            self.stats.wal_batches += 1
            self.stats.records += len(recs)
        if late:
            self._send_once_durable(late)

    def _late_messages(self, work: list[tuple[_Group, Ready]], sent_early: set[int],
                       heartbeat_due: bool) -> dict[int, list[tuple[_Group, Message]]]:
        """What `work` sends once its records are durable, by peer (with an empty batch for
        every peer owed a heartbeat and not sent to yet)."""
        out: dict[int, list[tuple[_Group, Message]]] = {}
        for g, rd in work:
            for m in rd.messages:
                if not (sent_early and m.type in SENT_BEFORE_DURABLE):
                    out.setdefault(m.to, []).append((g, m))
        if heartbeat_due:
            for peer in self._peers - sent_early:
                out.setdefault(peer, [])
        return out

    def _send_once_durable(self, late: dict[int, list[tuple[_Group, Message]]]) -> None:
        """Send `late` from the WAL's callback once everything appended so far is durable
        (callbacks fire in registration order)."""
        needs = self.wal.appended

        def durable(error: WALError | None) -> None:
            if error is None and not self._stopping:
                self._send_late(late, needs)

        self.wal.on_durable(durable)

    def _send_late(self, late: dict[int, list[tuple[_Group, Message]]], needs: int) -> None:
        # a group removed while its records were being made durable sends nothing more
        self.must_be_durable = needs
        groups = self._groups
        self._send_batches({peer: [(g.id, m) for g, m in msgs if groups.get(g.id) is g]
                            for peer, msgs in late.items()})

    async def _durable(self) -> None:
        fut: asyncio.Future[WALError | None] = self._future()

        def done(error: WALError | None) -> None:
            if not fut.done():
                fut.set_result(error)

        self.wal.on_durable(done)
        error = await fut
        if error is not None:
            raise error

    def _apply(self, g: _Group, index: int, term: int, kind: EntryKind, data: bytes) -> None:
        waiting = g.pending.pop(index, None)
        if kind is EntryKind.CONF_CHANGE:
            result: object = ConfChange.decode(data).voters  # the core applies it in advance
        elif not data:
            result = None  # a leader's no-op entry
        else:
            try:
                result = g.apply(index, data)
            except Exception as exc:  # the state machine's bug must not stop every group
                log.exception("group %r: apply(%s) failed", g.id, index)
                result = exc
        if waiting is None:
            return
        want_term, fut = waiting
        if fut.done():
            return
        if want_term != term:
            fut.set_exception(LeadershipLost(g.id, g.node.leader_id))
        elif isinstance(result, Exception):
            fut.set_exception(result)
        else:
            fut.set_result(result)

    def _fail_pending(self, g: _Group, error: Exception) -> None:
        pending, g.pending = g.pending, {}
        for _, fut in pending.values():
            if not fut.done():
                fut.set_exception(error)


__all__ = [
    "HostStats",
    "HostStopped",
    "LeadershipLost",
    "NotLeader",
    "RaftHost",
    "ReplicationError",
    "UnknownGroup",
]
