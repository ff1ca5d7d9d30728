"""The quorum queue as a pure state machine (rabbit_fifo's idea): `apply(meta, command) ->
(reply, effects)`, applied in log order on every replica.

Theory of operation. A message is a reference to the log entry that carries its body (`Msg`:
Raft index, size, priority, expiry, counters); the machine never holds a body, so a snapshot
is small and the log before the oldest live message can go (`release_cursor`). Every accepted
message is, at any moment, in exactly one place: `ready`, or checked out by one consumer
under a per-consumer `msg_id`, or (at-least-once dead-lettering) held as a dead letter; it
leaves the machine by settle, discard, dead-lettering (rejected, expired, maxlen,
delivery_limit) or purge.

Order. `ready` decides which message goes next, for a delivery, a basic.get, an expiry at
the head or a drop-head alike. A quorum queue orders as RabbitMQ 4.0 to 4.2 do (state.py's
FairShareQueue): returned messages first, in the order they came back; then priorities
above 4 ("high") and the rest ("normal") at 2:1, the older first when it is normal's turn.
Where a returned message goes follows rabbit_fifo too: what the client requeues (nack,
reject, recover; also after its consumer was cancelled, and a basic.get's message) to a
queue without a delivery limit is re-appended behind every other message, as normal
priority (RabbitMQ re-appends it to the log); any other return (a delivery limit is set, or
the consumer's channel or node is gone, or it timed out) goes first. A return says which it
is (make_return's `asked`); the older form, which does not, counts a live consumer's as
asked and a cancelled one's as not. A classic queue under an ha-*
policy orders as a classic queue: strict levels up to its x-max-priority, a returned
message back in its place by index.

Dead letters. Under the default at-most-once strategy a dead message leaves at once and the
`dead_letter` effect asks the leader to republish it, once. Under at-least-once (RabbitMQ
3.10's `dead-letter-strategy`) it is held in `discards`, still live (its body is kept, the
release cursor stays behind it), until a `dead_letter_settle` command says every target
queue confirmed its copy. The `dead_letter_pending` effect names new dead letters, and a
tick names every held one again once DEAD_LETTER_RETRY_MS passed since they were last named:
so a new leader forwards what the old one had not finished, and a dead letter whose
exchange or queue is missing gets through once it exists. Held dead letters count neither as
ready nor towards the length limit (as in RabbitMQ 3.10).

Queue expiry (x-expires). `last_active_ms` is the time of the last checkout, cancel, down or
dequeue (empty or not; publishing and declaring do not count, as in RabbitMQ 3.10); a tick
finding the queue without consumers for longer than `expires_ms` emits `queue_expired` and
re-arms, so a deletion lost with a leader is asked for again one period later.

Rules for this module: no clock (time is `meta.ts_ms`, chosen by the leader), no randomness,
no I/O, no iteration over unordered containers where the order can reach an output. An
invalid command never raises: it gets an error reply, so every replica stays in step.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any

from ...amqp.constants import ACCESS_REFUSED, PRECONDITION_FAILED
from .commands import Command, Effect, MessageRef, Meta, Reply
from .state import (
    CANCELLED,
    QUIESCING,
    REJECTED_REMEMBERED,
    UP,
    WAITING,
    Consumer,
    Enqueuer,
    FairShareQueue,
    Msg,
    QueueConfig,
    make_ready,
)

# 2: a quorum queue's ready messages are dumped as returns + two priority FIFOs + counter;
# version 1 snapshots (per-level lists) still load
SNAPSHOT_VERSION = 2
SNAPSHOT_VERSIONS_READ = (1, 2)
AT_LEAST_ONCE = "at-least-once"
# How often held dead letters are named again. RabbitMQ's dead-letter worker retries every
# 180 s by default; here only messages not already in flight are forwarded again, so a
# shorter period costs one tick entry per period, and a target that comes back is served soon.
DEAD_LETTER_RETRY_MS = 2_000


class _Out:
    """What one command produces; dead letters are gathered per reason and emitted once."""

    __slots__ = ("effects", "dead", "held")

    def __init__(self) -> None:
        self.effects: list[Effect] = []
        self.dead: dict[str, list[MessageRef]] = {}
        self.held: dict[str, list[MessageRef]] = {}

    def dead_letter(self, reason: str, msg: Msg) -> None:
        self.dead.setdefault(reason, []).append(msg.ref())

    def hold(self, reason: str, msg: Msg) -> None:
        self.held.setdefault(reason, []).append(msg.ref())


class QuorumMachine:
    def __init__(self, config: QueueConfig | dict[str, Any] | None = None) -> None:
        if not isinstance(config, QueueConfig):
            config = QueueConfig.from_dict(config or {})
        self.config = config
        self.ready = make_ready(config)
        self.consumers: dict[str, Consumer] = {}
        # competing consumers: one round-robin ring per x-priority, highest priority first
        self.rings: dict[int, deque[str]] = {}
        self.ring_order: list[int] = []
        self.active: str | None = None  # single active consumer mode: who it is
        self.enqueuers: dict[str, Enqueuer] = {}
        self.next_order = 0
        self.last_index = 0
        self.release_cursor = 0  # the last value emitted; never goes backwards
        # Raft indexes of live messages: a min-heap with lazy deletion (`_gone`), so the
        # lowest live index costs O(log n) per message over its life, not a scan per command
        self._live: list[int] = []
        self._gone: set[int] = set()
        # at-least-once dead letters not yet confirmed by their targets, in the order they
        # died: raft index -> (message, reason)
        self.discards: dict[int, tuple[Msg, str]] = {}
        self.discards_named_ms = 0  # when the held dead letters were last named
        self.last_active_ms: int | None = None  # for x-expires; None: not known yet

    # -- the single entry point ---------------------------------------------------------------
    def apply(self, meta: Meta, command: Command) -> tuple[Reply, list[Effect]]:
        out = _Out()
        handler, arity = _HANDLERS.get(command[0], (None, ())) if command else (None, ())
        if handler is None or len(command) not in arity:
            # a command from a newer version, or not built by the make_* helpers
            reply: Reply = ("error", "unknown_command", repr(command)[:200])
        else:
            reply = handler(self, meta, command, out)
        self.last_index = meta.raft_index
        for reason, refs in out.dead.items():
            out.effects.append(("dead_letter", reason, refs))
        if out.held:
            self.discards_named_ms = meta.ts_ms
            for reason, refs in out.held.items():
                out.effects.append(("dead_letter_pending", reason, refs))
        cursor = self._lowest_live()
        if cursor > self.release_cursor:
            self.release_cursor = cursor
            out.effects.append(("release_cursor", cursor))
        return reply, out.effects

    # -- commands -----------------------------------------------------------------------------
    def _enqueue(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        publisher, seq, size, priority, ttl_ms = cmd[1], cmd[2], cmd[3], cmd[4], cmd[5]
        if publisher is not None:
            enq = self.enqueuers.get(publisher)
            if enq is None:
                enq = self.enqueuers[publisher] = Enqueuer()
            if seq < enq.next_seq:
                # a re-sent command whose first copy was applied: answer as the first did
                return ("rejected", seq) if seq in enq.rejected else ("duplicate", seq)
            if seq > enq.next_seq:
                return ("out_of_sequence", enq.next_seq)
            enq.next_seq = seq + 1
        config = self.config
        self._expire_heads(meta.ts_ms, out)
        if config.overflow != "drop-head" and self._over_limit(1, size):
            if config.overflow == "reject-publish-dlx":
                out.dead_letter("maxlen", Msg(meta.raft_index, size, priority, None))
            if publisher is not None:
                rejected = self.enqueuers[publisher].rejected
                rejected.append(seq)
                del rejected[:-REJECTED_REMEMBERED]
            return ("rejected", seq)
        ttls = [t for t in (ttl_ms, config.message_ttl_ms) if t is not None]
        expiry = meta.ts_ms + min(ttls) if ttls else None
        msg = Msg(meta.raft_index, size, priority, expiry)
        self.ready.add(msg)
        heapq.heappush(self._live, meta.raft_index)
        self._checkout(meta, out)
        self._drop_over_limit(out)
        return ("enqueued", seq)

    def _checkout_cmd(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        cid, owner, prefetch, priority, exclusive, timeout_ms = cmd[1:7]
        window = cmd[7] if len(cmd) > 7 else 0
        consumer = self.consumers.get(cid)
        if consumer is None:
            others = [c for c in self.consumers.values() if c.status != CANCELLED]
            if others and (exclusive or any(c.exclusive for c in others)):
                return ("error", ACCESS_REFUSED, "in exclusive use")
        self.last_active_ms = meta.ts_ms
        if consumer is None:
            consumer = Consumer(cid, owner, prefetch, priority, bool(exclusive), timeout_ms,
                                self.next_order)
            consumer.window = window
            self.next_order += 1
            self.consumers[cid] = consumer
            self._join(consumer)
        else:
            # a re-sent or repeated checkout updates the consumer in place
            if consumer.priority != priority and consumer.status == UP \
                    and not self.config.single_active_consumer:
                self._leave_ring(consumer)
                consumer.priority = priority
                self._enter_ring(consumer)
            consumer.priority = priority
            consumer.prefetch, consumer.timeout_ms = prefetch, timeout_ms
            consumer.window = window
            if consumer.status == CANCELLED:
                self._join(consumer)
        self._activate_next(out)
        self._checkout(meta, out)
        return ("ok", {"active": consumer.status in (UP, QUIESCING),
                       "next_msg_id": consumer.next_msg_id,
                       "checked_out": len(consumer.checked_out)})

    def _settle(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        return self._release(meta, cmd, out, lambda msg: self._gone.add(msg.raft_index))

    def _return(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        consumer = self.consumers.get(cmd[1])
        asked = cmd[3] if len(cmd) > 3 else None
        if (consumer is not None
                and (consumer.status != CANCELLED if asked is None else asked)
                and self.config.delivery_limit is None
                and isinstance(self.ready, FairShareQueue)):
            # what the client requeues (nack, reject, recover; in the older form, what a live
            # consumer requeues) to a quorum queue without a delivery limit goes behind
            # everything else, in msg_id order (see Order)
            ids = sorted(i for i in cmd[2] if i in consumer.checked_out)
            return self._release(meta, (cmd[0], cmd[1], ids), out,
                                 lambda msg: self._requeue(msg, out, meta.raft_index))
        return self._release(meta, cmd, out, lambda msg: self._requeue(msg, out))

    def _discard(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        return self._release(meta, cmd, out, lambda msg: self._dead("rejected", msg, out))

    def _release(self, meta: Meta, cmd: Command, out: _Out,
                 each: Callable[[Any], None]) -> Reply:
        """settle / return / discard: the consumer's checked-out messages named in the
        command leave it, each handed to `each`; unknown ids are ignored."""
        consumer = self.consumers.get(cmd[1])
        if consumer is None:
            return ("ok", 0)
        done = 0
        for msg_id in cmd[2]:
            entry = consumer.checked_out.pop(msg_id, None)
            if entry is not None:
                each(entry[0])
                done += 1
        return self._after_release(meta, consumer, done, out)

    def _credit(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        consumer = self.consumers.get(cmd[1])
        if consumer is None:
            return ("not_found",)
        consumer.prefetch = cmd[2]
        self._checkout(meta, out)
        return ("ok",)

    def _cancel(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        consumer, requeue = self.consumers.get(cmd[1]), cmd[2]
        if consumer is None or consumer.status == CANCELLED and requeue is False:
            return ("not_found",)
        held = len(consumer.checked_out)
        if requeue is True:
            self._return_all(consumer, out)
        elif isinstance(requeue, list):
            keep = set(requeue)
            unread = set(cmd[3]) if len(cmd) > 3 else ()
            for msg_id in [m for m in consumer.checked_out if m not in keep]:
                msg = consumer.checked_out.pop(msg_id)[0]
                if msg_id in unread:  # held back on the consumer's node: never delivered
                    msg.acquired_count -= 1
                    self.ready.requeue(msg)
                else:
                    self._requeue(msg, out)
        self._leave(consumer)
        self.last_active_ms = meta.ts_ms
        self._activate_next(out)
        self._checkout(meta, out)
        return ("ok", held)

    def _down(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        owner = cmd[1]
        for consumer in [c for c in self.consumers.values() if c.owner == owner]:
            self._return_all(consumer, out)
            self._leave(consumer)
            self.last_active_ms = meta.ts_ms
        # the owner's channel is closed for good: it will never re-send a publish
        self.enqueuers.pop(owner, None)
        self._activate_next(out)
        self._checkout(meta, out)
        return ("ok",)

    def _dequeue(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        """basic.get: the head message, checked out to the getter's own consumer record (never
        in a delivery ring: status cancelled), to settle, return or discard like any other."""
        cid, owner = cmd[1], cmd[2]
        now = meta.ts_ms
        self.last_active_ms = now  # a basic.get uses the queue, even when it finds nothing
        self._expire_heads(now, out)
        while True:
            msg = self.ready.pop()
            if msg is None:
                return ("empty",)
            if msg.expiry_ms is not None and msg.expiry_ms < now:
                self._dead("expired", msg, out)
                continue
            break
        consumer = self.consumers.get(cid)
        if consumer is None:
            consumer = Consumer(cid, owner, 0, 0, False, None, self.next_order, CANCELLED)
            self.next_order += 1
            self.consumers[cid] = consumer
        msg_id = consumer.next_msg_id
        consumer.next_msg_id += 1
        consumer.checked_out[msg_id] = (msg, now)
        redelivered = msg.acquired_count > 0
        msg.acquired_count += 1
        return ("dequeued", msg_id, msg.ref(), redelivered, msg.delivery_count,
                self.messages_ready())

    def _purge(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        purged = self.ready.clear()
        for msg in purged:
            self._gone.add(msg.raft_index)
        return ("purged", len(purged))

    def _tick(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        now = meta.ts_ms
        for consumer in list(self.consumers.values()):
            timeout = consumer.timeout_ms
            if timeout is None:
                timeout = self.config.consumer_timeout_ms
            if timeout is None or not consumer.checked_out:
                continue
            oldest = min(ts for _, ts in consumer.checked_out.values())
            if now - oldest > timeout:
                # the late consumer is cancelled and its deliveries requeued; its channel
                # lives on (RabbitMQ 4.3's behaviour, not 3.x's channel close)
                self._return_all(consumer, out)
                self._leave(consumer)
                self.last_active_ms = now
                out.effects.append(("consumer_cancelled", consumer.id, "timeout"))
        self._activate_next(out)
        self._checkout(meta, out)
        expires = self.config.expires_ms
        if expires is not None:
            if self.last_active_ms is None:
                self.last_active_ms = now  # the first tick starts the clock
            elif not self.consumer_count() and now > self.last_active_ms + expires:
                out.effects.append(("queue_expired",))
                self.last_active_ms = now
        if self.discards and now >= self.discards_named_ms + DEAD_LETTER_RETRY_MS:
            just_died = {ref.raft_index for refs in out.held.values() for ref in refs}
            for index, (msg, reason) in self.discards.items():
                if index not in just_died:
                    out.hold(reason, msg)
        return ("ok",)

    def _dead_letter_settle(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        done = 0
        for index in cmd[1]:
            if self.discards.pop(index, None) is not None:
                self._gone.add(index)
                done += 1
        return ("ok", done)

    def _update_config(self, meta: Meta, cmd: Command, out: _Out) -> Reply:
        try:
            config = QueueConfig.from_dict(cmd[1])
        except (TypeError, ValueError) as e:
            return ("error", PRECONDITION_FAILED, str(e))
        for fixed in ("queue_type", "max_priority", "single_active_consumer"):
            if getattr(config, fixed) != getattr(self.config, fixed):
                # declared once as queue arguments; no policy may change them
                return ("error", PRECONDITION_FAILED, f"{fixed} cannot change")
        if config.dead_letter_strategy != AT_LEAST_ONCE and self.discards:
            # no longer at-least-once: what is held is dead-lettered at most once, now
            for index, (msg, reason) in self.discards.items():
                out.dead_letter(reason, msg)
                self._gone.add(index)
            self.discards.clear()
        self.config = config
        self._checkout(meta, out)
        self._drop_over_limit(out)
        return ("ok",)

    # -- moving messages ------------------------------------------------------------------------
    def _checkout(self, meta: Meta, out: _Out) -> None:
        """Hand ready messages to consumers with credit: highest x-priority first, round-robin
        within a priority; expired messages met on the way are dead-lettered, never sent."""
        now = meta.ts_ms
        ready = self.ready
        self._expire_heads(now, out)
        deliveries: dict[str, list[tuple[int, MessageRef, bool, int]]] = {}
        while ready.count:
            consumer = self._pick()
            if consumer is None:
                break
            msg = ready.pop()
            assert msg is not None
            if msg.expiry_ms is not None and msg.expiry_ms < now:
                self._dead("expired", msg, out)
                continue
            msg_id = consumer.next_msg_id
            consumer.next_msg_id += 1
            consumer.checked_out[msg_id] = (msg, now)
            deliveries.setdefault(consumer.id, []).append(
                (msg_id, msg.ref(), msg.acquired_count > 0, msg.delivery_count))
            msg.acquired_count += 1
        for cid, batch in deliveries.items():
            out.effects.append(("deliver", cid, batch))

    def _pick(self) -> Consumer | None:
        if self.config.single_active_consumer:
            active = self.consumers.get(self.active) if self.active else None
            return active if active is not None and active.has_credit() else None
        for priority in self.ring_order:
            ring = self.rings[priority]
            for _ in range(len(ring)):
                consumer = self.consumers[ring[0]]
                ring.rotate(-1)  # whoever is looked at goes to the back: round-robin
                if consumer.has_credit():
                    return consumer
        return None

    def _requeue(self, msg: Msg, out: _Out, at_back: int | None = None) -> None:
        """A failed delivery comes back: before every ready message, or with `at_back` (the
        index of the command) behind them all."""
        msg.delivery_count += 1
        limit = self.config.delivery_limit
        if limit is not None and msg.delivery_count > limit:
            self._dead("delivery_limit", msg, out)
        elif at_back is not None and isinstance(self.ready, FairShareQueue):
            self.ready.append_back(msg, at_back)
        else:
            self.ready.requeue(msg)

    def _return_all(self, consumer: Consumer, out: _Out) -> None:
        for msg, _ in consumer.checked_out.values():
            self._requeue(msg, out)
        consumer.checked_out.clear()

    def _expire_heads(self, now: int, out: _Out) -> None:
        for msg in self.ready.take_expired(now):
            self._dead("expired", msg, out)

    def _over_limit(self, extra_count: int, extra_bytes: int) -> bool:
        max_length, max_bytes = self.config.max_length, self.config.max_length_bytes
        return ((max_length is not None and self.ready.count + extra_count > max_length)
                or (max_bytes is not None and self.ready.bytes + extra_bytes > max_bytes))

    def _drop_over_limit(self, out: _Out) -> None:
        if self.config.overflow != "drop-head":
            return
        while self.ready.count and self._over_limit(0, 0):
            msg = self.ready.pop()
            assert msg is not None
            self._dead("maxlen", msg, out)

    def _dead(self, reason: str, msg: Msg, out: _Out) -> None:
        """An accepted message dies: gone (at most once), or held until its dead-letter
        targets confirmed it (at least once)."""
        if self.config.dead_letter_strategy == AT_LEAST_ONCE:
            self.discards[msg.raft_index] = (msg, reason)
            out.hold(reason, msg)
        else:
            out.dead_letter(reason, msg)
            self._gone.add(msg.raft_index)

    def _after_release(self, meta: Meta, consumer: Consumer, done: int, out: _Out) -> Reply:
        if consumer.status == CANCELLED and not consumer.checked_out:
            del self.consumers[consumer.id]
        self._activate_next(out)
        self._checkout(meta, out)
        return ("ok", done)

    def _lowest_live(self) -> int:
        live, gone = self._live, self._gone
        while live and live[0] in gone:
            gone.remove(heapq.heappop(live))
        return live[0] if live else self.last_index + 1

    # -- consumers ------------------------------------------------------------------------------
    def _join(self, consumer: Consumer) -> None:
        if self.config.single_active_consumer:
            consumer.status = WAITING
        else:
            consumer.status = UP
            self._enter_ring(consumer)

    def _leave(self, consumer: Consumer) -> None:
        """Stop deliveries to a consumer; it goes at once unless it still holds messages."""
        if consumer.status in (UP, QUIESCING) and not self.config.single_active_consumer:
            self._leave_ring(consumer)
        if self.active == consumer.id:
            self.active = None
        consumer.status = CANCELLED
        if not consumer.checked_out:
            del self.consumers[consumer.id]

    def _enter_ring(self, consumer: Consumer) -> None:
        ring = self.rings.get(consumer.priority)
        if ring is None:
            ring = self.rings[consumer.priority] = deque()
            self.ring_order = sorted(self.rings, reverse=True)
        ring.append(consumer.id)

    def _leave_ring(self, consumer: Consumer) -> None:
        ring = self.rings[consumer.priority]
        ring.remove(consumer.id)
        if not ring:
            del self.rings[consumer.priority]
            self.ring_order = sorted(self.rings, reverse=True)

    def _activate_next(self, out: _Out) -> None:
        """Single active consumer: the highest priority waiting consumer (the elder among
        equals) takes over when there is no active one, or when it outranks the active one
        and that one has nothing checked out; until then the active one is quiescing (it
        finishes what it holds and gets nothing new), as rabbit_fifo does."""
        if not self.config.single_active_consumer:
            return
        best: Consumer | None = None
        for c in self.consumers.values():
            if c.status == WAITING and (best is None or c.priority > best.priority
                                        or c.priority == best.priority and c.order < best.order):
                best = c
        active = self.consumers.get(self.active) if self.active else None
        if active is None:
            if best is not None:
                self._promote(best, out)
        elif best is not None and best.priority > active.priority:
            if active.checked_out:
                active.status = QUIESCING
            else:
                active.status = WAITING
                out.effects.append(("consumer_active", active.id, False))
                self._promote(best, out)
        elif active.status == QUIESCING:
            active.status = UP

    def _promote(self, consumer: Consumer, out: _Out) -> None:
        consumer.status = UP
        self.active = consumer.id
        out.effects.append(("consumer_active", consumer.id, True))

    # -- queries --------------------------------------------------------------------------------
    def messages_ready(self) -> int:
        return self.ready.count

    def messages_checked_out(self) -> int:
        return sum(len(c.checked_out) for c in self.consumers.values())

    def messages_read_ahead(self) -> int:
        """Checked out beyond what their clients may hold (a consumer's `window`): waiting
        on the consumers' nodes, so ready as far as an operator is concerned."""
        return sum(len(c.checked_out) - c.window for c in self.consumers.values()
                   if c.window and len(c.checked_out) > c.window)

    def bytes_read_ahead(self) -> int:
        """The size of those: a consumer's latest checkouts beyond its window (deliveries
        are made in checkout order, so the ones held back are the last)."""
        total = 0
        for c in self.consumers.values():
            extra = len(c.checked_out) - c.window if c.window else 0
            if extra > 0:
                entries = reversed(c.checked_out.values())
                total += sum(next(entries)[0].size_bytes for _ in range(extra))
        return total

    def messages_total(self) -> int:
        return self.ready.count + self.messages_checked_out()

    def consumer_count(self) -> int:
        return sum(1 for c in self.consumers.values() if c.status != CANCELLED)

    def messages_dead_lettering(self) -> int:
        """At-least-once dead letters held until their targets confirm them."""
        return len(self.discards)

    def live_indexes(self) -> list[int]:
        """Raft indexes whose log entries hold a body the queue still needs."""
        held = [m.raft_index for c in self.consumers.values() for m, _ in c.checked_out.values()]
        return sorted([m.raft_index for m in self.ready] + held + list(self.discards))

    def next_timeout_ms(self) -> int | None:
        """When the leader should next propose a tick: the earliest head expiry or consumer
        ack deadline (None: no timer needed). A hint for the shell; `apply` never reads it."""
        times: list[int] = []
        for head in self.ready.heads():
            if head.expiry_ms is not None:
                times.append(head.expiry_ms + 1)
        for c in self.consumers.values():
            timeout = c.timeout_ms if c.timeout_ms is not None else self.config.consumer_timeout_ms
            if timeout is not None and c.checked_out:
                times.append(min(ts for _, ts in c.checked_out.values()) + timeout + 1)
        expires = self.config.expires_ms
        if expires is not None and not self.consumer_count():
            # not known yet: due at once, the first tick starts the clock
            times.append(0 if self.last_active_ms is None else self.last_active_ms + expires + 1)
        if self.discards:
            times.append(self.discards_named_ms + DEAD_LETTER_RETRY_MS)
        return min(times) if times else None

    # -- snapshots --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data (msgpack-able), without a single body."""
        return {
            "version": SNAPSHOT_VERSION,
            "config": self.config.to_dict(),
            "ready": self.ready.dump(),
            "consumers": [c.dump() for c in self.consumers.values()],
            "rings": [[p, list(self.rings[p])] for p in self.ring_order],
            "active": self.active,
            "enqueuers": [[p, e.dump()] for p, e in self.enqueuers.items()],
            "next_order": self.next_order,
            "last_index": self.last_index,
            "release_cursor": self.release_cursor,
            "discards": [[m.dump(), reason] for m, reason in self.discards.values()],
            "discards_named_ms": self.discards_named_ms,
            "last_active_ms": self.last_active_ms,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> QuorumMachine:
        if data.get("version") not in SNAPSHOT_VERSIONS_READ:
            raise ValueError(f"unknown quorum queue snapshot version {data.get('version')!r}")
        config = dict(data["config"])
        if "queue_type" not in config and config.get("max_priority") is not None:
            # a version 1 snapshot names no type, but only a classic queue had x-max-priority
            # (the replica fills in the type it was built with: see replica.py's restore)
            config["queue_type"] = "classic"
        machine = cls(QueueConfig.from_dict(config))
        machine.ready.load(data["ready"])
        machine.consumers = {c.id: c for c in map(Consumer.load, data["consumers"])}
        machine.rings = {p: deque(ids) for p, ids in data["rings"]}
        machine.ring_order = [p for p, _ in data["rings"]]
        machine.active = data["active"]
        machine.enqueuers = {p: Enqueuer.load(e) for p, e in data["enqueuers"]}
        machine.next_order = data["next_order"]
        machine.last_index = data["last_index"]
        machine.release_cursor = data["release_cursor"]
        # absent from snapshots taken before at-least-once dead-lettering and queue expiry
        for m, reason in data.get("discards", []):
            msg = Msg.load(m)
            machine.discards[msg.raft_index] = (msg, reason)
        machine.discards_named_ms = data.get("discards_named_ms", 0)
        machine.last_active_ms = data.get("last_active_ms")
        machine._live = machine.live_indexes()  # sorted, hence a heap
        return machine


# op -> (handler, number of items in the command, op included)
_HANDLERS: dict[Any, tuple[Any, tuple[int, ...]]] = {
    "enqueue": (QuorumMachine._enqueue, (7,)),
    "checkout": (QuorumMachine._checkout_cmd, (7, 8)),  # 8: with a window
    "settle": (QuorumMachine._settle, (3,)),
    "return": (QuorumMachine._return, (3, 4)),  # 4: who returns it
    "discard": (QuorumMachine._discard, (3,)),
    "credit": (QuorumMachine._credit, (3,)),
    "cancel": (QuorumMachine._cancel, (3, 4)),  # 4: with the unread msg_ids
    "down": (QuorumMachine._down, (2,)),
    "purge": (QuorumMachine._purge, (1,)),
    "dequeue": (QuorumMachine._dequeue, (3,)),
    "tick": (QuorumMachine._tick, (1,)),
    "update_config": (QuorumMachine._update_config, (2,)),
    "dead_letter_settle": (QuorumMachine._dead_letter_settle, (2,)),
}
