"""The quorum queue machine's at-least-once dead-lettering (dead letters held until
`dead_letter_settle`) and queue expiry (x-expires), one command at a time."""

from __future__ import annotations

import msgpack
import pytest

from warrenmq.queues.quorum import (
    QuorumMachine,
    make_cancel,
    make_checkout,
    make_dead_letter_settle,
    make_discard,
    make_enqueue,
    make_return,
    make_tick,
    make_update_config,
)
from warrenmq.queues.quorum.commands import make_dequeue
from warrenmq.queues.quorum.machine import DEAD_LETTER_RETRY_MS

from .helpers import Log, cursor, dead, effects_of

AT_LEAST_ONCE = {"dead_letter_strategy": "at-least-once"}


def enq(size: int = 10, ttl_ms: int | None = None):
    return make_enqueue(None, None, size, 0, ttl_ms)


def pending(effects) -> dict[str, list[int]]:
    """reason -> Raft indexes named as held dead letters"""
    out: dict[str, list[int]] = {}
    for _, reason, refs in effects_of(effects, "dead_letter_pending"):
        out.setdefault(reason, []).extend(ref.raft_index for ref in refs)
    return out


# -- at-least-once dead-lettering -------------------------------------------------------------
def test_at_least_once_holds_a_dead_letter_until_it_is_settled() -> None:
    q = Log(**AT_LEAST_ONCE)
    q(enq())  # index 1
    q(enq())  # index 2
    q(make_checkout("c1", "ch1"))
    reply, effects = q(make_discard("c1", [0]))
    assert reply == ("ok", 1)
    assert pending(effects) == {"rejected": [1]} and dead(effects) == {}
    # held: neither ready nor checked out, still live (the log keeps its body)
    assert q.machine.messages_total() == 1 and q.machine.messages_dead_lettering() == 1
    assert q.machine.live_indexes() == [1, 2]
    assert cursor(effects) is None
    reply, effects = q(make_dead_letter_settle([1, 99]))  # an unknown index is ignored
    assert reply == ("ok", 1)
    assert q.machine.messages_dead_lettering() == 0 and cursor(effects) == 2
    assert q(make_dead_letter_settle([1]))[0] == ("ok", 0)  # a re-sent settle does nothing


@pytest.mark.parametrize(("config", "kill", "reason"), [
    ({"delivery_limit": 0}, lambda q: q(make_return("c1", [0])), "delivery_limit"),
    ({"message_ttl_ms": 10}, lambda q: q(make_tick(), at_ms=q.now_ms + 11), "expired"),
    ({"max_length": 1}, lambda q: q(enq()), "maxlen"),
])
def test_every_reason_is_held_under_at_least_once(config, kill, reason) -> None:
    q = Log(**AT_LEAST_ONCE, **config)
    if reason == "delivery_limit":
        q(make_checkout("c1", "ch1"))
    q(enq())
    index = q.index
    _, effects = kill(q)
    assert pending(effects) == {reason: [index]}
    assert list(q.machine.discards) == [index]


def test_held_dead_letters_are_named_again_after_the_retry_period() -> None:
    q = Log(**AT_LEAST_ONCE)
    q(make_checkout("c1", "ch1"), at_ms=0)
    q(enq(), at_ms=0)
    q(enq(), at_ms=0)
    q(make_discard("c1", [0, 1]), at_ms=100)
    assert q.machine.next_timeout_ms() == 100 + DEAD_LETTER_RETRY_MS
    assert pending(q(make_tick(), at_ms=99 + DEAD_LETTER_RETRY_MS)[1]) == {}
    _, effects = q(make_tick(), at_ms=100 + DEAD_LETTER_RETRY_MS)
    assert pending(effects) == {"rejected": [2, 3]}  # a new leader forwards them
    q(make_dead_letter_settle([2]))
    _, effects = q(make_tick(), at_ms=100 + 2 * DEAD_LETTER_RETRY_MS)
    assert pending(effects) == {"rejected": [3]}
    q(make_dead_letter_settle([3]))
    assert q.machine.next_timeout_ms() is None


def test_held_dead_letters_do_not_count_towards_the_length_limit() -> None:
    q = Log(**AT_LEAST_ONCE, max_length=1, overflow="reject-publish")
    q(make_checkout("c1", "ch1", prefetch=1))
    q(enq())
    q(make_discard("c1", [0]))
    q(make_cancel("c1"))
    assert q(enq())[0][0] == "enqueued"  # 1 ready + 1 held: under RabbitMQ 3.10's count
    assert q(enq())[0][0] == "rejected"


def test_leaving_at_least_once_dead_letters_what_is_held_at_most_once() -> None:
    q = Log(**AT_LEAST_ONCE)
    q(make_checkout("c1", "ch1"))
    q(enq())
    q(make_discard("c1", [0]))
    reply, effects = q(make_update_config({"dead_letter_strategy": "at-most-once"}))
    assert reply == ("ok",)
    assert dead(effects) == {"rejected": [2]} and not q.machine.discards
    assert cursor(effects) == 5  # nothing live: past the last index


def test_at_most_once_dead_letters_at_once() -> None:
    q = Log()
    q(make_checkout("c1", "ch1"))
    q(enq())
    _, effects = q(make_discard("c1", [0]))
    assert dead(effects) == {"rejected": [2]} and pending(effects) == {}
    assert not q.machine.discards


def test_held_dead_letters_survive_a_snapshot() -> None:
    q = Log(**AT_LEAST_ONCE, expires_ms=1_000)
    q(make_checkout("c1", "ch1"), at_ms=5)
    q(enq(), at_ms=5)
    q(make_discard("c1", [0]), at_ms=7)
    restored = QuorumMachine.from_snapshot(msgpack.unpackb(msgpack.packb(q.machine.snapshot())))
    assert restored.snapshot() == q.machine.snapshot()
    assert list(restored.discards) == [2] and restored.live_indexes() == [2]
    assert restored.last_active_ms == 5 and restored.discards_named_ms == 7


def test_a_snapshot_from_before_dead_letter_holding_and_expiry_still_loads() -> None:
    snap = Log().machine.snapshot()
    for key in ("discards", "discards_named_ms", "last_active_ms"):
        del snap[key]
    machine = QuorumMachine.from_snapshot(snap)
    assert machine.discards == {} and machine.last_active_ms is None


# -- queue expiry ---------------------------------------------------------------------------------
def test_an_unused_queue_expires_on_a_tick_after_its_expiry() -> None:
    q = Log(expires_ms=1_000)
    assert q.machine.next_timeout_ms() == 0  # not known yet: the first tick starts the clock
    assert effects_of(q(make_tick(), at_ms=100)[1], "queue_expired") == []
    q(enq(), at_ms=500)  # publishing does not count as use (RabbitMQ 3.10)
    assert q.machine.next_timeout_ms() == 1_101
    assert effects_of(q(make_tick(), at_ms=1_100)[1], "queue_expired") == []
    _, effects = q(make_tick(), at_ms=1_101)
    assert effects_of(effects, "queue_expired") == [("queue_expired",)]
    # re-armed: asked again one period later if the queue is still there
    assert q.machine.next_timeout_ms() == 2_102


def test_consumers_and_gets_keep_a_queue_alive() -> None:
    q = Log(expires_ms=1_000)
    q(make_checkout("c1", "ch1"), at_ms=0)
    assert q.machine.next_timeout_ms() is None  # nothing to expire while consumed
    assert effects_of(q(make_tick(), at_ms=5_000)[1], "queue_expired") == []
    q(make_cancel("c1"), at_ms=6_000)  # unused from now on
    assert q.machine.next_timeout_ms() == 7_001
    assert q(make_dequeue("g", "ch1"), at_ms=6_500)[0] == ("empty",)  # a get, even empty
    assert q.machine.next_timeout_ms() == 7_501
    assert effects_of(q(make_tick(), at_ms=7_501)[1], "queue_expired") == [("queue_expired",)]


def test_the_dead_letter_settle_helper_refuses_bad_indexes() -> None:
    with pytest.raises(ValueError):
        make_dead_letter_settle([-1])
    with pytest.raises(ValueError):
        make_dead_letter_settle("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dead_letter_strategy"):
        make_update_config({"dead_letter_strategy": "sometimes"})
