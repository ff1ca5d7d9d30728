"""The quorum queue machine, one command at a time: replies and effects."""

from __future__ import annotations

import msgpack
import pytest

from warrenmq.amqp.constants import ACCESS_REFUSED, PRECONDITION_FAILED
from warrenmq.queues.quorum import (
    Meta,
    QuorumMachine,
    make_cancel,
    make_cancel_unread,
    make_checkout,
    make_credit,
    make_discard,
    make_down,
    make_enqueue,
    make_purge,
    make_return,
    make_settle,
    make_tick,
    make_update_config,
)

from .helpers import Log, cursor, dead, delivered, effects_of


def enq(seq: int | None = None, size: int = 10, priority: int = 0, ttl_ms: int | None = None,
        publisher: str = "p1"):
    return make_enqueue(publisher if seq is not None else None, seq, size, priority, ttl_ms)


# -- enqueue and delivery -------------------------------------------------------------------------
def test_enqueue_without_consumers_keeps_the_message_ready_by_its_raft_index() -> None:
    q = Log()
    reply, effects = q(enq(1, size=7))
    assert reply == ("enqueued", 1)
    assert q.machine.messages_ready() == 1
    assert [m.raft_index for m in q.machine.ready] == [1]
    assert effects == [("release_cursor", 1)]  # the message at index 1 is the oldest needed


def test_a_consumer_with_credit_gets_the_message_in_the_same_command() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=10))
    _, effects = q(enq(1, size=7, priority=3, ttl_ms=500))
    [(_, cid, batch)] = effects_of(effects, "deliver")
    assert cid == "c1"
    [(msg_id, ref, redelivered, count)] = batch
    assert (msg_id, redelivered, count) == (0, False, 0)
    assert (ref.raft_index, ref.size_bytes, ref.priority, ref.expiry_ms) == (2, 7, 3, 1_500)


def test_prefetch_bounds_what_a_consumer_holds_and_a_settle_frees_room() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=2))
    got = [delivered(q(enq(s))[1]) for s in (1, 2, 3)]
    assert [len(g.get("c1", [])) for g in got] == [1, 1, 0]
    assert q.machine.messages_ready() == 1
    reply, effects = q(make_settle("c1", [0]))
    assert reply == ("ok", 1)
    assert delivered(effects) == {"c1": [(2, 4, False, 0)]}


def test_prefetch_zero_means_no_limit() -> None:
    q = Log()
    for s in range(1, 6):
        q(enq(s))
    _, effects = q(make_checkout("c1", "ch1", prefetch=0))
    assert [m for m, *_ in delivered(effects)["c1"]] == [0, 1, 2, 3, 4]


def test_credit_raises_the_prefetch_of_a_live_consumer() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=1))
    for s in (1, 2, 3):
        q(enq(s))
    reply, effects = q(make_credit("c1", 3))
    assert reply == ("ok",)
    assert [m for m, *_ in delivered(effects)["c1"]] == [1, 2]
    assert q(make_credit("nobody", 3))[0] == ("not_found",)


# -- settle, return, discard ----------------------------------------------------------------------
def test_settle_takes_several_ids_ignores_unknown_ones_and_moves_the_release_cursor() -> None:
    q = Log()
    q(make_checkout("c1", "ch1"))
    for s in (1, 2, 3):
        q(enq(s))  # indexes 2, 3, 4
    reply, effects = q(make_settle("c1", [0, 1, 99]))
    assert reply == ("ok", 2)
    assert cursor(effects) == 4
    reply, effects = q(make_settle("c1", [0, 2]))
    assert reply == ("ok", 1)
    assert cursor(effects) == 7  # nothing live: the whole log up to here can go
    assert q(make_settle("ghost", [0]))[0] == ("ok", 0)


def test_a_returned_message_is_redelivered_with_a_new_msg_id_before_later_messages() -> None:
    q = Log(delivery_limit=5)
    q(make_checkout("c1", "ch1", prefetch=1))
    q(enq(1))
    q(enq(2))
    reply, effects = q(make_return("c1", [0]))
    assert reply == ("ok", 1)
    # under a delivery limit it goes first (rabbit_fifo's returns): before message 2
    assert delivered(effects) == {"c1": [(1, 2, True, 1)]}


def test_without_a_delivery_limit_a_consumers_requeue_goes_behind_later_messages() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=1))
    q(enq(1))
    q(enq(2))
    _, effects = q(make_return("c1", [0]))
    # re-appended, as RabbitMQ does without a delivery limit: message 2 comes first
    assert delivered(effects) == {"c1": [(1, 3, False, 0)]}
    _, effects = q(make_settle("c1", [1]))
    assert delivered(effects) == {"c1": [(2, 2, True, 1)]}


def test_a_requeue_the_client_asked_for_goes_behind_one_from_a_closing_channel_first() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=2))
    for seq in (1, 2, 3):
        q(enq(seq))
    q(make_cancel("c1", requeue=False))  # c1 holds msgs 0 (index 2) and 1 (index 3)
    q(make_return("c1", [0], asked=True))  # a nack after the cancel: behind the others
    q(make_return("c1", [1], asked=False))  # its channel closing: first
    assert [m.raft_index for m in q.machine.ready] == [3, 4, 2]
    with pytest.raises(ValueError):
        make_return("", [0], asked=True)


def test_returns_over_the_delivery_limit_are_dead_lettered_with_reason_delivery_limit() -> None:
    q = Log(delivery_limit=1)
    q(make_checkout("c1", "ch1", prefetch=1))
    q(enq(1))
    _, effects = q(make_return("c1", [0]))
    assert delivered(effects) == {"c1": [(1, 2, True, 1)]}
    _, effects = q(make_return("c1", [1]))
    assert dead(effects) == {"delivery_limit": [2]}
    assert q.machine.messages_total() == 0


def test_discard_dead_letters_with_reason_rejected() -> None:
    q = Log()
    q(make_checkout("c1", "ch1"))
    q(enq(1))
    q(enq(2))
    reply, effects = q(make_discard("c1", [1]))
    assert reply == ("ok", 1)
    assert dead(effects) == {"rejected": [3]}
    assert q.machine.messages_total() == 1


# -- consumers going away -------------------------------------------------------------------------
def test_cancel_with_requeue_returns_what_the_consumer_held_to_the_others() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=2))
    q(enq(1))
    q(enq(2))
    q(make_checkout("c2", "ch2", prefetch=5))
    reply, effects = q(make_cancel("c1", requeue=True))
    assert reply == ("ok", 2)
    assert delivered(effects) == {"c2": [(0, 2, True, 1), (1, 3, True, 1)]}
    assert "c1" not in q.machine.consumers


def test_cancel_without_requeue_stops_deliveries_but_keeps_the_held_messages_ackable() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=1))
    q(enq(1))
    q(make_cancel("c1", requeue=False))
    _, effects = q(enq(2))
    assert delivered(effects) == {}
    assert q(make_settle("c1", [0]))[0] == ("ok", 1)
    assert "c1" not in q.machine.consumers  # gone once it holds nothing
    assert q(make_cancel("c1"))[0] == ("not_found",)


def test_cancel_keeping_what_the_channel_holds_returns_the_deliveries_it_never_got() -> None:
    q = Log()
    q(make_checkout("c1", "ch1"))
    q(enq(1))
    q(enq(2))  # delivered after the client cancelled: its channel never sees it
    reply, _ = q(make_cancel("c1", [0]))
    assert reply == ("ok", 2)
    assert [(m.raft_index, m.delivery_count) for m in q.machine.ready] == [(3, 1)]
    assert q(make_settle("c1", [0]))[0] == ("ok", 1)  # still ackable
    assert "c1" not in q.machine.consumers


# -- read-ahead: a consumer's node holds back what its client may not hold yet ---------------
def test_a_window_counts_the_checkouts_beyond_it_as_read_ahead_not_unacknowledged() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=4, window=2))
    for seq in range(1, 6):
        q(enq(seq, size=10 * seq))
    m = q.machine
    assert (m.messages_ready(), m.messages_checked_out()) == (1, 4)
    # the two latest checkouts (the 3rd and 4th message) are the ones held back
    assert (m.messages_read_ahead(), m.bytes_read_ahead()) == (2, 30 + 40)
    q(make_settle("c1", [0, 1]))  # their checkouts freed room: the fifth comes
    assert (m.messages_ready(), m.messages_checked_out(), m.messages_read_ahead()) == (0, 3, 1)


def test_a_cancel_returns_what_was_held_back_as_it_was_and_counts_the_rest() -> None:
    q = Log(delivery_limit=1)
    q(make_checkout("c1", "ch1", prefetch=4, window=2))
    for seq in range(1, 5):
        q(enq(seq))
    # the client holds msg 0; msg 1 reached its channel after the cancel; 2 and 3 were held
    reply, _ = q(make_cancel_unread("c1", [0], [2, 3]))
    assert reply == ("ok", 4)
    ready = [(x.raft_index, x.delivery_count, x.acquired_count) for x in q.machine.ready]
    assert sorted(ready) == [(3, 1, 1), (4, 0, 0), (5, 0, 0)]
    _, effects = q(make_checkout("c2", "ch2", prefetch=5))
    # the held-back ones come again as never delivered; the other redelivered, counted
    assert delivered(effects) == {"c2": [(0, 3, True, 1), (1, 4, False, 0), (2, 5, False, 0)]}
    assert q(make_settle("c1", [0]))[0] == ("ok", 1)  # the kept one is still ackable


def test_a_message_delivered_before_and_then_held_back_comes_again_redelivered() -> None:
    q = Log()
    q(make_checkout("c0", "ch0", prefetch=1))
    q(enq(1))
    q(make_return("c0", [0]))  # a failed delivery: it counts, and c0 gets it again
    q(make_cancel("c0", requeue=True))  # a second
    q(make_checkout("c1", "ch1", prefetch=2, window=1))  # a third checkout, held back
    q(make_cancel_unread("c1", [], [0]))
    _, effects = q(make_checkout("c2", "ch2", prefetch=5))
    assert delivered(effects) == {"c2": [(0, 2, True, 2)]}  # as the two failures left it


def test_a_checkout_without_a_window_reads_as_before_and_a_window_survives_a_snapshot() -> None:
    q = Log()
    q(("checkout", "old", "ch0", 3, 0, False, None))  # the 7-item form older nodes logged
    q(make_checkout("new", "ch1", prefetch=4, window=2))
    dumped = [c.dump() for c in q.machine.consumers.values()]
    assert [len(d) for d in dumped] == [10, 11]  # no window: the consumer dumps as before
    restored = QuorumMachine.from_snapshot(msgpack.unpackb(msgpack.packb(
        q.machine.snapshot())))
    assert {c.id: c.window for c in restored.consumers.values()} == {"old": 0, "new": 2}
    with pytest.raises(ValueError, match="window"):
        make_checkout("c", "ch", prefetch=4, window=5)


def test_down_returns_the_owners_messages_redelivered_and_forgets_its_publisher() -> None:
    q = Log()
    q(make_checkout("a", "ch1", prefetch=1))
    q(make_checkout("b", "ch1", prefetch=1))
    q(enq(1, publisher="ch1"))
    q(enq(2, publisher="ch1"))
    q(make_checkout("c", "ch2", prefetch=5))
    _, effects = q(make_down("ch1"))
    assert delivered(effects) == {"c": [(0, 3, True, 1), (1, 4, True, 1)]}
    assert set(q.machine.consumers) == {"c"}
    assert "ch1" not in q.machine.enqueuers


def test_ack_timeout_cancels_the_late_consumer_and_requeues_its_messages() -> None:
    q = Log(consumer_timeout_ms=1_000)
    q(make_checkout("slow", "ch1", prefetch=1), at_ms=0)
    q(enq(1), at_ms=0)
    q(make_checkout("fast", "ch2", prefetch=1, timeout_ms=60_000))
    _, effects = q(make_tick(), at_ms=1_000)
    assert effects_of(effects, "consumer_cancelled") == []
    _, effects = q(make_tick(), at_ms=1_001)
    assert effects_of(effects, "consumer_cancelled") == [("consumer_cancelled", "slow", "timeout")]
    assert delivered(effects) == {"fast": [(0, 2, True, 1)]}
    assert q(make_tick(), at_ms=50_000)[1] == []  # the override holds for "fast"


# -- limits ---------------------------------------------------------------------------------------
def test_message_ttl_expires_messages_at_the_head_on_tick() -> None:
    q = Log(message_ttl_ms=100)
    q(enq(1), at_ms=0)
    q(enq(2, ttl_ms=10), at_ms=50)  # its own TTL is shorter: expires at 60
    assert q.machine.next_timeout_ms() == 101
    assert dead(q(make_tick(), at_ms=100)[1]) == {}
    # 2 expired at 60 but waits behind the head, as in RabbitMQ; both go once 1 does
    assert dead(q(make_tick(), at_ms=101)[1]) == {"expired": [1, 2]}
    assert q.machine.messages_ready() == 0


def test_an_expired_message_is_never_delivered() -> None:
    q = Log()
    q(enq(1, ttl_ms=1_000), at_ms=0)
    q(enq(2, ttl_ms=10), at_ms=0)
    _, effects = q(make_checkout("c1", "ch1"), at_ms=500)
    assert [i for _, i, *_ in delivered(effects)["c1"]] == [1]
    assert dead(effects) == {"expired": [2]}


def test_ttl_zero_reaches_a_waiting_consumer_and_expires_otherwise() -> None:
    q = Log(message_ttl_ms=0)
    q(make_checkout("c1", "ch1", prefetch=1), at_ms=0)
    assert delivered(q(enq(1), at_ms=0)[1]) == {"c1": [(0, 2, False, 0)]}
    q(enq(2), at_ms=0)  # no credit left
    assert dead(q(make_tick(), at_ms=1)[1]) == {"expired": [3]}


def test_max_length_drop_head_dead_letters_the_oldest_with_reason_maxlen() -> None:
    q = Log(max_length=2)
    for s in (1, 2, 3):
        reply, effects = q(enq(s))
        assert reply == ("enqueued", s)
    assert dead(effects) == {"maxlen": [1]}
    assert [m.raft_index for m in q.machine.ready] == [2, 3]


def test_max_length_bytes_drop_head() -> None:
    q = Log(max_length_bytes=25)
    q(enq(1, size=10))
    q(enq(2, size=10))
    _, effects = q(enq(3, size=10))
    assert dead(effects) == {"maxlen": [1]}
    assert q.machine.ready.bytes == 20


def test_max_length_counts_ready_messages_only() -> None:
    q = Log(max_length=1)
    q(make_checkout("c1", "ch1", prefetch=2))
    q(enq(1))
    q(enq(2))
    reply, effects = q(enq(3))
    assert reply == ("enqueued", 3) and dead(effects) == {}
    assert q.machine.messages_ready() == 1


def test_reject_publish_refuses_and_a_resent_refused_publish_is_refused_again() -> None:
    q = Log(max_length=1, overflow="reject-publish")
    q(enq(1))
    reply, effects = q(enq(2))
    assert reply == ("rejected", 2)
    assert dead(effects) == {}
    assert q.machine.messages_ready() == 1
    assert q(enq(2))[0] == ("rejected", 2)
    assert q(enq(1))[0] == ("duplicate", 1)


def test_reject_publish_dlx_dead_letters_the_refused_message() -> None:
    q = Log(max_length_bytes=10, overflow="reject-publish-dlx")
    q(enq(1, size=10))
    reply, effects = q(enq(2, size=1))
    assert reply == ("rejected", 2)
    assert dead(effects) == {"maxlen": [2]}
    assert [m.raft_index for m in q.machine.ready] == [1]


def test_update_config_applies_a_lower_max_length_at_once() -> None:
    q = Log()
    for s in (1, 2, 3):
        q(enq(s))
    reply, effects = q(make_update_config({"max_length": 1}))
    assert reply == ("ok",)
    assert dead(effects) == {"maxlen": [1, 2]}
    reply, _ = q(("update_config", {"max_priority": 5}))
    assert reply == ("error", PRECONDITION_FAILED, "max_priority is for classic queues only")
    reply, _ = q(("update_config", {"queue_type": "classic"}))
    assert reply == ("error", PRECONDITION_FAILED, "queue_type cannot change")
    classic = Log(queue_type="classic")
    reply, _ = classic(("update_config", {"queue_type": "classic", "max_priority": 5}))
    assert reply == ("error", PRECONDITION_FAILED, "max_priority cannot change")


# -- publisher de-duplication ---------------------------------------------------------------------
def test_a_resent_enqueue_is_not_duplicated() -> None:
    q = Log()
    assert q(enq(1))[0] == ("enqueued", 1)
    assert q(enq(1))[0] == ("duplicate", 1)
    assert q(enq(2))[0] == ("enqueued", 2)
    assert q.machine.messages_ready() == 2


def test_an_enqueue_after_a_gap_is_refused_until_the_missing_one_comes() -> None:
    q = Log()
    assert q(enq(2))[0] == ("out_of_sequence", 1)
    assert q(enq(1))[0] == ("enqueued", 1)
    assert q(enq(2))[0] == ("enqueued", 2)
    assert q.machine.messages_ready() == 2


def test_untracked_enqueues_are_never_deduplicated() -> None:
    q = Log()
    q(enq())
    q(enq())
    assert q.machine.messages_ready() == 2


# -- priorities -----------------------------------------------------------------------------------
def test_max_priority_gives_one_level_per_priority_and_clamps_above_it() -> None:
    q = Log(queue_type="classic", max_priority=3)
    for s, p in enumerate([0, 2, 9, 3, 1], start=1):
        q(enq(s, priority=p))
    _, effects = q(make_checkout("c1", "ch1"))
    assert [i for _, i, *_ in delivered(effects)["c1"]] == [3, 4, 2, 5, 1]


def test_consumer_priority_serves_the_highest_with_credit_and_round_robins_equals() -> None:
    q = Log()
    q(make_checkout("low", "ch1", prefetch=10, priority=0))
    q(make_checkout("high1", "ch2", prefetch=2, priority=5))
    q(make_checkout("high2", "ch3", prefetch=2, priority=5))
    got: list[str] = []
    for s in range(1, 7):
        got += [cid for cid in delivered(q(enq(s))[1])]
    assert got == ["high1", "high2", "high1", "high2", "low", "low"]


# -- single active consumer -----------------------------------------------------------------------
def test_single_active_consumer_fails_over_to_the_next_in_order() -> None:
    q = Log(single_active_consumer=True)
    reply, effects = q(make_checkout("c1", "ch1", prefetch=5))
    assert reply[1]["active"] is True
    assert effects_of(effects, "consumer_active") == [("consumer_active", "c1", True)]
    reply, _ = q(make_checkout("c2", "ch2", prefetch=5))
    assert reply[1]["active"] is False
    q(enq(1))
    q(enq(2))
    assert [len(c.checked_out) for c in q.machine.consumers.values()] == [2, 0]
    _, effects = q(make_down("ch1"))
    assert effects_of(effects, "consumer_active") == [("consumer_active", "c2", True)]
    assert delivered(effects) == {"c2": [(0, 3, True, 1), (1, 4, True, 1)]}


def test_single_active_consumer_hands_over_to_a_higher_priority_once_quiet() -> None:
    q = Log(single_active_consumer=True)
    q(make_checkout("c1", "ch1", prefetch=5))
    q(enq(1))
    _, effects = q(make_checkout("vip", "ch2", prefetch=5, priority=10))
    assert effects_of(effects, "consumer_active") == []  # c1 still holds a message
    _, effects = q(enq(2))
    assert delivered(effects) == {}  # c1 is quiescing: nothing new for it
    _, effects = q(make_settle("c1", [0]))
    assert effects_of(effects, "consumer_active") == [
        ("consumer_active", "c1", False), ("consumer_active", "vip", True)]
    assert delivered(effects) == {"vip": [(0, 4, False, 0)]}


def test_exclusive_consumers_are_refused_when_others_exist_and_refuse_others() -> None:
    q = Log()
    q(make_checkout("c1", "ch1"))
    assert q(make_checkout("x", "ch2", exclusive=True))[0] == (
        "error", ACCESS_REFUSED, "in exclusive use")
    q(make_cancel("c1"))
    assert q(make_checkout("x", "ch2", exclusive=True))[0][0] == "ok"
    assert q(make_checkout("c3", "ch3"))[0][0] == "error"


# -- purge, odd input, snapshots ------------------------------------------------------------------
def test_purge_removes_ready_messages_only_and_dead_letters_nothing() -> None:
    q = Log()
    q(make_checkout("c1", "ch1", prefetch=1))
    for s in (1, 2, 3):
        q(enq(s))
    reply, effects = q(make_purge())
    assert reply == ("purged", 2)
    assert dead(effects) == {}
    assert q.machine.messages_total() == 1
    assert cursor(effects) is None  # message 2 (index 2) is still out


def test_an_unknown_or_malformed_command_gets_an_error_reply_not_an_exception() -> None:
    q = Log()
    assert q(("frobnicate", 1))[0][0] == "error"
    assert q(("settle", "c1"))[0][0] == "error"
    assert q(())[0][0] == "error"


def test_commands_after_a_msgpack_round_trip_apply_the_same() -> None:
    a, b = Log(max_length=3), Log(max_length=3)
    commands = [make_checkout("c1", "ch1", prefetch=1), enq(1, ttl_ms=5), enq(2),
                make_return("c1", [0]), enq(3), make_tick(), make_settle("c1", [1])]
    for c in commands:
        wire = msgpack.unpackb(msgpack.packb(c))
        assert isinstance(wire, list)
        ra, ea = a(c)
        rb, eb = b(wire)
        assert msgpack.packb(ra) == msgpack.packb(rb) and msgpack.packb(ea) == msgpack.packb(eb)
    assert a.machine.snapshot() == b.machine.snapshot()


def test_a_snapshot_holds_no_body_survives_msgpack_and_restores_the_same_state() -> None:
    q = Log(single_active_consumer=True, delivery_limit=3)
    q(make_checkout("c1", "ch1", prefetch=2))
    q(make_checkout("c2", "ch2"))
    q(make_enqueue("p", 1, 5, 0, None, b"secret body"))
    q(make_enqueue("p", 2, 5, 7, 100, b"secret body"))
    q(make_return("c1", [0]))
    q(make_enqueue("p", 3, 5, 0, None, b"secret body"))
    snap = q.machine.snapshot()
    packed = msgpack.packb(snap)
    assert b"secret body" not in packed
    restored = QuorumMachine.from_snapshot(msgpack.unpackb(packed))
    assert restored.snapshot() == msgpack.unpackb(packed)
    after = Meta(q.index + 1, q.now_ms)
    assert restored.apply(after, make_settle("c1", [1, 2])) == \
        q.machine.apply(after, make_settle("c1", [1, 2]))
    with pytest.raises(ValueError, match="version"):
        QuorumMachine.from_snapshot({**snap, "version": 99})


def test_next_timeout_covers_ttl_and_ack_deadlines() -> None:
    q = Log(consumer_timeout_ms=500)
    assert q.machine.next_timeout_ms() is None
    q(make_checkout("c1", "ch1", prefetch=1), at_ms=0)
    q(enq(1), at_ms=0)
    q(enq(2, ttl_ms=2_000), at_ms=100)
    assert q.machine.next_timeout_ms() == 501


@pytest.mark.parametrize("bad", [
    lambda: make_enqueue("p", 0, 1),
    lambda: make_enqueue("p", None, 1),
    lambda: make_enqueue(None, None, -1),
    lambda: make_enqueue(None, None, 1, ttl_ms=-5),
    lambda: make_checkout("", "o"),
    lambda: make_checkout("c", "o", prefetch=-1),
    lambda: make_checkout("c", "o", priority=1.5),  # type: ignore[arg-type]
    lambda: make_settle("c", [-1]),
    lambda: make_settle("c", "0"),  # type: ignore[arg-type]
    lambda: make_update_config({"max_length": -1}),
    lambda: make_update_config({"overflow": "drop-tail"}),
    lambda: make_update_config({"max_priority": 256}),
    lambda: make_update_config({"ttl": 5}),
])
def test_the_helpers_refuse_bad_arguments(bad) -> None:
    with pytest.raises(ValueError):
        bad()


def test_a_bad_config_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="overflow"):
        QuorumMachine({"overflow": "nope"})
