"""An in-memory Raft group for the paper tests and the interaction scripts: each node has
a `MemoryStorage` that a Ready is written to at once, an inbox, and an applied list; the
test decides when Readys are handled and which messages are delivered or dropped."""

from __future__ import annotations

import random
from collections.abc import Callable

from warrenmq.raft import (
    ConfChange,
    Entry,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    RaftConfig,
    RaftNode,
    Ready,
    Snapshot,
)


def fmt_entry(e: Entry) -> str:
    if e.kind is EntryKind.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        voters = " ".join(map(str, sorted(cc.voters)))
        return f"{e.term}/{e.index} conf:{cc.op.name.lower()} {cc.node_id} -> ({voters})"
    return f"{e.term}/{e.index} {e.data.decode(errors='backslashreplace')!r}"


def fmt_snapshot(s: Snapshot) -> str:
    return f"{s.term}/{s.index} voters=({' '.join(map(str, sorted(s.voters)))})"


def fmt_msg(m: Message) -> str:
    t = m.type
    out = f"{m.from_}->{m.to} {t.name} term={m.term}"
    if t in (MessageType.VOTE, MessageType.PRE_VOTE):
        out += f" last={m.log_term}/{m.index}" + (" force" if m.force else "")
    elif t is MessageType.APPEND:
        out += f" prev={m.log_term}/{m.index} commit={m.commit}"
        if m.entries:
            out += " entries=[" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    elif t is MessageType.APPEND_RESP:
        out += f" index={m.index}"
        if m.reject:
            out += f" reject hint={m.reject_hint}"
    elif t is MessageType.HEARTBEAT:
        out += f" commit={m.commit}"
    elif t is MessageType.SNAPSHOT and m.snapshot is not None:
        out += f" snapshot={fmt_snapshot(m.snapshot)}"
    elif m.reject:
        out += " reject"
    return out


class Env:
    def __init__(self, config: RaftConfig | None = None, out: Callable[[str], None] | None = None):
        self.config = config or RaftConfig(election_tick=10, heartbeat_tick=1)
        self.out = out
        self.nodes: dict[int, RaftNode] = {}
        self.storages: dict[int, MemoryStorage] = {}
        self.inbox: dict[int, list[Message]] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.cut: set[tuple[int, int]] = set()  # links that lose every message
        self._indent = ""  # node log lines nest under the Ready or delivery that caused them

    def _say(self, text: str) -> None:
        if self.out is not None:
            self.out(text)

    def add_node(self, node_id: int, voters: frozenset[int]) -> RaftNode:
        self.storages[node_id] = MemoryStorage(voters)
        self.inbox[node_id] = []
        self.applied[node_id] = []
        return self._open(node_id)

    def _open(self, node_id: int) -> RaftNode:
        logger = (lambda s: self._say(f"{self._indent}INFO {s}")) if self.out else None
        node = RaftNode(
            node_id, self.storages[node_id], random.Random(node_id), self.config, logger
        )
        self.nodes[node_id] = node
        return node

    def restart(self, node_id: int) -> RaftNode:
        """A crash after the last Ready was persisted (the env persists at once)."""
        self.inbox[node_id] = []
        self.applied[node_id] = []
        return self._open(node_id)

    def add_nodes(self, n: int, voters: frozenset[int] | None = None) -> list[int]:
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + n))
        group = frozenset(ids) if voters is None else voters
        for i in ids:
            self.add_node(i, group)
        return ids

    def handle_ready(self, node_id: int) -> Ready | None:
        node = self.nodes[node_id]
        rd = node.ready()
        if rd is None:
            return None
        st = self.storages[node_id]
        self._say(f"> {node_id} handling Ready")
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            self._say(f"  Snapshot {fmt_snapshot(rd.snapshot)}")
        if rd.entries:
            st.append(rd.entries)
            self._say("  Entries:")
            for e in rd.entries:
                self._say(f"  {fmt_entry(e)}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            st.set_hard_state(hs)
            self._say(f"  HardState term={hs.term} vote={hs.vote} commit={hs.commit}")
        if rd.messages:
            self._say("  Messages:")
            for m in rd.messages:
                if (m.from_, m.to) in self.cut or m.to not in self.inbox:
                    self._say(f"  {fmt_msg(m)} (lost)")
                else:
                    self._say(f"  {fmt_msg(m)}")
                    self.inbox[m.to].append(m)
        if rd.committed_entries:
            self._say("  Committed:")
            for e in rd.committed_entries:
                self._say(f"  {fmt_entry(e)}")
            self.applied[node_id].extend(rd.committed_entries)
        self._indent = "  "
        try:
            node.advance(rd)
        finally:
            self._indent = ""

        return rd

    def deliver(self, node_id: int, drop: bool = False) -> int:
        msgs, self.inbox[node_id] = self.inbox[node_id], []
        if not msgs:
            return 0
        self._say(f"> {node_id} {'dropping' if drop else 'receiving'} messages")
        self._indent = "  "
        try:
            for m in msgs:
                self._say(f"  {fmt_msg(m)}")
                if not drop:
                    self.nodes[m.to].step(m)
        finally:
            self._indent = ""
        return len(msgs)

    def stabilize(self, ids: list[int] | None = None, rounds_max: int = 1000) -> None:
        """Handle Readys and deliver messages until the group is quiet."""
        ids = sorted(self.nodes) if ids is None else ids
        for _ in range(rounds_max):
            busy = False
            for i in ids:
                busy |= self.handle_ready(i) is not None
            for i in ids:
                busy |= self.deliver(i) > 0
            if not busy:
                return
        raise AssertionError(f"group did not stabilize in {rounds_max} rounds")

    def partition(self, *groups: set[int]) -> None:
        self.cut = {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}

    def heal(self) -> None:
        self.cut = set()

    def tick(self, node_id: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node_id].tick()

    def tick_election(self, node_id: int) -> None:
        node = self.nodes[node_id]
        timeout = node.config.election_tick
        if node.role.value != "leader":
            timeout = node.randomized_election_timeout
        self.tick(node_id, timeout)

    def elect(self, node_id: int) -> None:
        self.nodes[node_id].campaign()
        self.stabilize()
        assert self.nodes[node_id].role.value == "leader"
