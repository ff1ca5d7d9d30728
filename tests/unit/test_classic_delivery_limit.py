"""A classic queue under a delivery limit, driven through the sans-IO connection.

Random command logs (publish, consume, cancel, get, ack, nack and reject with or without
requeue, basic.recover, channel close) against a queue with x-delivery-limit 2 that
dead-letters into a fanout bound to a second queue. A model counts each message's failed
deliveries (every requeue, recover or close while it is unacknowledged); after every step a
message is in exactly one place, it is in the dead-letter queue exactly when it failed more
often than the limit, every delivery it is held under shows the model's count in
`x-delivery-count` (none before the first failure), and the stored messages never carry the
header. Directed tests check how argument and policy combine."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pamqp import commands as C

from warrenmq.core.queue_settings import apply_queue_settings
from warrenmq.meta.records import QueueRecord
from warrenmq.queues.classic import ClassicQueue

from .pipe import Pipe

LIMIT = 2


class DeliveryLimitMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.p = Pipe()
        self.p.open()
        self.p.send(1, C.Channel.Open())
        self.p.send(1, C.Exchange.Declare(exchange="dlx", exchange_type="fanout"))
        self.p.send(1, C.Queue.Declare(queue="dead"))
        self.p.send(1, C.Queue.Bind(queue="dead", exchange="dlx"))
        self.p.send(1, C.Queue.Declare(queue="q", arguments={"x-delivery-limit": LIMIT,
                                                             "x-dead-letter-exchange": "dlx"}))
        self.published = 0
        self.failures: dict[bytes, int] = {}
        self.settled: set[bytes] = set()
        self.consuming = False

    @property
    def ch(self):
        return self.p.conn.channels.get(1)

    def queue(self, name: str = "q") -> ClassicQueue:
        q = self.p.node.live_queue("/", name)
        assert q is not None
        return q

    def _fail(self, bodies: list[bytes]) -> None:
        for body in bodies:
            self.failures[body] = self.failures.get(body, 0) + 1

    def _held(self) -> list[bytes]:
        return [v[1][1].body for v in self.ch.unacked.values()]

    @rule(n=st.integers(1, 3))
    def publish(self, n):
        for _ in range(n):
            self.p.publish(1, "", "q", b"%d" % self.published)
            self.published += 1

    @precondition(lambda self: not self.consuming)
    @rule(prefetch=st.integers(1, 3))
    def consume(self, prefetch):
        self.p.send(1, C.Basic.Qos(prefetch_count=prefetch))
        self.p.send(1, C.Basic.Consume(queue="q", consumer_tag="c"))
        self.consuming = True

    @precondition(lambda self: self.consuming)
    @rule()
    def cancel(self):
        # the cancelled consumer's deliveries stay with the channel, still unacknowledged
        self.p.send(1, C.Basic.Cancel(consumer_tag="c"))
        self.consuming = False

    @rule()
    def get(self):
        self.p.send(1, C.Basic.Get(queue="q"))

    @precondition(lambda self: self.ch is not None and self.ch.unacked)
    @rule(data=st.data(), kind=st.sampled_from(["ack", "nack-requeue", "nack-drop",
                                                 "reject-requeue"]))
    def settle(self, data, kind):
        tag = data.draw(st.sampled_from(list(self.ch.unacked)))
        body = self.ch.unacked[tag][1][1].body
        if kind == "ack":
            self.settled.add(body)
            self.p.send(1, C.Basic.Ack(delivery_tag=tag))
        elif kind == "nack-drop":
            self.settled.add(body)  # dead-lettered as rejected, not as a poison message
            self.p.send(1, C.Basic.Nack(delivery_tag=tag, requeue=False))
        elif kind == "nack-requeue":
            self._fail([body])
            self.p.send(1, C.Basic.Nack(delivery_tag=tag, requeue=True))
        else:
            self._fail([body])
            self.p.send(1, C.Basic.Reject(delivery_tag=tag, requeue=True))

    @rule()
    def recover(self):
        self._fail(self._held())
        self.p.send(1, C.Basic.Recover(requeue=True))

    @rule()
    def close_and_reopen_channel(self):
        self._fail(self._held())
        self.p.send(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
        self.p.send(1, C.Channel.Open())
        self.consuming = False

    @invariant()
    def poison_messages_are_dead_lettered_and_nothing_else_is(self):
        q, dead = self.queue(), self.queue("dead")
        ready = [e[1].body for e in q.ready]
        held = self._held() if self.ch is not None else []
        poisoned = [e[1].body for e in dead.ready
                    if e[1].headers()["x-death"][0]["reason"] == "delivery_limit"]
        rejected = [e[1].body for e in dead.ready
                    if e[1].headers()["x-death"][0]["reason"] == "rejected"]
        assert set(rejected) <= self.settled
        places = ready + held + poisoned + sorted(self.settled)
        assert len(places) == len(set(places)), "a message is in two places"
        assert set(places) == {b"%d" % i for i in range(self.published)}
        assert set(poisoned) == {b for b, n in self.failures.items() if n > LIMIT}
        assert q.unacked == len(held)

    @invariant()
    def deliveries_carry_the_count_and_stored_messages_do_not(self):
        q = self.queue()
        for seq, msg, _ in q.ready:
            assert "x-delivery-count" not in (msg.headers() or {})
            assert q.delivery_counts.get(seq, 0) == self.failures.get(msg.body, 0)
        if self.ch is None:
            return
        for _queue, (seq, msg, redelivered), _consumer in self.ch.unacked.values():
            count = self.failures.get(msg.body, 0)
            assert (msg.headers() or {}).get("x-delivery-count") == (count or None)
            assert (seq in q.lent) == (count > 0)
            assert redelivered or count == 0
        assert len(q.lent) <= len(self.ch.unacked)


TestDeliveryLimitMachine = DeliveryLimitMachine.TestCase
TestDeliveryLimitMachine.settings = settings(max_examples=100, stateful_step_count=40,
                                             deadline=None)


def _queue() -> ClassicQueue:
    return ClassicQueue(QueueRecord(name="q", vhost="/"))


def test_the_smaller_of_argument_and_policy_is_the_delivery_limit() -> None:
    q = _queue()
    apply_queue_settings(q, {"x-delivery-limit": 5}, {"delivery-limit": 2})
    assert q.delivery_limit == 2
    apply_queue_settings(q, {"x-delivery-limit": 1}, {"delivery-limit": 2})
    assert q.delivery_limit == 1
    apply_queue_settings(q, {}, {"delivery-limit": 3})
    assert q.delivery_limit == 3


def test_a_negative_limit_acts_as_zero_and_a_non_integer_is_ignored() -> None:
    q = _queue()
    apply_queue_settings(q, {"x-delivery-limit": -4}, {})
    assert q.delivery_limit == 0
    apply_queue_settings(q, {"x-delivery-limit": "x"}, {})
    assert q.delivery_limit is None


def test_without_a_limit_nothing_is_counted() -> None:
    q = _queue()
    apply_queue_settings(q, {"x-delivery-limit": 3}, {})
    q.delivery_counts[1] = 2
    apply_queue_settings(q, {}, {})  # the policy that set it was cleared
    assert q.delivery_limit is None and q.delivery_counts == {}
