"""`RaftNode`: one member of one Raft group, as a pure state machine.

Inputs: `tick()` (one unit of logical time, driven by whoever hosts the group), `step(msg)`
(a message from a peer), `propose(data)`, `propose_conf_change(op, id)`, `campaign()`,
`transfer_leadership(to)`. Output: `ready()` returns a `Ready` (what to persist, send and
apply, in that order) and `advance(ready)` says it was done. No threads, sockets, files or
clock inside; the only randomness (the election timeout) comes from the `random.Random`
the host passes in, so a seeded host replays exactly.

Rules this module keeps (Raft paper section numbers in brackets):
- A node counts itself towards a commit only for entries its host has persisted (it learns
  that in `advance`): a leader that counted unpersisted entries could lose a "committed"
  entry in a crash.
- Only entries of the leader's own term are committed by counting replicas [5.4.2].
- Membership changes add or remove one voter at a time and take effect when the entry is
  applied (in `advance`); a leader accepts the next change only once the previous one is
  applied, and its first change only after its term's first entry is applied (which closes
  the single-server change bug found after the thesis).
- Pre-vote: a would-be candidate first asks whether it could win, without raising its term,
  so a node returning from a partition cannot depose a healthy leader.
- Check-quorum: a leader that has not heard from a majority within an election timeout
  steps down; followers that heard from a leader within that time ignore vote requests
  (the leader lease), unless the request comes from a leadership transfer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from . import quorum
from .log import RaftLog
from .progress import Progress, ProgressState
from .storage import Compacted, Storage
from .types import (
    NONE,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    RaftError,
    Ready,
    Role,
)

MT = MessageType
_LEADER_MESSAGES = (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT)


@dataclass(frozen=True, slots=True)
class RaftConfig:
    election_tick: int = 10  # ticks without a leader before campaigning (randomised x1..x2)
    heartbeat_tick: int = 1  # leader ticks between heartbeats
    msg_bytes_max: int = 1 << 20  # entry data per append (batching bound)
    inflight_max: int = 256  # appends in flight per follower (pipelining window)
    apply_bytes_max: int = 1 << 26  # committed entry data per Ready
    pre_vote: bool = True
    check_quorum: bool = True


class RaftNode:
    # Slots: one node per queue later, so a group's resident state stays a few fields.
    __slots__ = (
        "id",
        "config",
        "rng",
        "logger",
        "log",
        "term",
        "vote",
        "voters",
        "role",
        "leader_id",
        "progress",
        "votes",
        "msgs",
        "election_elapsed",
        "heartbeat_elapsed",
        "randomized_election_timeout",
        "lead_transferee",
        "pending_conf_index",
        "_prev_hard_state",
        "_outstanding",
    )

    def __init__(
        self,
        node_id: int,
        storage: Storage,
        rng: random.Random,
        config: RaftConfig | None = None,
        logger: Callable[[str], None] | None = None,
    ) -> None:
        assert node_id != NONE, "node ids are positive"
        self.id = node_id
        self.config = config or RaftConfig()
        self.rng = rng
        self.logger = logger
        self.log = RaftLog(storage)
        hard_state, snapshot = storage.initial_state()
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.log.commit_to(hard_state.commit)
        self.voters: frozenset[int] = snapshot.voters
        self.role = Role.FOLLOWER
        self.leader_id = NONE
        self.progress: dict[int, Progress] = {}  # leader only
        self.votes: dict[int, bool] = {}  # (pre-)candidate only
        self.msgs: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self._prev_hard_state = hard_state
        self._outstanding: Ready | None = None
        self._become_follower(self.term, NONE)

    # -- what the host may read ---------------------------------------------------------
    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        return self.id in self.voters

    def _info(self, text: str) -> None:
        if self.logger is not None:
            self.logger(f"{self.id} {text}")

    # -- inputs from the host -----------------------------------------------------------
    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._hup(force=False)

    def campaign(self) -> None:
        """Start an election now (pre-vote first when enabled)."""
        if not self.promotable():
            raise RaftError(f"node {self.id} is not a voter and cannot campaign")
        self._hup(force=False)

    def leader_lost(self, leader: int, soon: bool) -> None:
        """The host learned that `leader`'s node is gone (its link dropped): forget it as
        leader so that this node grants pre-votes at once, and campaign now if `soon` (the
        host picks one surviving voter, so that two do not split the vote) and again at the
        next tick should that pre-vote not win (a voter that has not yet seen the link drop
        still refuses it), otherwise after a few ticks more than the usual timeout, in case
        that one cannot win (its log is behind: then the node with the better log
        campaigns, see `_handle_vote_request`)."""
        if self.role is Role.LEADER or self.leader_id != leader or leader == NONE:
            return
        et = self.config.election_tick
        self.leader_id = NONE
        self.election_elapsed = et
        if soon:
            self.randomized_election_timeout = et + 1
        else:
            self.randomized_election_timeout = et + 3 + self.rng.randrange(et)
        self._info(f"lost leader {leader}: campaigning {'now' if soon else 'later'}")
        if soon and self.promotable():
            self._hup(force=False)

    def propose(self, data: bytes, broadcast: bool = True) -> int:
        """Append `data` to the leader's log; returns its index (committed later, maybe).
        `broadcast=False` leaves sending it to the caller's `broadcast()`, so that many
        proposals of one turn travel in one append per follower."""
        self._check_can_propose()
        index = self._append_entry(EntryKind.NORMAL, bytes(data))
        if broadcast:
            self._bcast_append()
        return index

    def broadcast(self) -> None:
        """Send every follower what it lacks (after proposals made with broadcast=False)."""
        if self.role is Role.LEADER:
            self._bcast_append()

    def take_messages(self, types: frozenset[MessageType]) -> list[Message]:
        """Remove and return the outgoing messages of `types`, for a host that sends them
        before the Ready that would carry them (a leader's appends while a Ready is being
        persisted; every other message stays for its Ready)."""
        msgs = self.msgs
        if not msgs:
            return []
        out = [m for m in msgs if m.type in types]
        if out:
            self.msgs = [m for m in msgs if m.type not in types]
        return out

    def take_unwritten(self) -> list[Entry]:
        """The unstable entries not yet handed to the host, now handed: for a host that
        writes them while a Ready is being persisted. They come back in the next Ready's
        `written_entries` (to be stored once durable) and are stable after its advance.
        Nothing while a snapshot is to be installed, or while the term or vote differs from
        what the last Ready carried (that must be persisted first, by a Ready)."""
        log = self.log
        if not self.may_reply_early():
            return []
        ents = log.unstable[log.written :]
        log.written = len(log.unstable)
        return ents

    def may_reply_early(self) -> bool:
        """Whether this node's messages may leave once everything the host wrote so far is
        durable (the term and vote are those of the last Ready, no snapshot pending)."""
        prev = self._outstanding.hard_state if self._outstanding is not None else None
        prev = prev or self._prev_hard_state
        return (self.log.unstable_snapshot is None and prev.term == self.term
                and prev.vote == self.vote)

    def propose_conf_change(self, op: ConfChangeOp, node_id: int) -> int:
        """Add or remove one voter; returns the index of the change entry."""
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped(
                f"a membership change (index {self.pending_conf_index}) is not applied yet"
            )
        if op is ConfChangeOp.ADD:
            if node_id in self.voters or node_id == NONE:
                raise RaftError(f"node {node_id} cannot be added (already a voter or null)")
            voters = self.voters | {node_id}
        else:
            if node_id not in self.voters:
                raise RaftError(f"node {node_id} is not a voter")
            voters = self.voters - {node_id}
            if not voters:
                raise RaftError("cannot remove the last voter")
        cc = ConfChange(op, node_id, voters)
        index = self._append_entry(EntryKind.CONF_CHANGE, cc.encode())
        self.pending_conf_index = index
        self._bcast_append()
        return index

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to `to` [thesis 3.10]: bring its log up to date, then tell it to
        campaign at once (TIMEOUT_NOW). Proposals are refused meanwhile; the transfer is
        abandoned after an election timeout."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if to == self.id:
            return
        if to not in self.voters:
            raise RaftError(f"node {to} is not a voter")
        if self.lead_transferee == to:
            return
        self._info(f"starts leadership transfer to {to} at term {self.term}")
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.progress[to].match_index == self.log.last_index():
            self._send(MT.TIMEOUT_NOW, to)
        else:
            self._send_append(to)

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The host's word on a snapshot it sent: on failure, probe and resend."""
        pr = self.progress.get(to)
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the next heartbeat answer before probing

    # -- Ready / advance ----------------------------------------------------------------
    def has_ready(self) -> bool:
        return bool(
            self.msgs
            or self.log.unstable
            or self.log.unstable_snapshot is not None
            or self.hard_state() != self._prev_hard_state
            or (self.log.committed > self.log.applied and self.log.unstable_snapshot is None)
        )

    def ready(self) -> Ready | None:
        """The next batch of work, or None. The previous batch must be advanced first."""
        if self._outstanding is not None:
            raise RaftError("the previous Ready has not been advanced")
        if not self.has_ready():
            return None
        rd = Ready(leader_id=self.leader_id, role=self.role)
        hs = self.hard_state()
        if hs != self._prev_hard_state:
            rd.hard_state = hs
        log = self.log
        rd.written_entries = log.unstable[: log.written]
        rd.entries = log.unstable[log.written :]
        log.written = len(log.unstable)
        rd.snapshot = self.log.unstable_snapshot
        rd.committed_entries = self.log.next_committed(self.config.apply_bytes_max)
        rd.messages, self.msgs = self.msgs, []
        prev = self._prev_hard_state
        rd.must_sync = bool(
            rd.entries
            or rd.written_entries
            or rd.snapshot is not None
            or (rd.hard_state is not None and (hs.term != prev.term or hs.vote != prev.vote))
        )
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The host persisted, sent and applied `rd`."""
        if rd is not self._outstanding:
            raise RaftError("advance() must get the Ready that ready() returned last")
        self._outstanding = None
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        if rd.snapshot is not None:
            self.log.stable_snapshot_to(rd.snapshot.index)
            self.log.applied_to(rd.snapshot.index)
        if rd.entries or rd.written_entries:
            last = (rd.entries or rd.written_entries)[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                self._self_persisted()
        if rd.committed_entries:
            for e in rd.committed_entries:
                if e.kind is EntryKind.CONF_CHANGE:
                    self._apply_conf_change(ConfChange.decode(e.data))
            self.log.applied_to(rd.committed_entries[-1].index)

    # -- roles --------------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader_id = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        et = self.config.election_tick
        self.randomized_election_timeout = et + self.rng.randrange(et)
        self.lead_transferee = NONE
        self.votes = {}
        self.progress = {}

    def _become_follower(self, term: int, leader_id: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self._info(f"became follower at term {term}")

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote changes: a pre-vote that fails leaves no trace.
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.leader_id = NONE
        self._info(f"became pre-candidate at term {self.term}")

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._info(f"became candidate at term {self.term}")

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        last = self.log.last_index()
        for v in self.voters:
            pr = Progress(last + 1, self.config.inflight_max)
            self.progress[v] = pr
        me = self.progress[self.id]
        me.recent_active = True
        me.become_replicate()
        # No membership change until everything in the log now is applied (see above).
        self.pending_conf_index = last
        self._info(f"became leader at term {self.term}")
        # A no-op entry of the new term: committing it commits everything before it.
        self._append_entry(EntryKind.NORMAL, b"")
        self._self_persisted()
        self._bcast_append()

    def _self_persisted(self) -> None:
        """Count the leader's own persisted entries towards commitment."""
        if self.log.unstable_snapshot is not None:
            return
        me = self.progress.get(self.id)
        if me is not None and me.maybe_update(self.log.unstable_offset - 1):
            if self._maybe_commit():
                self._bcast_append()

    def _hup(self, force: bool) -> None:
        if self.role is Role.LEADER or not self.promotable():
            return
        if self._unapplied_conf_change():
            # Our configuration may be stale until that change is applied.
            self._info("cannot campaign: a committed membership change is not applied yet")
            return
        if self.config.pre_vote and not force:
            self._campaign(MT.PRE_VOTE, force)
        else:
            self._campaign(MT.VOTE, force)

    def _unapplied_conf_change(self) -> bool:
        log = self.log
        if log.committed <= log.applied or log.unstable_snapshot is not None:
            return False
        ents = log.slice(log.applied + 1, log.committed + 1, 1 << 62)
        return any(e.kind is EntryKind.CONF_CHANGE for e in ents)

    def _campaign(self, kind: MessageType, force: bool) -> None:
        if kind is MT.PRE_VOTE:
            self._become_pre_candidate()
            term = self.term + 1  # the term we would campaign at
        else:
            self._become_candidate()
            term = self.term
        self.votes = {self.id: True}
        if self._poll() is quorum.VoteResult.WON:
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for v in sorted(self.voters):
            if v != self.id:
                self.msgs.append(
                    Message(
                        kind, self.id, v, term, log_term=last_term, index=last_index, force=force
                    )
                )

    def _poll(self) -> quorum.VoteResult:
        result = quorum.vote_result(self.voters, self.votes)
        if result is quorum.VoteResult.WON and not self.promotable():
            result = quorum.VoteResult.LOST  # removed while campaigning
            self._become_follower(self.term, NONE)
        elif result is quorum.VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(MT.VOTE, False)
            else:
                self._become_leader()
        elif result is quorum.VoteResult.LOST:
            self._become_follower(self.term, NONE)
        return result

    # -- messages -----------------------------------------------------------------------
    def _send(self, type_: MessageType, to: int, **fields: object) -> None:
        fields.setdefault("term", self.term)
        self.msgs.append(Message(type_, self.id, to, **fields))  # type: ignore[arg-type]

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                in_lease = (
                    self.config.check_quorum
                    and self.leader_id != NONE
                    and self.election_elapsed < self.config.election_tick
                )
                if in_lease and not m.force:
                    return  # a leader is alive: this candidate is disruptive, not needed
            if m.type is MT.PRE_VOTE or (m.type is MT.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote carries a term nobody is in yet: it changes nothing
            else:
                lead = m.from_ if m.type in _LEADER_MESSAGES else NONE
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                MT.APPEND,
                MT.HEARTBEAT,
            ):
                # A stale leader (back from a partition) learns our term and steps down;
                # without this, pre-vote could leave it and us both stuck.
                self._send(MT.APPEND_RESP, m.from_)
            elif m.type is MT.PRE_VOTE:
                self._send(MT.PRE_VOTE_RESP, m.from_, reject=True)
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.leader_id == NONE)
            or (m.type is MT.PRE_VOTE and m.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(m.index, m.log_term)
        if can_vote and up_to_date:
            # A grant answers in the candidate's term (for a pre-vote, a future one).
            self._send(resp, m.from_, term=m.term)
            if m.type is MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self._send(resp, m.from_, reject=True)
            if (not up_to_date and self.role is Role.FOLLOWER and self.leader_id == NONE
                    and self.election_elapsed >= self.config.election_tick):
                # Nobody leads and this node's log beats the candidate's: this node can win
                # where the candidate cannot, so it campaigns at the next tick instead of
                # leaving the group leaderless for a whole timeout.
                self.randomized_election_timeout = min(self.randomized_election_timeout,
                                                       self.election_elapsed + 1)

    def _step_follower(self, m: Message) -> None:
        if m.type in _LEADER_MESSAGES:
            self.election_elapsed = 0
            self.leader_id = m.from_
            self._handle_leader_message(m)
        elif m.type is MT.TIMEOUT_NOW:
            self._info(f"received TIMEOUT_NOW from {m.from_}: campaigning at once")
            self._hup(force=True)

    def _step_candidate(self, m: Message) -> None:
        if m.type in _LEADER_MESSAGES:
            # Another server established itself as leader of this term [5.2].
            self._become_follower(m.term, m.from_)
            self._handle_leader_message(m)
        elif (m.type is MT.VOTE_RESP and self.role is Role.CANDIDATE) or (
            m.type is MT.PRE_VOTE_RESP
            and self.role is Role.PRE_CANDIDATE
            # A grant must be for the term we would run at, not an earlier round's.
            and (m.reject or m.term == self.term + 1)
        ):
            self.votes[m.from_] = not m.reject
            self._poll()

    def _handle_leader_message(self, m: Message) -> None:
        if m.type is MT.APPEND:
            self._handle_append(m)
        elif m.type is MT.HEARTBEAT:
            self.log.commit_to(m.commit)
            self._send(MT.HEARTBEAT_RESP, m.from_)
        else:
            self._handle_snapshot(m)

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(MT.APPEND_RESP, m.from_, index=log.committed)
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(MT.APPEND_RESP, m.from_, index=last_new)
            return
        # Our entries with a term above the leader's prevLogTerm cannot match its log
        # (terms only grow along a log): skip back over them in one answer.
        hint = min(m.index, log.last_index())
        while hint > log.committed:
            t = log.term(hint)
            if t is None or t <= m.log_term:
                break
            hint -= 1
        self._send(MT.APPEND_RESP, m.from_, index=m.index, reject=True, reject_hint=hint)

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        log = self.log
        if snap.index <= log.committed:
            pass
        elif log.match_term(snap.index, snap.term):
            log.commit_to(snap.index)  # we have it all already: fast-forward
        else:
            self._info(f"restoring snapshot at index {snap.index} term {snap.term}")
            log.restore(snap)
            self.voters = snap.voters
        # Only up to the commit index do we know our log matches the leader's.
        self._send(MT.APPEND_RESP, m.from_, index=log.committed)

    # -- leader -------------------------------------------------------------------------
    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")

    def _append_entry(self, kind: EntryKind, data: bytes) -> int:
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, kind, data)])
        return index

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        for to, pr in self.progress.items():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= self.config.election_tick:
                    # Presume the snapshot lost; probing will send another if needed.
                    pr.become_probe()
                    self._send_append(to)
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self._info(f"stepped down at term {self.term}: no quorum heard from")
                self._become_follower(self.term, NONE)
                return
            if self.lead_transferee != NONE:
                self._info(f"abandoned leadership transfer to {self.lead_transferee}")
                self.lead_transferee = NONE
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = {v for v, pr in self.progress.items() if pr.recent_active or v == self.id}
        for v, pr in self.progress.items():
            pr.recent_active = v == self.id
        return quorum.has_quorum(self.voters, active)

    def _bcast_heartbeat(self) -> None:
        for to in sorted(self.progress):
            if to != self.id:
                commit = min(self.progress[to].match_index, self.log.committed)
                self._send(MT.HEARTBEAT, to, commit=commit)

    def _bcast_append(self) -> None:
        for to in sorted(self.progress):
            if to != self.id:
                self._send_append(to)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next_index - 1
        prev_term = log.term(prev)
        ents = None
        if prev_term is not None:
            try:
                ents = log.slice(pr.next_index, log.last_index() + 1, self.config.msg_bytes_max)
            except Compacted:
                ents = None
        if prev_term is None or ents is None:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(
            MT.APPEND,
            to,
            index=prev,
            log_term=prev_term,
            entries=tuple(ents),
            commit=log.committed,
        )
        if ents:
            pr.sent_entries(ents[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        snap = self.log.storage.snapshot()
        assert snap.index >= self.log.storage.first_index() - 1, "snapshot behind the log"
        self._info(f"sends snapshot at index {snap.index} to {to} ({pr})")
        self._send(MT.SNAPSHOT, to, snapshot=snap)
        pr.become_snapshot(snap.index)
        return True

    def _maybe_commit(self) -> bool:
        match = {v: pr.match_index for v, pr in self.progress.items()}
        index = quorum.committed_index(self.voters, match)
        # Only an entry of the current term is committed by counting replicas [5.4.2].
        if index > self.log.committed and self.log.term(index) == self.term:
            self.log.commit_to(index)
            return True
        return False

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.from_)
        if pr is None:
            return
        if m.type is MT.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_resp(m, pr)
        elif m.type is MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                # Answers may have been lost: let one more append through.
                pr.inflights.free_first()
            if pr.match_index < self.log.last_index():
                self._send_append(m.from_)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            if pr.maybe_decrease_to(m.index, m.reject_hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.from_)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match_index >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._bcast_append()
        else:
            while self._send_append(m.from_, send_if_empty=False):
                pass
        if m.from_ == self.lead_transferee and pr.match_index == self.log.last_index():
            self._info(f"sends TIMEOUT_NOW to {m.from_}: its log is up to date")
            self._send(MT.TIMEOUT_NOW, m.from_)

    # -- membership ---------------------------------------------------------------------
    def _apply_conf_change(self, cc: ConfChange) -> None:
        self.voters = cc.voters
        self._info(f"applied {cc.op.name.lower()} {cc.node_id}: voters {sorted(cc.voters)}")
        if self.role is not Role.LEADER:
            return
        if self.id not in self.voters:
            # A removed leader steps down; the others elect a new one after a timeout.
            self._become_follower(self.term, NONE)
            return
        last = self.log.last_index()
        added = [v for v in sorted(self.voters) if v not in self.progress]
        for v in added:
            self.progress[v] = Progress(last + 1, self.config.inflight_max)
        for v in list(self.progress):
            if v not in self.voters:
                del self.progress[v]
        if self.lead_transferee not in self.voters:
            self.lead_transferee = NONE
        if self._maybe_commit():
            self._bcast_append()  # a smaller majority committed what the old one could not
        else:
            for v in added:
                self._send_append(v)
