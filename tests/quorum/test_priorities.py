"""Message priorities in the replicated queue machine: a quorum queue orders as RabbitMQ 4.0
to 4.2 do (rabbit_fifo_q: priorities above 4 are high, served 2:1 with normal ones, the
older first on normal's turn; returned messages before both), a classic queue under an ha-*
policy as a classic priority queue; the order survives snapshots, old snapshots included.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warrenmq.queues.quorum import (
    QuorumMachine,
    make_cancel,
    make_checkout,
    make_enqueue,
    make_purge,
    make_return,
    make_settle,
    make_tick,
)
from warrenmq.queues.quorum.commands import make_dequeue
from warrenmq.queues.quorum.settings import config_from
from warrenmq.queues.quorum.state import FairShareQueue, Msg, QueueConfig, make_ready

from .helpers import Log, dead, delivered


def publish(q: Log, priorities: list[int | None], **kwargs) -> dict[int, str]:
    """Enqueue one message per priority (None: no priority property, sent as 0); returns
    raft index -> a label such as 'h1' (high) or 'n2' (normal), numbered per class."""
    labels: dict[int, str] = {}
    counts = {"h": 0, "n": 0}
    for p in priorities:
        kind = "h" if p is not None and p > 4 else "n"
        counts[kind] += 1
        q(make_enqueue(None, None, 10, p or 0, **kwargs))
        labels[q.index] = f"{kind}{counts[kind]}"
    return labels


def consume_all(q: Log, labels: dict[int, str], cid: str = "c1") -> list[str]:
    _, effects = q(make_checkout(cid, "ch1"))
    return [labels[i] for _, i, *_ in delivered(effects).get(cid, [])]


def take(q: Log, labels: dict[int, str]) -> tuple[str, int] | None:
    """basic.get without the ack: (label, msg_id), or None when empty."""
    reply, _ = q(make_dequeue("getter", "ch9"))
    return None if reply[0] == "empty" else (labels[reply[2].raft_index], reply[1])


def get(q: Log, labels: dict[int, str]) -> str | None:
    """basic.get with auto-ack: the label of what it took, or None when empty."""
    taken = take(q, labels)
    if taken is None:
        return None
    q(make_settle("getter", [taken[1]]))
    return taken[0]


# -- the rule -------------------------------------------------------------------------------------
def test_high_and_normal_are_served_two_to_one_when_normal_ones_are_older() -> None:
    q = Log()
    labels = publish(q, [0, None, 4, 5, 9, 255, 5, 6, 7])
    # counter 0 and 1: high; counter 2: the older head, a normal one
    assert consume_all(q, labels) == ["h1", "h2", "n1", "h3", "h4", "n2", "h5", "h6", "n3"]


def test_high_messages_older_than_normal_ones_all_go_first() -> None:
    q = Log()
    labels = publish(q, [9, 9, 9, 9, 1, 1])
    # on normal's turn the high head is older, so it wins (RabbitMQ's "always favour hi
    # priority messages when it is safe to do so")
    assert consume_all(q, labels) == ["h1", "h2", "h3", "h4", "n1", "n2"]


def test_the_threshold_is_above_four_and_no_priority_is_normal() -> None:
    q = Log()
    labels = publish(q, [4, None, 0, 5])
    assert consume_all(q, labels) == ["h1", "n1", "n2", "n3"]


def test_a_queue_of_one_priority_is_fifo() -> None:
    for priority in (0, 7):
        q = Log()
        labels = publish(q, [priority] * 5)
        assert consume_all(q, labels) == [labels[i] for i in sorted(labels)]


def test_basic_get_takes_the_same_order_and_shares_the_counter_with_deliveries() -> None:
    q = Log()
    labels = publish(q, [1, 1, 1, 9, 9, 9, 9, 9, 9])
    assert [get(q, labels) for _ in range(2)] == ["h1", "h2"]
    q(make_checkout("c1", "ch1", prefetch=1))  # the counter is at 2: normal's turn
    c1 = q.machine.consumers["c1"]
    assert [labels[m.raft_index] for m, _ in c1.checked_out.values()] == ["n1"]
    assert [get(q, labels) for _ in range(7)] == ["h3", "h4", "n2", "h5", "h6", "n3", None]


def test_the_counter_runs_while_only_one_class_waits() -> None:
    q = Log()
    labels = publish(q, [0, 0])
    assert get(q, labels) == "n1"  # counter 0 -> 1
    labels.update(publish(q, [9, 9, 9]))
    # counter 1: high; counter 2: the older head (n2); then high again
    assert [get(q, labels) for _ in range(4)] == ["h1", "n2", "h2", "h3"]


# -- returns --------------------------------------------------------------------------------------
def test_returned_messages_come_first_in_the_order_they_came_back_whatever_their_priority(
        ) -> None:
    q = Log()
    labels = publish(q, [1, 1, 9, 9, 9, 9])
    held = dict(filter(None, (take(q, labels) for _ in range(3))))
    assert list(held) == ["h1", "h2", "n1"]  # the counter went 0, 1, 2 and back to 0
    q(make_return("getter", [held["n1"]]))
    q(make_return("getter", [held["h1"]]))
    # the returns go before the waiting high ones and do not move the counter
    assert [get(q, labels) for _ in range(6)] == ["n1", "h1", "h3", "h4", "n2", None]
    redelivered = q.machine.consumers["getter"].checked_out
    assert [labels[m.raft_index] for m, _ in redelivered.values()] == ["h2"]


def test_a_live_consumers_requeue_without_delivery_limit_goes_to_the_back_as_normal() -> None:
    q = Log()
    labels = publish(q, [0, 9, 9])
    _, effects = q(make_checkout("c1", "ch1", prefetch=1))  # h1; the counter goes to 1
    [(msg_id, _, _, _)] = delivered(effects)["c1"]
    _, effects = q(make_return("c1", [msg_id]))  # h1 re-appended behind n1, as normal
    [(msg_id, index, redelivered, count)] = delivered(effects)["c1"]
    assert (labels[index], redelivered, count) == ("h2", False, 0)
    q(make_enqueue(None, None, 10, 9))
    labels[q.index] = "h3"
    seen = []
    for _ in range(3):
        _, effects = q(make_settle("c1", [msg_id]))
        [(msg_id, index, redelivered, count)] = delivered(effects)["c1"]
        seen.append((labels[index], redelivered, count))
    # normal's turn: n1; then h3, published after the requeue, still goes before h1
    assert seen == [("n1", False, 0), ("h3", False, 0), ("h1", True, 1)]


def test_a_cancelled_consumers_messages_return_first_in_delivery_order() -> None:
    q = Log()
    labels = publish(q, [0, 0, 9, 9])
    q(make_checkout("c1", "ch1", prefetch=2))  # h1, h2
    q(make_cancel("c1", requeue=True))
    assert [get(q, labels) for _ in range(5)] == ["h1", "h2", "n1", "n2", None]


# -- what else takes from the FIFOs ---------------------------------------------------------------
def test_drop_head_drops_what_would_be_delivered_next_and_moves_the_counter() -> None:
    q = Log(max_length=2)
    labels = publish(q, [1, None])
    _, effects = q(make_enqueue(None, None, 10, 9))
    labels[q.index] = "h1"
    # as RabbitMQ 4.x: the head is the next to be delivered, the high one
    assert dead(effects) == {"maxlen": [q.index]}
    assert [get(q, labels) for _ in range(3)] == ["n1", "n2", None]


def test_expiry_looks_at_the_next_message_only() -> None:
    q = Log()
    labels = publish(q, [1], ttl_ms=10)
    labels.update(publish(q, [9], ttl_ms=10_000))
    # the next message is the high one (not expired): the expired normal one waits behind
    assert dead(q(make_tick(), at_ms=1_100)[1]) == {}
    assert q.machine.next_timeout_ms() == 1_000 + 10_000 + 1
    assert take(q, labels) == ("h1", 0)
    assert q.machine.next_timeout_ms() == 1_000 + 10 + 1
    assert dead(q(make_tick(), at_ms=1_101)[1]) == {"expired": [1]}


def test_a_purge_empties_both_classes_and_restarts_the_counter() -> None:
    q = Log()
    labels = publish(q, [9, 9])
    assert get(q, labels) == "h1"
    assert q(make_purge())[0] == ("purged", 1)
    assert q.machine.ready.dequeue_counter == 0
    labels = publish(q, [0, 9, 9, 9])
    assert [get(q, labels) for _ in range(4)] == ["h1", "h2", "n1", "h3"]


# -- classic queues under an ha-* policy ----------------------------------------------------------
def test_a_classic_queue_without_max_priority_is_fifo_whatever_the_priority() -> None:
    q = Log(queue_type="classic")
    labels = publish(q, [1, 9, 0, 255])
    assert consume_all(q, labels) == ["n1", "h1", "n2", "h2"]


def test_a_classic_queue_with_max_priority_is_strict_and_requeues_in_place() -> None:
    q = Log(queue_type="classic", max_priority=9)
    labels = publish(q, [1, 1, 9, 9, 5])
    held = dict(filter(None, (take(q, labels) for _ in range(2))))
    assert list(held) == ["h1", "h2"]
    q(make_return("getter", [held["h2"]]))
    q(make_return("getter", [held["h1"]]))  # back in its place: before h2 again
    assert [get(q, labels) for _ in range(6)] == ["h1", "h2", "h3", "n1", "n2", None]


def test_config_from_names_the_queue_type_whose_order_applies() -> None:
    assert config_from({"x-queue-type": "quorum"}, {}).queue_type == "quorum"
    classic = config_from({"x-max-priority": 10}, {"ha-mode": "all"}, "classic")
    assert (classic.queue_type, classic.max_priority) == ("classic", 10)
    assert isinstance(make_ready(config_from({}, {}, "quorum")), FairShareQueue)


# -- snapshots ------------------------------------------------------------------------------------
def _pack(value):
    return msgpack.unpackb(msgpack.packb(value))


def test_a_snapshot_mid_cycle_keeps_returns_both_classes_and_the_counter() -> None:
    q = Log()
    labels = publish(q, [1, 1, 1, 9, 9, 9, 9, 9, 9])
    held = dict(filter(None, (take(q, labels) for _ in range(2))))
    q(make_return("getter", [held["h2"]]))  # a return; the counter is at 2
    snap = _pack(q.machine.snapshot())
    assert snap["version"] == 2
    assert (snap["ready"]["dequeue_counter"], len(snap["ready"]["returns"])) == (2, 1)
    replica = Log()
    replica.machine = QuorumMachine.from_snapshot(snap)
    replica.index, replica.now_ms = q.index, q.now_ms
    assert replica.machine.snapshot() == snap
    expected = ["h2", "n1", "h3", "h4", "n2", "h5", "h6", "n3", None]
    assert [get(q, labels) for _ in range(9)] == expected
    assert [get(replica, labels) for _ in range(9)] == expected
    assert replica.machine.snapshot() == q.machine.snapshot()


def _v1_snapshot(ready: list, config: dict) -> dict:
    """A snapshot as the machine wrote it before the two FIFOs (version 1)."""
    return {"version": 1, "config": config, "ready": ready, "consumers": [], "rings": [],
            "active": None, "enqueuers": [], "next_order": 0, "last_index": 9,
            "release_cursor": 1}


def _msg(index: int, priority: int = 0) -> list:
    return Msg(index, 10, priority, None).dump()


def test_a_version_1_quorum_snapshot_loads_in_the_order_it_had() -> None:
    # level 0 held fresh 3, 5 and returned 2 (back in its place by index); level 1 was
    # never used by a quorum queue then, but a 9 there becomes high
    snap = _v1_snapshot([[[_msg(3), _msg(5)], [_msg(2)]], [[_msg(7, 9)], []]], {})
    machine = QuorumMachine.from_snapshot(snap)
    assert machine.config.queue_type == "quorum"
    assert [m.raft_index for m in machine.ready] == [7, 2, 3, 5]
    assert machine.snapshot()["ready"] == {
        "returns": [], "high": [[7, _msg(7, 9)]],
        "normal": [[2, _msg(2)], [3, _msg(3)], [5, _msg(5)]], "dequeue_counter": 0}


def test_a_version_1_classic_snapshot_loads_as_a_classic_queue() -> None:
    with_levels = _v1_snapshot([[[_msg(2)], []], [[_msg(3, 1)], [_msg(1, 1)]]],
                               {"max_priority": 1})
    machine = QuorumMachine.from_snapshot(with_levels)
    assert machine.config.queue_type == "classic"
    assert [m.raft_index for m in machine.ready] == [1, 3, 2]
    # a classic queue without x-max-priority had two levels, it has one now: the same order
    fifo = _v1_snapshot([[[_msg(2), _msg(4)], [_msg(3)]], [[], []]], {"queue_type": "classic"})
    machine = QuorumMachine.from_snapshot(fifo)
    assert [m.raft_index for m in machine.ready] == [2, 3, 4]
    assert len(machine.snapshot()["ready"]) == 1


# -- against a transliteration of rabbit_fifo_q ---------------------------------------------------
class Reference:
    """rabbit_fifo's `returns` and rabbit_fifo_q, as the Erlang reads, with plain lists of
    (index, message): the index of the log entry that put the message there."""

    def __init__(self) -> None:
        self.returns: list[Msg] = []
        self.hi: list[tuple[int, Msg]] = []
        self.no: list[tuple[int, Msg]] = []
        self.dequeue_counter = 0

    def enqueue(self, msg: Msg) -> None:
        (self.hi if msg.priority > 4 else self.no).append((msg.raft_index, msg))  # priority_tag

    def requeue(self, index: int, msg: Msg) -> None:  # apply(#requeue{}): always `no`
        self.no.append((index, msg))

    def out(self) -> Msg | None:  # take_next_msg/1
        if self.returns:
            return self.returns.pop(0)
        if not self.hi and not self.no:
            return None
        c0 = self.dequeue_counter
        self.dequeue_counter = 0 if c0 == 2 else c0 + 1
        if self.hi and self.no and c0 == 2:
            fifo = self.hi if self.hi[0][0] < self.no[0][0] else self.no
        else:
            fifo = self.hi if self.hi else self.no
        return fifo.pop(0)[1]


# bursts of publishes and of takes, so that both FIFOs are often full at normal's turn
ops = st.lists(st.one_of(
    st.tuples(st.just("in"), st.lists(st.integers(0, 9), min_size=1, max_size=6)),
    st.tuples(st.just("out"), st.integers(1, 5)),
    st.tuples(st.sampled_from(["return", "requeue"]), st.integers(0, 3)),
    st.tuples(st.just("snapshot"), st.just(0)),
), max_size=30)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_the_fair_share_queue_takes_what_rabbit_fifo_q_takes(script) -> None:
    queue, ref = FairShareQueue(), Reference()
    taken: list[Msg] = []
    index = 0  # the log: every command takes the next index
    for op, arg in script:
        if op == "in":
            for priority in arg:
                index += 1
                queue.add(Msg(index, 1, priority, None))
                ref.enqueue(Msg(index, 1, priority, None))
        elif op == "out":
            for _ in range(arg):
                predicted = next(iter(queue), None)
                got, want = queue.pop(), ref.out()
                assert (got and got.raft_index) == (want and want.raft_index)
                assert (predicted and predicted.raft_index) == (got and got.raft_index)
                if got is not None:
                    taken.append(got)
        elif op in ("return", "requeue") and taken:
            index += 1
            msg = taken.pop(arg % len(taken))
            if op == "return":
                queue.requeue(msg)
                ref.returns.append(msg)
            else:
                queue.append_back(msg, index)
                ref.requeue(index, msg)
        elif op == "snapshot":
            copy = FairShareQueue()
            copy.load(_pack(queue.dump()))
            assert copy.dump() == _pack(queue.dump())
            queue = copy
        assert queue.count == len(ref.returns) + len(ref.hi) + len(ref.no)
    # iteration predicts the order of every remaining take
    order = [m.raft_index for m in queue]
    rest = []
    while (msg := ref.out()) is not None:
        rest.append(msg.raft_index)
    assert order == rest


def test_the_quorum_config_refuses_max_priority() -> None:
    with pytest.raises(ValueError, match="classic queues only"):
        QueueConfig.from_dict({"max_priority": 3})
