"""Random command logs against the quorum queue machine (rabbit_fifo_prop's idea), with the
invariants checked after every command:

- every accepted message is in exactly one place: ready, checked out by one consumer, held
  as an at-least-once dead letter, settled, dead-lettered (rejected / maxlen /
  delivery_limit), expired, forwarded (a held dead letter settled), or purged; the ready
  bytes add up;
- a held dead letter is named (`dead_letter_pending`) when it dies and only then, or again
  on a tick; `queue_expired` only comes from a tick, with x-expires and no consumer;
- a consumer that gets a delivery holds no more than its prefetch afterwards; only active
  consumers get deliveries; under single-active-consumer at most one is active;
- delivery counts never go down, and no message is delivered after its expiry;
- release_cursor only moves forward and never passes a live message;
- at the end, the snapshot after any prefix, through msgpack, plus the rest of the log (also
  through msgpack) replays to the same replies, effects and state as the whole log.
"""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from warrenmq.queues.quorum import (
    Meta,
    QuorumMachine,
    make_cancel,
    make_cancel_unread,
    make_checkout,
    make_credit,
    make_dead_letter_settle,
    make_discard,
    make_down,
    make_enqueue,
    make_purge,
    make_return,
    make_settle,
    make_tick,
)
from warrenmq.queues.quorum.machine import DEAD_LETTER_RETRY_MS
from warrenmq.queues.quorum.state import CANCELLED, QUIESCING, UP

CONSUMERS = ["c1", "c2", "c3"]
OWNERS = {"c1": "o1", "c2": "o1", "c3": "o2"}
PUBLISHERS = ["o1", "o2", "p3"]

configs = st.fixed_dictionaries({}, optional={
    "max_length": st.integers(0, 4),
    "max_length_bytes": st.integers(0, 40),
    "overflow": st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx"]),
    "message_ttl_ms": st.sampled_from([0, 30, 200]),
    "delivery_limit": st.integers(0, 2),
    "max_priority": st.integers(1, 3),
    "single_active_consumer": st.booleans(),
    "consumer_timeout_ms": st.sampled_from([50, 300]),
    "dead_letter_strategy": st.sampled_from(["at-most-once", "at-least-once"]),
    "expires_ms": st.sampled_from([100, 500]),
})


def _typed(config: dict, classic: bool) -> dict:
    """Half the logs run a quorum queue's order (no x-max-priority), half a classic one's."""
    if classic:
        return {**config, "queue_type": "classic"}
    return {k: v for k, v in config.items() if k != "max_priority"}


typed_configs = st.builds(_typed, configs, st.booleans())


def _pack(value):
    return msgpack.unpackb(msgpack.packb(value))


class QuorumQueueLog(RuleBasedStateMachine):
    @initialize(config=typed_configs)
    def start(self, config) -> None:
        self.config = config
        self.machine = QuorumMachine(config)
        self.index = 0
        self.now_ms = 0
        self.log: list[tuple[Meta, tuple]] = []
        self.results: list[tuple] = []  # (reply, effects) per command, packed
        self.snapshots: list[dict] = [self.machine.snapshot()]
        self.next_seq = dict.fromkeys(PUBLISHERS, 1)
        self.accepted: set[int] = set()
        self.gone: dict[str, set[int]] = {k: set() for k in (
            "settled", "rejected", "maxlen", "delivery_limit", "expired", "purged",
            "forwarded")}
        self.delivery_counts: dict[int, int] = {}
        self.cursor = 0

    # -- the command log ------------------------------------------------------------------------
    def apply(self, command: tuple) -> None:
        machine = self.machine
        self.index += 1
        meta = Meta(self.index, self.now_ms)
        before_ready = {m.raft_index for m in machine.ready}
        before_held = set(machine.discards)
        before_out = {cid: {mid: m.raft_index for mid, (m, _) in c.checked_out.items()}
                      for cid, c in machine.consumers.items()}
        reply, effects = machine.apply(meta, command)
        self.log.append((meta, command))
        self.results.append(_pack([reply, effects]))
        self.snapshots.append(machine.snapshot())

        op = command[0]
        if op == "enqueue" and reply[0] == "enqueued":
            assert self.index not in self.accepted
            self.accepted.add(self.index)
        if op == "settle":
            held = before_out.get(command[1], {})
            self.gone["settled"] |= {held[m] for m in command[2] if m in held}
        if op == "purge":
            assert reply == ("purged", len(before_ready))
            self.gone["purged"] |= before_ready
        if op == "dead_letter_settle":
            settled = before_held & set(command[1])
            assert reply == ("ok", len(settled))
            self.gone["forwarded"] |= settled
        delivered_to: set[str] = set()
        named = [ref.raft_index for e in effects if e[0] == "dead_letter_pending" for ref in e[2]]
        assert len(named) == len(set(named)), "a held dead letter named twice in one command"
        for effect in effects:
            if effect[0] == "dead_letter":
                indexes = {ref.raft_index for ref in effect[2]}
                if op == "enqueue" and reply[0] == "rejected":
                    # reject-publish-dlx: the refused message was never accepted
                    assert effect[1] == "maxlen" and indexes == {self.index}
                    continue
                assert indexes <= self.accepted
                self.gone[effect[1]] |= indexes
            elif effect[0] == "dead_letter_pending":
                indexes = {ref.raft_index for ref in effect[2]}
                assert self.config.get("dead_letter_strategy") == "at-least-once"
                assert indexes <= set(machine.discards)
                # named when it dies, or again on a tick
                assert op == "tick" or not (indexes & before_held)
                assert all(machine.discards[i][1] == effect[1] for i in indexes)
            elif effect[0] == "queue_expired":
                assert op == "tick" and "expires_ms" in self.config
                assert machine.consumer_count() == 0
            elif effect[0] == "deliver":
                consumer = machine.consumers[effect[1]]
                delivered_to.add(effect[1])
                for _, ref, redelivered, count in effect[2]:
                    assert ref.expiry_ms is None or ref.expiry_ms >= meta.ts_ms, \
                        "an expired message was delivered"
                    assert redelivered or count == 0
            elif effect[0] == "release_cursor":
                assert effect[1] > self.cursor, "release_cursor went backwards"
                self.cursor = effect[1]
        for cid in delivered_to:
            consumer = machine.consumers[cid]
            assert consumer.status == UP
            assert consumer.prefetch == 0 or len(consumer.checked_out) <= consumer.prefetch

    @rule(publisher=st.sampled_from(PUBLISHERS), size=st.integers(0, 12),
          priority=st.integers(0, 6), ttl=st.sampled_from([None, None, 0, 20, 100]),
          resend=st.integers(0, 3), gap=st.booleans())
    def enqueue(self, publisher, size, priority, ttl, resend, gap) -> None:
        seq = self.next_seq[publisher]
        if resend and seq > resend:
            seq -= resend  # a copy re-sent after a leader change
        elif gap:
            seq += 1  # an earlier one got lost on the way: out of sequence
        else:
            self.next_seq[publisher] += 1
        self.apply(make_enqueue(publisher, seq, size, priority, ttl))
        if publisher in self.machine.enqueuers:
            self.next_seq[publisher] = self.machine.enqueuers[publisher].next_seq
        else:  # forgotten by a down: a new incarnation starts again
            self.next_seq[publisher] = 1

    @rule(size=st.integers(0, 12), priority=st.integers(0, 6))
    def enqueue_untracked(self, size, priority) -> None:
        self.apply(make_enqueue(None, None, size, priority))

    @rule(cid=st.sampled_from(CONSUMERS), prefetch=st.integers(0, 3),
          priority=st.integers(0, 2), exclusive=st.sampled_from([False, False, False, True]))
    def checkout(self, cid, prefetch, priority, exclusive) -> None:
        self.apply(make_checkout(cid, OWNERS[cid], prefetch, priority, exclusive))

    @rule(cid=st.sampled_from(CONSUMERS), window=st.integers(1, 3), extra=st.integers(0, 3))
    def checkout_reading_ahead(self, cid, window, extra) -> None:
        self.apply(make_checkout(cid, OWNERS[cid], window + extra, 0, False, None, window))

    def _held(self, cid, data) -> list[int]:
        consumer = self.machine.consumers.get(cid)
        ids = sorted(consumer.checked_out) if consumer else []
        chosen = data.draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
        return chosen + data.draw(st.lists(st.integers(0, 30), max_size=1))  # maybe a bogus id

    @rule(cid=st.sampled_from(CONSUMERS), data=st.data())
    def settle(self, cid, data) -> None:
        self.apply(make_settle(cid, self._held(cid, data)))

    @rule(cid=st.sampled_from(CONSUMERS), data=st.data())
    def settle_again(self, cid, data) -> None:
        self.apply(make_settle(cid, self._held(cid, data)))

    @rule(cid=st.sampled_from(CONSUMERS), data=st.data(),
          asked=st.sampled_from([None, True, False]))
    def return_(self, cid, data, asked) -> None:
        self.apply(make_return(cid, self._held(cid, data), asked))

    @rule(cid=st.sampled_from(CONSUMERS), data=st.data())
    def discard(self, cid, data) -> None:
        self.apply(make_discard(cid, self._held(cid, data)))

    @rule(cid=st.sampled_from(CONSUMERS), prefetch=st.integers(0, 4))
    def credit(self, cid, prefetch) -> None:
        self.apply(make_credit(cid, prefetch))

    @rule(cid=st.sampled_from(CONSUMERS), requeue=st.booleans())
    def cancel(self, cid, requeue) -> None:
        self.apply(make_cancel(cid, requeue))

    @rule(cid=st.sampled_from(CONSUMERS), data=st.data())
    def cancel_keeping(self, cid, data) -> None:
        """A channel's cancel keeps what the channel holds and returns the rest."""
        self.apply(make_cancel(cid, self._held(cid, data)))

    @rule(cid=st.sampled_from(CONSUMERS), data=st.data())
    def cancel_with_unread(self, cid, data) -> None:
        """A read-ahead consumer's cancel: keeps what its client holds, returns what its
        node held back as never delivered, and the rest as after any cancel."""
        kept = self._held(cid, data)
        consumer = self.machine.consumers.get(cid)
        rest = sorted(set(consumer.checked_out) - set(kept)) if consumer else []
        unread = data.draw(st.lists(st.sampled_from(rest), unique=True)) if rest else []
        self.apply(make_cancel_unread(cid, kept, unread))

    @rule(owner=st.sampled_from(["o1", "o2"]))
    def down(self, owner) -> None:
        self.apply(make_down(owner))

    @rule()
    def purge(self) -> None:
        self.apply(make_purge())

    @rule(data=st.data())
    def dead_letter_settle(self, data) -> None:
        held = sorted(self.machine.discards)
        chosen = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        self.apply(make_dead_letter_settle(chosen + data.draw(
            st.lists(st.integers(0, 30), max_size=1))))  # maybe unknown or already settled

    @rule(ms=st.sampled_from([1, 10, 40, 150, 400, DEAD_LETTER_RETRY_MS]))
    def tick(self, ms) -> None:
        self.now_ms += ms
        self.apply(make_tick())
        for head in self.machine.ready.heads():
            assert head.expiry_ms is None or head.expiry_ms >= self.now_ms, \
                "a tick left an expired message at the head"

    # -- invariants -----------------------------------------------------------------------------
    @invariant()
    def every_message_is_in_exactly_one_place(self) -> None:
        if not hasattr(self, "machine"):
            return
        places = [{m.raft_index for m in self.machine.ready}]
        ready_list = [m.raft_index for m in self.machine.ready]
        assert len(ready_list) == len(places[0]) == self.machine.ready.count
        # the listings read the ready bytes from this counter, not by a scan
        assert self.machine.ready.bytes == sum(m.size_bytes for m in self.machine.ready)
        for c in self.machine.consumers.values():
            held = [m.raft_index for m, _ in c.checked_out.values()]
            assert len(held) == len(set(held))
            places.append(set(held))
        places.append(set(self.machine.discards))
        places += list(self.gone.values())
        union: set[int] = set()
        for place in places:
            assert not (union & place), f"a message in two places: {union & place}"
            union |= place
        assert union == self.accepted, (self.accepted - union, union - self.accepted)

    @invariant()
    def read_ahead_is_within_what_is_checked_out(self) -> None:
        if not hasattr(self, "machine"):
            return
        machine = self.machine
        ahead = machine.messages_read_ahead()
        assert 0 <= ahead <= machine.messages_checked_out()
        assert 0 <= machine.bytes_read_ahead() <= sum(
            m.size_bytes for c in machine.consumers.values() for m, _ in c.checked_out.values())

    @invariant()
    def delivery_counts_only_grow(self) -> None:
        if not hasattr(self, "machine"):
            return
        live = list(self.machine.ready) + [m for c in self.machine.consumers.values()
                                           for m, _ in c.checked_out.values()]
        for m in live:
            assert m.delivery_count >= self.delivery_counts.get(m.raft_index, 0)
            assert m.acquired_count >= m.delivery_count or m.delivery_count == 0 or \
                m.acquired_count > 0
            self.delivery_counts[m.raft_index] = m.delivery_count

    @invariant()
    def release_cursor_never_passes_a_live_message(self) -> None:
        if not hasattr(self, "machine"):
            return
        live = self.machine.live_indexes()
        assert self.cursor <= (live[0] if live else self.index + 1)

    @invariant()
    def consumers_are_consistent(self) -> None:
        if not hasattr(self, "machine"):
            return
        machine = self.machine
        active = [c for c in machine.consumers.values() if c.status in (UP, QUIESCING)]
        if self.config.get("single_active_consumer"):
            assert len(active) <= 1
            assert machine.active == (active[0].id if active else None)
        for c in machine.consumers.values():
            assert c.status != CANCELLED or c.checked_out  # a cancelled one goes once empty
        # nothing ready while a consumer could take it (after expiry at the head)
        if machine.ready.count and any(c.has_credit() for c in machine.consumers.values()):
            assert machine.config.single_active_consumer and machine._pick() is None

    def teardown(self) -> None:
        if not hasattr(self, "machine"):
            return
        wire_log = [(meta, _pack(command)) for meta, command in self.log]
        # a replica replaying the whole log from msgpack agrees on everything
        whole = QuorumMachine(self.config)
        for (meta, command), expected in zip(wire_log, self.results, strict=True):
            assert _pack(list(whole.apply(meta, command))) == expected
        assert whole.snapshot() == self.snapshots[-1]
        # snapshot after any prefix + replay of the rest == replay of the whole log
        for cut in range(0, len(wire_log) + 1, max(1, len(wire_log) // 8)):
            replica = QuorumMachine.from_snapshot(_pack(self.snapshots[cut]))
            assert replica.snapshot() == _pack(self.snapshots[cut])
            for (meta, command), expected in zip(wire_log[cut:], self.results[cut:],
                                                 strict=True):
                assert _pack(list(replica.apply(meta, command))) == expected
            assert replica.snapshot() == self.snapshots[-1]


QuorumQueueLog.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_quorum_queue_log = QuorumQueueLog.TestCase
