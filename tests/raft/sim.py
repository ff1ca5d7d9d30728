"""Deterministic simulation of a Raft group: the real `RaftNode` code with the clock, the
network and the disks simulated, every random choice drawn from one seed.

A run has a fault phase (message delay, loss, duplication and reordering; partitions;
crashes that lose what the disk had not synced, sometimes tearing the last write; restarts;
membership changes; log compaction with snapshots) and then a calm phase (everything heals
and restarts, the network stops losing messages) in which the group must elect a leader
and commit a fresh command on every member within a bounded virtual time.

After every event the safety invariants are checked for the node it touched:
- election safety: at most one leader per term;
- log matching: entries with the same index and term hold the same data and follow
  entries with the same term (so, by induction, the logs agree up to there);
- leader completeness: a new leader holds every entry known to be committed;
- state machine safety: no two nodes apply different commands at the same index (and a
  state machine restored from a snapshot equals the one replayed from the log);
- a node's commit index never goes backwards while it runs, nor its durable commit.

Replay a seed: python -m tests.raft.sim --seed N [--verbose]
Many seeds:    python -m tests.raft.sim --seeds 0:1000 [--long]
"""

from __future__ import annotations

import argparse
import heapq
import random
import struct
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from warrenmq.raft import (
    ConfChangeOp,
    Entry,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    RaftConfig,
    RaftError,
    RaftNode,
    Ready,
    Role,
    StorageError,
)
from warrenmq.replication.host import SENT_BEFORE_DURABLE

_APP_STATE = struct.Struct(">QI")


class Violation(AssertionError):
    pass


@dataclass
class SimParams:
    voters: int = 3
    spares: int = 0  # extra nodes that membership changes can add
    tick_ms: int = 10
    fault_ms: int = 1500  # length of the fault phase
    calm_deadline_ms: int = 4000  # liveness bound once faults stop
    delay_ms: tuple[int, int] = (1, 12)
    slow_p: float = 0.05  # a message takes up to 10x longer (reordering)
    drop_p: float = 0.05
    dup_p: float = 0.03
    sync_ms: tuple[int, int] = (0, 4)
    stall_p: float = 0.1
    fault_every_ms: tuple[int, int] = (30, 150)
    propose_every_ms: tuple[int, int] = (5, 40)
    compact_p: float = 0.3  # per fault event
    membership: bool = False
    send_before_sync: bool = False  # a deliberately broken host, to test the checker
    # as RaftHost does: a leader's appends/heartbeats/snapshots leave before its own sync
    leader_sends_early: bool = False

    @classmethod
    def random(cls, rng: random.Random, long: bool = False) -> SimParams:
        p = cls()
        p.voters = rng.choice((1, 3, 3, 3, 5))
        p.membership = p.voters > 1 and rng.random() < 0.35
        p.spares = 2 if p.membership else 0
        p.drop_p = rng.choice((0.0, 0.02, 0.1))
        p.dup_p = rng.choice((0.0, 0.05))
        p.fault_ms = 20000 if long else rng.choice((600, 1000, 1500, 2500))
        p.leader_sends_early = rng.random() < 0.5
        return p


@dataclass
class AppState:
    """The replicated state machine: a checksum chain over applied commands."""

    index: int = 0
    digest: int = 0

    def encode(self) -> bytes:
        return _APP_STATE.pack(self.index, self.digest)

    @classmethod
    def decode(cls, data: bytes) -> AppState:
        if not data:
            return cls()
        return cls(*_APP_STATE.unpack(data))


@dataclass
class SimNode:
    id: int
    storage: MemoryStorage
    raft: RaftNode | None = None
    incarnation: int = 0
    pending: Ready | None = None
    app: AppState = field(default_factory=AppState)
    seen_commit: int = 0
    durable_commit: int = 0
    was_leader_term: int = -1


class Sim:
    def __init__(
        self, seed: int, params: SimParams | None = None, verbose: bool = False, long: bool = False
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.p = params or SimParams.random(self.rng, long)
        self.verbose = verbose
        self.now = 0
        self.events: list[tuple[int, int, str, tuple]] = []
        self._seq = 0
        self.config = RaftConfig(
            election_tick=10, heartbeat_tick=2, inflight_max=8, msg_bytes_max=64
        )
        ids = list(range(1, self.p.voters + self.p.spares + 1))
        voters = frozenset(ids[: self.p.voters])
        self.nodes: dict[int, SimNode] = {}
        for i in ids:
            st = MemoryStorage(voters if i in voters else frozenset())
            self.nodes[i] = SimNode(i, st)
            self._start(self.nodes[i])
            self._at(self.rng.randrange(self.p.tick_ms), "tick", (i,))
        self.groups: list[set[int]] | None = None  # partition, or None
        self.faulty = True
        # Invariant bookkeeping.
        self.leaders: dict[int, int] = {}  # term -> leader
        self.entry_facts: dict[tuple[int, int], tuple[bytes, int, int | None]] = {}
        self.committed_terms: dict[int, int] = {}
        self.applied_data: dict[int, bytes] = {}
        self.applied_digest: dict[int, int] = {}
        self.proposed = 0
        self.final_index: dict[int, int] = {}  # node -> index where it applied the final cmd
        self.final_cmd = b""
        self.stats = {
            "events": 0,
            "elections": 0,
            "crashes": 0,
            "snapshots": 0,
            "conf_changes": 0,
            "dropped": 0,
            "snapshot_msgs": 0,
            "timeout_now": 0,
        }

    # -- scheduling ---------------------------------------------------------------------
    def _at(self, delay_ms: int, kind: str, payload: tuple) -> None:
        self._seq += 1
        heapq.heappush(self.events, (self.now + delay_ms, self._seq, kind, payload))

    def trace(self, text: str) -> None:
        if self.verbose:
            print(f"{self.now:7d}ms {text}")

    def fail(self, text: str) -> None:
        raise Violation(f"seed {self.seed} at {self.now}ms: {text}")

    # -- nodes --------------------------------------------------------------------------
    def _start(self, n: SimNode) -> None:
        logger: Callable[[str], None] | None = self.trace if self.verbose else None
        node_rng = random.Random(self.rng.getrandbits(64))
        n.raft = RaftNode(n.id, n.storage, node_rng, self.config, logger)
        n.incarnation += 1
        n.pending = None
        hs, snap = n.storage.initial_state()
        n.app = AppState.decode(snap.data)
        n.seen_commit = n.raft.commit_index
        n.was_leader_term = -1

    def _crash(self, n: SimNode) -> None:
        self.stats["crashes"] += 1
        rd = n.pending
        if rd is not None and self.rng.random() < 0.5:
            # A torn write: the WAL got a prefix of this Ready's records before the crash.
            self._write(n, rd, torn=True)
        self.trace(f"CRASH {n.id}")
        n.raft = None
        n.pending = None
        self._report_down(n.id, [m.id for m in self.nodes.values() if m.id != n.id])

    def _report_down(self, gone: int, to: list[int]) -> None:
        """Most survivors learn of a lost peer (a dropped link) after a while, as the host's
        `peer_down` tells its groups; the choice of who campaigns soon is random here, so
        that two campaigning at once, or none, is exercised too."""
        for m in to:
            if self.rng.random() < 0.7:
                self._at(self.rng.randint(0, 30), "down", (m, gone, self.rng.random() < 0.5))

    def _pump(self, n: SimNode) -> None:
        """Hand the node's next Ready to its (simulated) disk."""
        raft = n.raft
        if raft is None or n.pending is not None:
            return
        rd = raft.ready()
        if rd is None:
            return
        n.pending = rd
        if self.p.send_before_sync:
            self._send_all(n, rd)
        elif self.p.leader_sends_early:
            for m in rd.messages:
                if m.type in SENT_BEFORE_DURABLE:
                    self._send(m)
        lo, hi = self.p.sync_ms
        delay = self.rng.randint(lo, hi)
        if self.faulty and self.rng.random() < self.p.stall_p:
            delay += self.rng.randint(5, 40)  # a disk stall: a wider window for crashes
        self._at(delay, "sync", (n.id, n.incarnation))

    def _write(self, n: SimNode, rd: Ready, torn: bool = False) -> None:
        st = n.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        entries = rd.entries
        if torn:
            entries = entries[: self.rng.randrange(len(entries) + 1)]
        if entries:
            st.append(entries)
            if not torn:
                self._check_entries(n, entries)
        if rd.hard_state is not None and len(entries) == len(rd.entries):
            if torn and self.rng.random() < 0.5:
                return
            if rd.hard_state.commit < n.durable_commit:
                self.fail(
                    f"node {n.id} durable commit went back {n.durable_commit} -> "
                    f"{rd.hard_state.commit}"
                )
            n.durable_commit = rd.hard_state.commit
            st.set_hard_state(rd.hard_state)

    def _sync(self, n: SimNode, rd: Ready) -> None:
        raft = n.raft
        assert raft is not None
        self._write(n, rd)
        if rd.snapshot is not None:
            n.app = AppState.decode(rd.snapshot.data)
            self._check_applied(n, rd.snapshot.index, None)
        if not self.p.send_before_sync:
            for m in rd.messages:
                if not (self.p.leader_sends_early and m.type in SENT_BEFORE_DURABLE):
                    self._send(m)
        for e in rd.committed_entries:
            self._apply(n, e)
        n.pending = None
        raft.advance(rd)

    def _apply(self, n: SimNode, e: Entry) -> None:
        if e.index != n.app.index + 1:
            self.fail(f"node {n.id} applies {e.index} after {n.app.index}")
        n.app = AppState(e.index, zlib.crc32(e.data, n.app.digest))
        self._check_applied(n, e.index, e.data)
        if e.kind is EntryKind.NORMAL and e.data == self.final_cmd and self.final_cmd:
            self.final_index[n.id] = e.index

    # -- network ------------------------------------------------------------------------
    def _send_all(self, n: SimNode, rd: Ready) -> None:
        for m in rd.messages:
            self._send(m)

    def _send(self, m: Message) -> None:
        if self.faulty and self.rng.random() < self.p.drop_p:
            self.stats["dropped"] += 1
            return
        copies = 2 if self.faulty and self.rng.random() < self.p.dup_p else 1
        for _ in range(copies):
            lo, hi = self.p.delay_ms
            delay = self.rng.randint(lo, hi)
            if self.rng.random() < self.p.slow_p:
                delay *= self.rng.randint(2, 10)
            self._at(delay, "deliver", (m,))

    def _linked(self, a: int, b: int) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    # -- invariants ---------------------------------------------------------------------
    def _check_entries(self, n: SimNode, entries: list[Entry]) -> None:
        st = n.storage
        prev_term: int | None
        try:
            prev_term = st.term(entries[0].index - 1)
        except StorageError:
            prev_term = None
        for e in entries:
            fact = (e.data, int(e.kind), prev_term)
            known = self.entry_facts.setdefault((e.index, e.term), fact)
            if (
                known[0] != fact[0]
                or known[1] != fact[1]
                or (known[2] is not None and prev_term is not None and known[2] != prev_term)
            ):
                self.fail(f"log matching: node {n.id} entry {e.term}/{e.index} {fact} vs {known}")
            prev_term = e.term

    def _check_applied(self, n: SimNode, index: int, data: bytes | None) -> None:
        digest = self.applied_digest.setdefault(index, n.app.digest)
        if digest != n.app.digest:
            self.fail(f"state machine safety: node {n.id} state differs at {index}")
        if data is not None and self.applied_data.setdefault(index, data) != data:
            self.fail(
                f"state machine safety: node {n.id} applied {data!r} at {index}, "
                f"another node {self.applied_data[index]!r}"
            )

    def _check_node(self, n: SimNode) -> None:
        raft = n.raft
        if raft is None:
            return
        if raft.role is Role.LEADER:
            leader = self.leaders.setdefault(raft.term, n.id)
            if leader != n.id:
                self.fail(f"election safety: {leader} and {n.id} both lead term {raft.term}")
            if n.was_leader_term != raft.term:
                n.was_leader_term = raft.term
                self.stats["elections"] += 1
                self._check_leader_completeness(n, raft)
        commit = raft.commit_index
        if commit < n.seen_commit:
            self.fail(f"node {n.id} commit index went back {n.seen_commit} -> {commit}")
        for i in range(n.seen_commit + 1, commit + 1):
            t = raft.log.term(i)
            if t is None:
                continue
            known = self.committed_terms.setdefault(i, t)
            if known != t:
                self.fail(f"node {n.id} committed {t}/{i}, another node committed {known}/{i}")
        n.seen_commit = commit

    def _check_leader_completeness(self, n: SimNode, raft: RaftNode) -> None:
        first = raft.log.first_index()
        for i, t in self.committed_terms.items():
            if i >= first and raft.log.term(i) != t:
                self.fail(
                    f"leader completeness: leader {n.id} of term {raft.term} has "
                    f"{raft.log.term(i)}/{i}, committed was {t}/{i}"
                )

    # -- faults and clients -------------------------------------------------------------
    def _leader(self) -> SimNode | None:
        best = None
        for n in self.nodes.values():
            if n.raft is not None and n.raft.role is Role.LEADER:
                if best is None or n.raft.term > best.raft.term:  # type: ignore[union-attr]
                    best = n
        return best

    def _fault(self) -> None:
        rng = self.rng
        live = [n for n in self.nodes.values() if n.raft is not None]
        dead = [n for n in self.nodes.values() if n.raft is None]
        r = rng.random()
        if r < 0.25 and live:
            self._crash(rng.choice(live))
        elif r < 0.45 and dead:
            n = rng.choice(dead)
            self.trace(f"RESTART {n.id}")
            self._start(n)
        elif r < 0.6:
            ids = list(self.nodes)
            rng.shuffle(ids)
            cut = rng.randint(1, max(1, len(ids) - 1))
            self.groups = [set(ids[:cut]), set(ids[cut:])]
            self.trace(f"PARTITION {sorted(self.groups[0])} | {sorted(self.groups[1])}")
            for a, b in ((self.groups[0], self.groups[1]), (self.groups[1], self.groups[0])):
                for gone in a:
                    self._report_down(gone, sorted(b))
        elif r < 0.7:
            self.groups = None
            self.trace("HEAL")
        elif r < 0.8 and self.p.membership:
            self._conf_change()
        elif r < 0.85:
            leader = self._leader()
            if leader is not None and leader.raft is not None:
                others = [v for v in leader.raft.voters if v != leader.id]
                if others:
                    to = rng.choice(others)
                    self.trace(f"TRANSFER {leader.id} -> {to}")
                    leader.raft.transfer_leadership(to)
                    self._pump(leader)
        if rng.random() < self.p.compact_p and live:
            self._compact(rng.choice(live))

    def _conf_change(self) -> None:
        leader = self._leader()
        if leader is None or leader.raft is None:
            return
        raft = leader.raft
        spares = [i for i in self.nodes if i not in raft.voters]
        if spares and (len(raft.voters) <= 2 or self.rng.random() < 0.5):
            op, target = ConfChangeOp.ADD, self.rng.choice(spares)
        else:
            op, target = ConfChangeOp.REMOVE, self.rng.choice(sorted(raft.voters))
        try:
            raft.propose_conf_change(op, target)
        except RaftError as e:
            self.trace(f"conf change refused: {e}")
            return
        self.stats["conf_changes"] += 1
        self.trace(f"CONF {op.name} {target} proposed on {leader.id}")
        self._pump(leader)

    def _compact(self, n: SimNode) -> None:
        raft = n.raft
        if raft is None or n.pending is not None or raft.log.unstable_snapshot is not None:
            return
        applied = raft.applied_index
        st = n.storage
        if applied - st.snapshot().index < 3:
            return
        assert n.app.index == applied
        st.create_snapshot(applied, raft.voters, n.app.encode())
        st.compact(max(st.first_index() - 1, applied - self.rng.randint(0, 3)))
        self.stats["snapshots"] += 1
        self.trace(f"COMPACT {n.id} to {applied}")

    def _propose(self, data: bytes) -> None:
        live = [n for n in self.nodes.values() if n.raft is not None]
        if not live:
            return
        n = self._leader() if self.rng.random() < 0.8 else self.rng.choice(live)
        if n is None or n.raft is None:
            return
        try:
            n.raft.propose(data)
        except RaftError:
            return
        self._pump(n)

    # -- the run ------------------------------------------------------------------------
    def run(self) -> dict[str, int]:
        p = self.p
        self._at(self.rng.randint(*p.fault_every_ms), "fault", ())
        self._at(self.rng.randint(*p.propose_every_ms), "client", ())
        self._at(p.fault_ms, "calm", ())
        deadline = p.fault_ms + p.calm_deadline_ms
        while self.events:
            when, _, kind, payload = heapq.heappop(self.events)
            self.now = when
            if self.now > deadline:
                self.fail(
                    f"liveness: no commit on every member within "
                    f"{p.calm_deadline_ms}ms of calm ({self._status()})"
                )
            self.stats["events"] += 1
            try:
                touched = self._event(kind, payload)
                if touched is not None:
                    self._pump(touched)
                    self._check_node(touched)
            except Violation:
                raise
            except Exception as e:  # an assertion inside the node is a finding too
                raise Violation(
                    f"seed {self.seed} at {self.now}ms: {type(e).__name__}: {e}\n"
                    + traceback.format_exc()
                ) from e
            if self._done():
                self.trace(f"DONE final command applied at {sorted(self.final_index.items())}")
                return self.stats
        self.fail("event queue ran dry")
        raise AssertionError  # unreachable

    def _event(self, kind: str, payload: tuple) -> SimNode | None:
        if kind == "tick":
            n = self.nodes[payload[0]]
            self._at(self.p.tick_ms, "tick", payload)
            if n.raft is not None:
                n.raft.tick()
                return n
        elif kind == "deliver":
            m: Message = payload[0]
            n = self.nodes[m.to]
            if n.raft is None or not self._linked(m.from_, m.to):
                return None
            if m.type is MessageType.SNAPSHOT:
                self.stats["snapshot_msgs"] += 1
            elif m.type is MessageType.TIMEOUT_NOW:
                self.stats["timeout_now"] += 1
            n.raft.step(m)
            return n
        elif kind == "down":
            n = self.nodes[payload[0]]
            if n.raft is not None:
                n.raft.leader_lost(payload[1], soon=payload[2])
                return n
        elif kind == "sync":
            n = self.nodes[payload[0]]
            if n.raft is not None and n.incarnation == payload[1] and n.pending is not None:
                self._sync(n, n.pending)
                return n
        elif kind == "fault":
            if self.faulty:
                self._fault()
                self._at(self.rng.randint(*self.p.fault_every_ms), "fault", ())
        elif kind == "client":
            self.proposed += 1
            if self.faulty:
                self._propose(b"c%d" % self.proposed)
                self._at(self.rng.randint(*self.p.propose_every_ms), "client", ())
            else:
                self._propose(self.final_cmd)
                self._at(50, "client", ())  # a client retrying until it is heard
        elif kind == "calm":
            self.faulty = False
            self.groups = None
            self.final_cmd = b"final-%d" % self.seed
            for n in self.nodes.values():
                if n.raft is None:
                    self._start(n)
            self.trace("CALM: healed, all restarted, no more loss")
        return None

    def _done(self) -> bool:
        if self.faulty or not self.final_index:
            return False
        leader = self._leader()
        if leader is None or leader.raft is None:
            return False
        return all(v in self.final_index for v in leader.raft.voters)

    def _status(self) -> str:
        parts = []
        for n in self.nodes.values():
            r = n.raft
            if r is None:
                parts.append(f"{n.id}:down")
            else:
                parts.append(
                    f"{n.id}:{r.role.value}@{r.term} commit={r.commit_index} "
                    f"applied={r.applied_index} last={r.log.last_index()} "
                    f"voters={sorted(r.voters)}"
                )
        return "; ".join(parts)


def run_seed(
    seed: int, verbose: bool = False, long: bool = False, send_before_sync: bool = False
) -> dict[str, int]:
    sim = Sim(seed, verbose=verbose, long=long)
    sim.p.send_before_sync = send_before_sync
    return sim.run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.raft.sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--seed", type=int, help="run one seed")
    ap.add_argument("--seeds", default="0:200", help="run a range of seeds, START:END")
    ap.add_argument("--verbose", action="store_true", help="print every event")
    ap.add_argument("--long", action="store_true", help="longer fault phases (soak)")
    ap.add_argument(
        "--send-before-sync",
        action="store_true",
        help="simulate a host that sends before its disk sync (must fail)",
    )
    args = ap.parse_args(argv)
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    else:
        try:
            start, end = (int(x) for x in args.seeds.split(":"))
        except ValueError:
            print(f"--seeds wants START:END, got {args.seeds!r}", file=sys.stderr)
            return 2
        seeds = range(start, end)
    t0 = time.monotonic()
    failed = 0
    events = 0
    for s in seeds:
        try:
            stats = run_seed(s, args.verbose, args.long, args.send_before_sync)
            events += stats["events"]
            if args.seed is not None:
                print(f"seed {s}: ok {stats}")
        except Violation as e:
            failed += 1
            print(f"FAIL {e}\n  replay: python -m tests.raft.sim --seed {s} --verbose")
    dt = time.monotonic() - t0
    print(f"{len(seeds)} seeds, {failed} failed, {events} events, {dt:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
