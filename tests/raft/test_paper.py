"""Raft's rules, one test per sentence of the paper (Ongaro & Ousterhout, "In Search of an
Understandable Consensus Algorithm", extended version) or of Ongaro's thesis, quoted in the
docstring. The group runs in memory (env.Env); each test drives it message by message."""

from __future__ import annotations

import pytest

from warrenmq.raft import (
    NONE,
    ConfChangeOp,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RaftConfig,
    Role,
)

from .env import Env

MT = MessageType
PLAIN = RaftConfig(election_tick=10, heartbeat_tick=1, pre_vote=False, check_quorum=False)


def group(n: int = 3, config: RaftConfig = PLAIN) -> Env:
    env = Env(config)
    env.add_nodes(n)
    return env


def sent(env: Env, node_id: int) -> list[Message]:
    rd = env.handle_ready(node_id)
    return [] if rd is None else rd.messages


def test_follower_without_communication_begins_an_election() -> None:
    """ "If a follower receives no communication over a period of time called the election
    timeout, then it assumes there is no viable leader and begins an election." (5.2)"""
    env = group()
    n = env.nodes[1]
    for _ in range(n.randomized_election_timeout - 1):
        n.tick()
    assert n.role is Role.FOLLOWER
    n.tick()
    assert n.role is Role.CANDIDATE


def test_candidate_increments_term_votes_for_itself_and_asks_everyone() -> None:
    """ "To begin an election, a follower increments its current term and transitions to
    candidate state. It then votes for itself and issues RequestVote RPCs in parallel to
    each of the other servers in the cluster." (5.2)"""
    env = group(5)
    env.nodes[1].campaign()
    n = env.nodes[1]
    assert (n.role, n.term, n.vote) == (Role.CANDIDATE, 1, 1)
    msgs = sent(env, 1)
    assert sorted(m.to for m in msgs) == [2, 3, 4, 5]
    assert all(m.type is MT.VOTE and m.term == 1 for m in msgs)


def test_candidate_wins_with_votes_from_a_majority() -> None:
    """ "A candidate wins an election if it receives votes from a majority of the servers in
    the full cluster for the same term." (5.2)"""
    env = group(5)
    env.nodes[1].campaign()
    n = env.nodes[1]
    n.step(Message(MT.VOTE_RESP, 2, 1, term=1))
    assert n.role is Role.CANDIDATE  # 2 of 5
    n.step(Message(MT.VOTE_RESP, 3, 1, term=1, reject=True))
    n.step(Message(MT.VOTE_RESP, 4, 1, term=1))
    assert n.role is Role.LEADER  # 3 of 5


def test_candidate_that_loses_returns_to_follower() -> None:
    """A majority of rejections ends the candidacy (the candidate "either wins, another
    server establishes itself as leader, or a period of time goes by with no winner")."""
    env = group(3)
    env.nodes[1].campaign()
    n = env.nodes[1]
    n.step(Message(MT.VOTE_RESP, 2, 1, term=1, reject=True))
    n.step(Message(MT.VOTE_RESP, 3, 1, term=1, reject=True))
    assert n.role is Role.FOLLOWER


def test_each_server_votes_for_at_most_one_candidate_per_term() -> None:
    """ "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." (5.2)"""
    env = group(3)
    n = env.nodes[3]
    n.step(Message(MT.VOTE, 1, 3, term=1))
    n.step(Message(MT.VOTE, 2, 3, term=1))
    n.step(Message(MT.VOTE, 1, 3, term=1))  # a retry from the same candidate is granted
    answers = [(m.to, m.reject) for m in sent(env, 3)]
    assert answers == [(1, False), (2, True), (1, False)]
    assert n.vote == 1


def test_vote_is_persisted_before_the_answer_leaves() -> None:
    """Figure 2, "Persistent state on all servers: (Updated on stable storage before
    responding to RPCs) currentTerm, votedFor": the Ready that carries the vote answer
    carries the new hard state and asks for an fsync."""
    env = group(3)
    env.nodes[3].step(Message(MT.VOTE, 1, 3, term=1))
    rd = env.nodes[3].ready()
    assert rd is not None and rd.must_sync
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert [m.type for m in rd.messages] == [MT.VOTE_RESP]


def test_candidate_recognises_a_leader_of_its_term() -> None:
    """ "If the leader's term (included in its RPC) is at least as large as the candidate's
    current term, then the candidate recognizes the leader as legitimate and returns to
    follower state." (5.2)"""
    env = group(3)
    env.nodes[1].campaign()
    n = env.nodes[1]
    n.step(Message(MT.APPEND, 2, 1, term=1, index=0, log_term=0))
    assert (n.role, n.leader_id, n.term) == (Role.FOLLOWER, 2, 1)


def test_election_timeouts_are_randomized() -> None:
    """ "Raft uses randomized election timeouts to ensure that split votes are rare ...
    election timeouts are chosen randomly from a fixed interval." (5.2)"""
    env = group(5)
    timeouts = {n.randomized_election_timeout for n in env.nodes.values()}
    assert all(10 <= t < 20 for t in timeouts)
    assert len(timeouts) > 1


def test_voter_denies_a_candidate_with_a_less_up_to_date_log() -> None:
    """ "The voter denies its vote if its own log is more up-to-date than that of the
    candidate ... If the logs have last entries with different terms, then the log with the
    later term is more up-to-date. If the logs end with the same term, then whichever log
    is longer is more up-to-date." (5.4.1)"""
    cases = [  # (candidate last term, candidate last index, granted?) vs a voter at 2/2
        (1, 5, False),
        (2, 1, False),
        (2, 2, True),
        (3, 1, True),
    ]
    for last_term, last_index, granted in cases:
        st = MemoryStorage({1, 2, 3})
        st.append([Entry(1, 1), Entry(2, 2)])
        st.set_hard_state(HardState(term=2))
        env = Env(PLAIN)
        env.storages[3] = st
        env.inbox[3] = []
        env.applied[3] = []
        n = env._open(3)
        n.step(Message(MT.VOTE, 1, 3, term=3, index=last_index, log_term=last_term))
        (resp,) = sent(env, 3)
        assert resp.reject is (not granted), (last_term, last_index)


def test_a_server_adopts_a_larger_term_and_a_leader_steps_down() -> None:
    """ "If one server's current term is smaller than the other's, then it updates its
    current term to the larger value. If a candidate or leader discovers that its term is
    out of date, it immediately reverts to follower state." (5.1)"""
    env = group(3)
    env.elect(1)
    env.nodes[1].step(Message(MT.APPEND_RESP, 2, 1, term=7))
    assert (env.nodes[1].role, env.nodes[1].term) == (Role.FOLLOWER, 7)


def test_a_request_with_a_stale_term_is_rejected() -> None:
    """ "If a server receives a request with a stale term number, it rejects the request."
    (5.1)"""
    env = group(3)
    env.elect(1)
    env.nodes[2].step(Message(MT.VOTE, 3, 2, term=2, index=1, log_term=1))  # term 2, votes 3
    sent(env, 2)
    env.nodes[2].step(Message(MT.VOTE, 3, 2, term=1))
    env.nodes[2].step(
        Message(MT.APPEND, 1, 2, term=1, index=1, log_term=1, entries=(Entry(1, 2, data=b"x"),))
    )
    assert env.storages[2].last_index() == 1
    assert env.nodes[2].log.last_index() == 1  # the stale append changed nothing
    assert env.nodes[2].vote == 3  # and the stale vote request got no vote


def test_entry_is_committed_once_on_a_majority() -> None:
    """ "A log entry is committed once the leader that created the entry has replicated it
    on a majority of the servers." (5.3)"""
    env = group(5)
    env.elect(1)
    index = env.nodes[1].propose(b"x")
    env.handle_ready(1)
    env.deliver(2)
    env.deliver(3)
    for i in (3, 4, 5):
        env.inbox[i].clear()  # 3's answer is lost, 4 and 5 never get the entry
    env.handle_ready(2)
    env.handle_ready(3)
    env.inbox[1] = [m for m in env.inbox[1] if m.from_ == 2]
    env.deliver(1)
    assert env.nodes[1].commit_index < index  # leader + 2 of 5
    env.nodes[1].step(Message(MT.APPEND_RESP, 3, 1, term=1, index=index))
    assert env.nodes[1].commit_index == index  # leader + 2 + 3 of 5


def test_only_current_term_entries_are_committed_by_counting_replicas() -> None:
    """ "Raft never commits log entries from previous terms by counting replicas. Only log
    entries from the leader's current term are committed by counting replicas." (5.4.2,
    Figure 8)"""
    st = MemoryStorage({1, 2, 3})
    st.append([Entry(1, 1), Entry(2, 2, data=b"old")])  # 2/2 came from an earlier leader
    st.set_hard_state(HardState(term=2, commit=1))
    env = Env(PLAIN)
    env.storages[1], env.inbox[1], env.applied[1] = st, [], []
    n = env._open(1)
    n.campaign()
    n.step(Message(MT.VOTE_RESP, 2, 1, term=3))
    assert n.role is Role.LEADER and n.log.last_index() == 3  # its no-op is 3/3
    env.handle_ready(1)
    n.step(Message(MT.APPEND_RESP, 2, 1, term=3, index=2))
    assert n.commit_index == 1  # 2/2 is on a majority but is not of term 3
    n.step(Message(MT.APPEND_RESP, 2, 1, term=3, index=3))
    assert n.commit_index == 3  # committing 3/3 commits 2/2 with it


def test_leader_backs_up_next_index_after_a_rejection() -> None:
    """ "If a follower's log is inconsistent with the leader's, the AppendEntries consistency
    check will fail in the next AppendEntries RPC. After a rejection, the leader decrements
    nextIndex and retries the AppendEntries RPC." (5.3)"""
    env = group(3)
    env.elect(1)
    for d in (b"a", b"b", b"c"):
        env.nodes[1].propose(d)
    env.handle_ready(1)
    env.inbox[3].clear()  # 3 misses them
    env.stabilize()
    env.nodes[1].propose(b"d")
    env.stabilize()
    assert env.storages[3].last_index() == env.storages[1].last_index() == 5
    assert [e.data for e in env.applied[3]] == [b"", b"a", b"b", b"c", b"d"]


def test_follower_deletes_conflicting_entries() -> None:
    """ "If an existing entry conflicts with a new one (same index but different terms),
    delete the existing entry and all that follow it." (Figure 2, AppendEntries rule 3)"""
    st = MemoryStorage({1, 2, 3})
    st.append([Entry(1, 1), Entry(1, 2, data=b"lost"), Entry(1, 3, data=b"lost too")])
    st.set_hard_state(HardState(term=1, commit=1))
    env = Env(PLAIN)
    env.storages[2], env.inbox[2], env.applied[2] = st, [], []
    n = env._open(2)
    n.step(
        Message(
            MT.APPEND,
            1,
            2,
            term=2,
            index=1,
            log_term=1,
            entries=(Entry(2, 2, data=b"new"),),
            commit=1,
        )
    )
    env.handle_ready(2)
    ents = st.entries(1, st.last_index() + 1, 1 << 20)
    assert [(e.term, e.data) for e in ents] == [(1, b""), (2, b"new")]


def test_append_that_is_already_known_does_not_truncate() -> None:
    """Receiver rule 3 deletes only on a conflict: a delayed, shorter AppendEntries must not
    cut entries that a later one added ("Append any new entries not already in the
    log")."""
    env = group(3)
    env.elect(1)
    n = env.nodes[2]
    first = Message(MT.APPEND, 1, 2, term=1, index=1, log_term=1, entries=(Entry(1, 2, data=b"a"),))
    both = Message(
        MT.APPEND,
        1,
        2,
        term=1,
        index=1,
        log_term=1,
        entries=(Entry(1, 2, data=b"a"), Entry(1, 3, data=b"b")),
    )
    n.step(both)
    n.step(first)
    assert n.log.last_index() == 3


def test_leader_sends_heartbeats_to_keep_its_authority() -> None:
    """ "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to
    all followers in order to maintain their authority." (5.2)"""
    env = group(3)
    env.elect(1)
    env.tick(1, PLAIN.heartbeat_tick)
    msgs = sent(env, 1)
    assert sorted((m.to, m.type) for m in msgs) == [(2, MT.HEARTBEAT), (3, MT.HEARTBEAT)]
    for _ in range(3 * PLAIN.election_tick):  # followers hearing heartbeats never campaign
        env.tick(1)
        env.tick(2)
        env.tick(3)
        env.stabilize()
    assert env.nodes[1].role is Role.LEADER and env.nodes[1].term == 1


def test_followers_apply_committed_entries_in_log_order() -> None:
    """ "Once a follower learns that a log entry is committed, it applies the entry to its
    local state machine (in log order)." (5.3)"""
    env = group(3)
    env.elect(1)
    for d in (b"a", b"b", b"c"):
        env.nodes[1].propose(d)
    env.stabilize()
    env.tick(1)
    env.stabilize()
    for i in (1, 2, 3):
        assert [e.index for e in env.applied[i]] == [1, 2, 3, 4]


def test_prevote_does_not_raise_the_term_without_a_majority() -> None:
    """Thesis 9.6: "a candidate would first ask other servers whether its log was
    up-to-date enough to get their vote ... only if the candidate believes it can get votes
    from a majority of the cluster would it increment its term and start a normal
    election.\""""
    env = group(3, RaftConfig(pre_vote=True, check_quorum=True))
    env.elect(1)
    env.partition({3}, {1, 2})
    for _ in range(3):
        env.tick_election(3)
        env.stabilize()
    assert env.nodes[3].term == 1 and env.nodes[3].role is Role.PRE_CANDIDATE
    env.heal()
    env.tick(1)
    env.stabilize()
    assert env.nodes[1].role is Role.LEADER and env.nodes[1].term == 1
    assert env.nodes[3].leader_id == 1


def test_leader_without_a_majority_steps_down() -> None:
    """Thesis 6.2: "a leader steps down if an election timeout elapses without a successful
    round of heartbeats to a majority of its cluster.\""""
    env = group(3, RaftConfig(check_quorum=True))
    env.elect(1)
    env.partition({1}, {2, 3})
    for _ in range(2):
        env.tick_election(1)
        env.stabilize()
    assert env.nodes[1].role is Role.FOLLOWER


def test_vote_request_within_the_lease_is_ignored() -> None:
    """Thesis 4.2.3: "if a server receives a RequestVote request within the minimum election
    timeout of hearing from a current leader, it does not update its term or grant its
    vote.\""""
    env = group(3, RaftConfig(check_quorum=True, pre_vote=False))
    env.elect(1)
    env.nodes[2].step(Message(MT.VOTE, 3, 2, term=5, index=9, log_term=9))
    assert env.nodes[2].term == 1 and env.nodes[2].vote == 1
    assert env.nodes[2].ready() is None  # not even an answer


def test_a_voter_told_its_leaders_node_is_gone_campaigns_at_once() -> None:
    """Not the paper's: a host that sees the leader's link drop (a crashed node) tells its
    groups (`leader_lost`); the voter it picks campaigns at once, with no tick, and wins
    when the other survivor has learnt it too (it grants pre-votes once it forgot the
    leader, though the leader's lease would still run)."""
    env = group(3, RaftConfig(check_quorum=True, pre_vote=True))
    env.elect(1)
    env.partition({1}, {2, 3})
    env.nodes[3].leader_lost(1, soon=False)
    env.nodes[2].leader_lost(1, soon=True)
    env.stabilize([2, 3])
    assert env.nodes[2].role is Role.LEADER and env.nodes[2].term == 2
    assert env.nodes[3].leader_id == 2


def test_a_voter_that_campaigned_at_once_too_early_tries_again_at_the_next_tick() -> None:
    """The other survivor has not seen the link drop yet, so it refuses the pre-vote while
    the leader's lease runs; the next tick campaigns again, and by then it knows."""
    env = group(3, RaftConfig(check_quorum=True, pre_vote=True))
    env.elect(1)
    env.partition({1}, {2, 3})
    env.nodes[2].leader_lost(1, soon=True)
    env.stabilize([2, 3])
    assert env.nodes[2].role is Role.PRE_CANDIDATE and env.nodes[2].term == 1
    env.nodes[3].leader_lost(1, soon=False)
    env.tick(2)
    env.stabilize([2, 3])
    assert env.nodes[2].role is Role.LEADER and env.nodes[2].term == 2


def test_timeout_now_starts_an_election_at_once() -> None:
    """Thesis 3.10: "the prior leader sends a TimeoutNow request to the target server. This
    request has the same effect as the target server's election timer firing: the target
    server starts a new election (incrementing its term and becoming a candidate).\""""
    env = group(3, RaftConfig(check_quorum=True, pre_vote=True))
    env.elect(1)
    env.nodes[1].transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        env.nodes[1].propose(b"x")  # "the prior leader stops accepting new client requests"
    env.stabilize()
    assert env.nodes[3].role is Role.LEADER and env.nodes[3].term == 2
    assert env.nodes[1].role is Role.FOLLOWER


def test_leader_sends_a_snapshot_to_a_follower_it_cannot_feed_from_its_log() -> None:
    """Section 7: "the leader must occasionally send snapshots to followers that lag
    behind. This happens when the leader has already discarded the next log entry that it
    needs to send to a follower.\""""
    env = group(3)
    env.elect(1)
    env.partition({3}, {1, 2})
    env.nodes[1].propose(b"a")
    env.stabilize()
    st = env.storages[1]
    st.create_snapshot(env.nodes[1].applied_index, env.nodes[1].voters, b"state")
    st.compact(env.nodes[1].applied_index)
    env.heal()
    env.tick(1)
    env.stabilize()
    assert env.storages[3].snapshot().data == b"state"
    env.nodes[1].propose(b"b")
    env.stabilize()
    assert env.applied[3][-1].data == b"b"


def test_only_one_server_is_added_or_removed_at_a_time() -> None:
    """Thesis 4.1: "Raft restricts the types of changes that are allowed: only one server
    can be added or removed from the cluster at a time.\""""
    env = group(3)
    env.elect(1)
    env.add_node(4, frozenset())
    env.nodes[1].propose_conf_change(ConfChangeOp.ADD, 4)
    with pytest.raises(ProposalDropped):
        env.nodes[1].propose_conf_change(ConfChangeOp.REMOVE, 2)
    env.stabilize()
    assert all(n.voters == {1, 2, 3, 4} for n in env.nodes.values())
    env.nodes[1].propose_conf_change(ConfChangeOp.REMOVE, 2)  # now allowed
    env.stabilize()
    assert env.nodes[1].voters == {1, 3, 4}


def test_removed_leader_steps_down() -> None:
    """Thesis 4.2.2: "the leader steps down (returns to follower state) once it has
    committed the Cnew log entry.\""""
    env = group(3)
    env.elect(1)
    env.nodes[1].propose_conf_change(ConfChangeOp.REMOVE, 1)
    env.stabilize()
    assert env.nodes[1].role is Role.FOLLOWER and env.nodes[1].leader_id == NONE
    assert not env.nodes[1].promotable()
    env.tick_election(2)
    env.stabilize()
    assert {env.nodes[2].role, env.nodes[3].role} == {Role.LEADER, Role.FOLLOWER}
