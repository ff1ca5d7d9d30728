"""The per-channel client session against a real machine: confirms once applied, delivery
tags, ack/nack/reject by tag, and a leader change with commands lost or applied twice."""

from __future__ import annotations

import pytest

from warrenmq.queues.quorum import (
    DeliveryTags,
    Meta,
    PublisherStateLost,
    QuorumMachine,
    QuorumSession,
    UnknownDeliveryTag,
)


class Wire:
    """A machine and the sessions talking to it; `propose` applies a command as Raft would
    once it commits, and routes replies and deliveries back."""

    def __init__(self, **config) -> None:
        self.machine = QuorumMachine(config)
        self.index = 0
        self.sessions: dict[str, QuorumSession] = {}
        self.deliveries: dict[str, list] = {}
        self.effects: list = []

    def session(self, owner: str, tags: DeliveryTags | None = None) -> QuorumSession:
        s = self.sessions[owner] = QuorumSession(owner, tags)
        self.deliveries[owner] = []
        return s

    def propose(self, session: QuorumSession, correlation, command) -> list:
        self.index += 1
        reply, effects = self.machine.apply(Meta(self.index, 0), command)
        self.effects += effects
        for effect in effects:
            if effect[0] == "deliver":
                owner = effect[1].rsplit("/", 1)[0]
                got = self.sessions[owner].handle_deliver(effect[1], effect[2])
                self.deliveries[owner] += got
        return session.handle_applied(correlation, reply)


def test_a_publish_is_confirmed_once_its_enqueue_is_applied() -> None:
    w = Wire()
    s = w.session("ch1")
    corr, cmd = s.publish(10, correlation="tag-1")
    assert s.unconfirmed == [1]
    assert w.propose(s, corr, cmd) == [("confirm", ["tag-1"])]
    assert s.unconfirmed == []
    assert w.machine.messages_ready() == 1


def test_a_refused_publish_is_nacked() -> None:
    w = Wire(max_length=1, overflow="reject-publish")
    s = w.session("ch1")
    w.propose(s, *s.publish(1, correlation=1))
    assert w.propose(s, *s.publish(1, correlation=2)) == [("nack", [2])]


def test_resending_after_a_leader_change_neither_loses_nor_duplicates() -> None:
    w = Wire()
    s = w.session("ch1")
    sent = [s.publish(1, correlation=n) for n in range(1, 6)]
    # the old leader committed 1 and 3 but the replies never came back; 2 got lost
    w.machine.apply(Meta(1, 0), sent[0][1])
    w.index = 1
    assert w.propose(s, *sent[2]) and s.unconfirmed == [1, 2, 3, 4, 5]
    confirmed: list = []
    for corr, cmd in s.leader_changed():
        for action in w.propose(s, corr, cmd):
            if action[0] == "resend":
                for c2, cmd2 in action[1]:
                    for a2 in w.propose(s, c2, cmd2):
                        confirmed += a2[1]
            else:
                confirmed += action[1]
    assert sorted(confirmed) == [1, 2, 3, 4, 5]
    assert w.machine.messages_ready() == 5
    assert s.unconfirmed == []


def test_a_gap_is_resent_once_not_once_per_later_reply() -> None:
    w = Wire()
    s = w.session("ch1")
    sent = [s.publish(1) for _ in range(4)]
    actions = [w.propose(s, *sent[i]) for i in (1, 2, 3)]  # 1 lost
    resends = [a for batch in actions for a in batch if a[0] == "resend"]
    assert len(resends) == 1
    assert [c for c, _ in resends[0][1]] == [("enqueue", n) for n in (1, 2, 3, 4)]


def test_a_forgotten_publisher_is_reported_not_looped_on() -> None:
    w = Wire()
    s = w.session("ch1")
    w.propose(s, *s.publish(1))
    w.machine.apply(Meta(99, 0), ("down", "ch1"))
    w.index = 99
    with pytest.raises(PublisherStateLost):
        w.propose(s, *s.publish(1))


def test_deliveries_get_channel_delivery_tags_shared_across_queues() -> None:
    tags = DeliveryTags()
    w1, w2 = Wire(), Wire()
    s1, s2 = w1.session("ch1", tags), w2.session("ch1", tags)
    assert w1.propose(s1, *s1.consume("a", prefetch=5)) == [("consume_ok", "a")]
    w2.propose(s2, *s2.consume("b", prefetch=5))
    w1.propose(s1, *s1.publish(1))
    w2.propose(s2, *s2.publish(1))
    w1.propose(s1, *s1.publish(1))
    got1, got2 = w1.deliveries["ch1"], w2.deliveries["ch1"]
    assert [d.delivery_tag for d in got1] == [1, 3]
    assert [d.delivery_tag for d in got2] == [2]
    assert got1[0].consumer_tag == "a" and not got1[0].redelivered


def test_a_delivery_seen_before_is_dropped() -> None:
    w = Wire()
    s = w.session("ch1")
    w.propose(s, *s.consume("a"))
    w.propose(s, *s.publish(1))
    [effect] = [e for e in w.effects if e[0] == "deliver"]
    assert s.handle_deliver(effect[1], effect[2]) == []  # a new leader sends it again


def test_ack_multiple_settles_every_tag_up_to_it_in_one_command_per_consumer() -> None:
    w = Wire()
    s = w.session("ch1")
    w.propose(s, *s.consume("a"))
    for _ in range(3):
        w.propose(s, *s.publish(1))
    [(corr, cmd)] = s.ack(2, multiple=True)
    assert cmd == ("settle", "ch1/a", [0, 1])
    w.propose(s, corr, cmd)
    assert w.machine.messages_total() == 1
    with pytest.raises(UnknownDeliveryTag):
        s.ack(1)
    assert s.ack(99, multiple=True) != []  # tag 3 left
    assert s.ack(0, multiple=True) == []


def test_nack_requeues_and_reject_without_requeue_discards() -> None:
    w = Wire()
    s = w.session("ch1")
    w.propose(s, *s.consume("a", prefetch=1))
    w.propose(s, *s.publish(1))
    for corr, cmd in s.nack(1, requeue=True):
        w.propose(s, corr, cmd)
    redelivered = w.deliveries["ch1"][-1]
    assert (redelivered.delivery_tag, redelivered.redelivered, redelivered.delivery_count) == \
        (2, True, 1)
    for corr, cmd in s.reject(2, requeue=False):
        w.propose(s, corr, cmd)
    assert [e[1] for e in w.effects if e[0] == "dead_letter"] == ["rejected"]


def test_an_exclusive_refusal_comes_back_as_consume_failed() -> None:
    w = Wire()
    s1, s2 = w.session("ch1"), w.session("ch2")
    w.propose(s1, *s1.consume("a"))
    assert w.propose(s2, *s2.consume("x", exclusive=True)) == [
        ("consume_failed", "x", 403, "in exclusive use")]
    assert s2.consumers == {}


def test_cancel_keeps_unacked_ackable_and_close_returns_everything() -> None:
    w = Wire()
    s = w.session("ch1")
    other = w.session("ch2")
    w.propose(s, *s.consume("a", prefetch=2))
    w.propose(s, *s.publish(1))
    w.propose(s, *s.publish(1))
    assert w.propose(s, *s.cancel("a")) == [("cancel_ok", "a")]
    for corr, cmd in s.ack(1):
        w.propose(s, corr, cmd)
    w.propose(other, *other.consume("b"))
    w.propose(s, *s.close())
    assert [(d.redelivered, d.delivery_count) for d in w.deliveries["ch2"]] == [(True, 1)]


def test_a_consumer_ended_by_ack_timeout_loses_its_tags() -> None:
    w = Wire(consumer_timeout_ms=10)
    s = w.session("ch1")
    w.propose(s, *s.consume("a"))
    w.propose(s, *s.publish(1))
    assert s.handle_consumer_cancelled("ch1/a") == "a"
    with pytest.raises(UnknownDeliveryTag):
        s.ack(1)
    assert s.handle_consumer_cancelled("ch1/a") is None


def test_session_refuses_a_reused_consumer_tag_and_an_unknown_one() -> None:
    s = QuorumSession("ch1")
    s.consume("a")
    with pytest.raises(ValueError):
        s.consume("a")
    with pytest.raises(ValueError):
        s.qos("zzz", 1)
