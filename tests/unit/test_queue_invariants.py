"""Random command logs against one queue: every published message is, at every step, in
exactly one place: ready in the queue, delivered and unacknowledged on a channel, or settled
(acked, or rejected without requeue). Ready messages stay in publish order by seq."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pamqp import commands as C

from .pipe import Pipe


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.p = Pipe()
        self.p.open()
        self.p.send(1, C.Channel.Open())
        self.p.send(1, C.Queue.Declare(queue="q"))
        self.published = 0
        self.settled: set[bytes] = set()
        self.consuming = False
        self.channel_open = True

    @property
    def ch(self):
        return self.p.conn.channels.get(1)

    @property
    def queue(self):
        return self.p.node.live_queue("/", "q")

    @precondition(lambda self: self.channel_open)
    @rule(n=st.integers(1, 4))
    def publish(self, n):
        for _ in range(n):
            self.p.publish(1, "", "q", b"%d" % self.published)
            self.published += 1

    @precondition(lambda self: self.channel_open and not self.consuming)
    @rule(prefetch=st.integers(0, 3))
    def consume(self, prefetch):
        self.p.send(1, C.Basic.Qos(prefetch_count=prefetch))
        self.p.send(1, C.Basic.Consume(queue="q", consumer_tag="c"))
        self.consuming = True

    @precondition(lambda self: self.consuming)
    @rule()
    def cancel(self):
        self.p.send(1, C.Basic.Cancel(consumer_tag="c"))
        self.consuming = False

    @precondition(lambda self: self.channel_open)
    @rule()
    def get(self):
        self.p.send(1, C.Basic.Get(queue="q"))

    @precondition(lambda self: self.channel_open and self.ch and self.ch.unacked)
    @rule(data=st.data(), kind=st.sampled_from(["ack", "ack-multiple", "nack-requeue",
                                                 "nack-drop", "reject-requeue"]))
    def settle(self, data, kind):
        tags = list(self.ch.unacked)
        tag = data.draw(st.sampled_from(tags))
        if kind in ("ack", "ack-multiple"):
            multiple = kind == "ack-multiple"
            gone = [t for t in tags if t <= tag] if multiple else [tag]
            self.settled |= {self.ch.unacked[t][1][1].body for t in gone}
            self.p.send(1, C.Basic.Ack(delivery_tag=tag, multiple=multiple))
        elif kind == "nack-drop":
            self.settled.add(self.ch.unacked[tag][1][1].body)
            self.p.send(1, C.Basic.Nack(delivery_tag=tag, requeue=False))
        elif kind == "nack-requeue":
            self.p.send(1, C.Basic.Nack(delivery_tag=tag, requeue=True))
        else:
            self.p.send(1, C.Basic.Reject(delivery_tag=tag, requeue=True))

    @precondition(lambda self: self.channel_open)
    @rule()
    def recover(self):
        self.p.send(1, C.Basic.Recover(requeue=True))

    @precondition(lambda self: self.channel_open)
    @rule()
    def close_and_reopen_channel(self):
        self.p.send(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
        self.p.send(1, C.Channel.Open())
        self.consuming = False

    @invariant()
    def every_message_in_exactly_one_place(self):
        q = self.queue
        ready = [e[1].body for e in q.ready]
        unacked = [v[1][1].body for ch in self.p.conn.channels.values()
                   for v in ch.unacked.values()]
        places = ready + unacked + sorted(self.settled)
        assert len(places) == len(set(places)), "a message is in two places"
        assert set(places) == {b"%d" % i for i in range(self.published)}
        assert q.unacked == len(unacked)

    @invariant()
    def ready_is_ordered_by_seq(self):
        seqs = [e[0] for e in self.queue.ready]
        assert seqs == sorted(seqs)

    @invariant()
    def prefetch_is_respected(self):
        ch = self.ch
        if ch is None:
            return
        for c in ch.consumers.values():
            assert not c.prefetch or c.unacked <= c.prefetch


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
