"""One channel's client session with one quorum queue (rabbit_fifo_client's role), pure.

It turns what the channel does (publish, consume, qos, ack / nack / reject by delivery tag,
cancel, close) into machine commands, each paired with a correlation the shell hands back
with the command's reply once it is applied (`handle_applied`). It keeps every command not
yet applied, in the order sent, and gives them all back for the new leader after a leader
change (`leader_changed`): publishes carry the publisher's sequence number, so the machine
drops the copies that did get in, and the other commands are idempotent (settling a msg_id
twice, re-registering a consumer, cancelling twice).

A publish is confirmed when its enqueue is applied, i.e. committed on a majority; a publish
the queue refused (reject-publish) is nacked. Deliveries get the channel's delivery tags; a
delivery whose msg_id the session has already seen (re-sent by a new leader) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .commands import (
    Command,
    MessageRef,
    Reply,
    make_cancel,
    make_checkout,
    make_credit,
    make_discard,
    make_down,
    make_enqueue,
    make_return,
    make_settle,
)

Correlation = tuple[str, int]  # ("enqueue", seq) or ("op", n)
Action = tuple[Any, ...]


class UnknownDeliveryTag(ValueError):
    """An ack, nack or reject for a tag this session never gave or already settled (the
    channel answers 406 PRECONDITION_FAILED)."""


class PublisherStateLost(RuntimeError):
    """The queue no longer knows this publisher's sequence (its owner was reported down):
    the pending publishes cannot be confirmed; the channel must be closed."""


class DeliveryTags:
    """The channel's delivery tag counter, shared by the sessions of every queue it uses."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


@dataclass(slots=True)
class _ConsumerView:
    consumer_tag: str
    consumer_id: str
    last_msg_id: int = -1  # msg_ids grow by one per delivery: anything at or below is a copy
    cancelling: bool = False


@dataclass(slots=True)
class Delivery:
    delivery_tag: int
    consumer_tag: str
    ref: MessageRef
    redelivered: bool
    delivery_count: int


class QuorumSession:
    def __init__(self, owner: str, tags: DeliveryTags | None = None) -> None:
        self.owner = owner  # the channel's unique name: consumer owner and publisher id
        self.tags = tags or DeliveryTags()
        self.next_seq = 1
        self.next_op = 1
        # every command sent and not yet applied, in the order sent
        self.pending: dict[Correlation, Command] = {}
        self.publish_correlations: dict[int, Any] = {}  # seq -> the channel's correlation
        self.consumers: dict[str, _ConsumerView] = {}  # by consumer_id
        self.by_tag: dict[str, str] = {}  # consumer_tag -> consumer_id
        self.unacked: dict[int, tuple[str, int]] = {}  # delivery_tag -> (consumer_id, msg_id)
        self._resent_from = 0  # the gap already re-sent for (see handle_applied)

    # -- the channel's calls -> commands ---------------------------------------------------------
    def publish(self, size_bytes: int, priority: int = 0, ttl_ms: int | None = None,
                body: object = None, correlation: Any = None) -> tuple[Correlation, Command]:
        seq = self.next_seq
        command = make_enqueue(self.owner, seq, size_bytes, priority, ttl_ms, body)
        self.next_seq += 1
        self.publish_correlations[seq] = correlation
        return self._track(("enqueue", seq), command)

    def consume(self, consumer_tag: str, prefetch: int = 0, priority: int = 0,
                exclusive: bool = False, timeout_ms: int | None = None
                ) -> tuple[Correlation, Command]:
        if consumer_tag in self.by_tag:
            raise ValueError(f"consumer tag {consumer_tag!r} is in use on this channel")
        consumer_id = f"{self.owner}/{consumer_tag}"
        self.consumers[consumer_id] = _ConsumerView(consumer_tag, consumer_id)
        self.by_tag[consumer_tag] = consumer_id
        return self._op(make_checkout(consumer_id, self.owner, prefetch, priority, exclusive,
                                      timeout_ms))

    def qos(self, consumer_tag: str, prefetch: int) -> tuple[Correlation, Command]:
        return self._op(make_credit(self._consumer_id(consumer_tag), prefetch))

    def cancel(self, consumer_tag: str, requeue: bool = False) -> tuple[Correlation, Command]:
        """basic.cancel keeps the consumer's unacked messages on the channel (requeue False);
        they stay ackable until settled."""
        consumer_id = self._consumer_id(consumer_tag)
        self.consumers[consumer_id].cancelling = True
        return self._op(make_cancel(consumer_id, requeue))

    def ack(self, delivery_tag: int, multiple: bool = False) -> list[tuple[Correlation, Command]]:
        return self._settle_tags(self._take(delivery_tag, multiple), make_settle)

    def nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True
             ) -> list[tuple[Correlation, Command]]:
        return self._settle_tags(self._take(delivery_tag, multiple),
                                 make_return if requeue else make_discard)

    def reject(self, delivery_tag: int, requeue: bool = True) -> list[tuple[Correlation, Command]]:
        return self.nack(delivery_tag, False, requeue)

    def close(self) -> tuple[Correlation, Command]:
        """The channel closes: everything it holds goes back to the queue."""
        self.unacked.clear()
        return self._op(make_down(self.owner))

    # -- what comes back ------------------------------------------------------------------------
    def handle_applied(self, correlation: Correlation, reply: Reply) -> list[Action]:
        """The reply to one of our commands, now applied. Actions for the channel:
        ("confirm", [correlation]) / ("nack", [correlation]) for publishes,
        ("resend", [(correlation, command)]) to propose again, ("consume_ok", consumer_tag),
        ("consume_failed", consumer_tag, reply_code, text), ("cancel_ok", consumer_tag)."""
        command = self.pending.get(correlation)
        if command is None:
            return []  # a reply to a copy whose first reply already came
        if correlation[0] == "enqueue":
            return self._enqueue_applied(correlation, reply)
        del self.pending[correlation]
        op = command[0]
        if op == "checkout":
            view = self.consumers.get(command[1])
            if view is None:
                return []
            if reply[0] == "error":
                self._forget(view)
                return [("consume_failed", view.consumer_tag, reply[1], reply[2])]
            return [("consume_ok", view.consumer_tag)]
        if op == "cancel":
            view = self.consumers.get(command[1])
            if view is None:
                return []
            self._forget(view)
            return [("cancel_ok", view.consumer_tag)]
        return []

    def handle_deliver(self, consumer_id: str,
                       batch: list[tuple[int, MessageRef, bool, int]]) -> list[Delivery]:
        view = self.consumers.get(consumer_id)
        if view is None:
            return []
        out: list[Delivery] = []
        for msg_id, ref, redelivered, delivery_count in batch:
            if msg_id <= view.last_msg_id:
                continue  # already delivered on this channel (re-sent by a new leader)
            view.last_msg_id = msg_id
            tag = self.tags.next()
            self.unacked[tag] = (consumer_id, msg_id)
            out.append(Delivery(tag, view.consumer_tag, MessageRef(*ref), redelivered,
                                delivery_count))
        return out

    def handle_consumer_cancelled(self, consumer_id: str) -> str | None:
        """The queue ended the consumer (ack timeout): its deliveries went back to the queue,
        so their tags are gone. Returns the consumer tag to notify (basic.cancel)."""
        view = self.consumers.get(consumer_id)
        if view is None:
            return None
        for tag in [t for t, (cid, _) in self.unacked.items() if cid == consumer_id]:
            del self.unacked[tag]
        self._forget(view)
        return view.consumer_tag

    def leader_changed(self) -> list[tuple[Correlation, Command]]:
        """Everything not yet applied, in the order first sent, for the new leader."""
        self._resent_from = 0
        return list(self.pending.items())

    @property
    def unconfirmed(self) -> list[int]:
        """Sequence numbers of publishes not yet applied."""
        return [c[1] for c in self.pending if c[0] == "enqueue"]

    # -- helpers --------------------------------------------------------------------------------
    def _enqueue_applied(self, correlation: Correlation, reply: Reply) -> list[Action]:
        seq = correlation[1]
        word = reply[0]
        if word in ("enqueued", "duplicate", "rejected"):
            del self.pending[correlation]
            action = "nack" if word == "rejected" else "confirm"
            return [(action, [self.publish_correlations.pop(seq)])]
        if word == "out_of_sequence":
            # an earlier publish got lost on the way to a leader: the machine wants `expected`
            # first. Re-send it and everything after (still pending, in order), once per gap:
            # the later copies in flight answer the same and must not set off a storm.
            expected = reply[1]
            pending_seqs = [c[1] for c in self.pending if c[0] == "enqueue"]
            if expected < min(pending_seqs):
                raise PublisherStateLost(
                    f"queue expects publish {expected}, the oldest unconfirmed is "
                    f"{min(pending_seqs)}")
            if expected == self._resent_from:
                return []
            self._resent_from = expected
            return [("resend", [(c, cmd) for c, cmd in self.pending.items()
                                if c[0] == "enqueue" and c[1] >= expected])]
        raise ValueError(f"unexpected reply to a publish: {reply!r}")

    def _track(self, correlation: Correlation, command: Command) -> tuple[Correlation, Command]:
        self.pending[correlation] = command
        return correlation, command

    def _op(self, command: Command) -> tuple[Correlation, Command]:
        correlation = ("op", self.next_op)
        self.next_op += 1
        return self._track(correlation, command)

    def _consumer_id(self, consumer_tag: str) -> str:
        try:
            return self.by_tag[consumer_tag]
        except KeyError:
            raise ValueError(f"no consumer {consumer_tag!r} on this channel") from None

    def _forget(self, view: _ConsumerView) -> None:
        self.consumers.pop(view.consumer_id, None)
        if self.by_tag.get(view.consumer_tag) == view.consumer_id:
            del self.by_tag[view.consumer_tag]

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[str, int]]:
        if multiple:
            tags = [t for t in self.unacked if delivery_tag == 0 or t <= delivery_tag]
        else:
            if delivery_tag not in self.unacked:
                raise UnknownDeliveryTag(f"unknown delivery tag {delivery_tag}")
            tags = [delivery_tag]
        return [self.unacked.pop(t) for t in tags]

    def _settle_tags(self, taken: list[tuple[str, int]], make: Any
                     ) -> list[tuple[Correlation, Command]]:
        by_consumer: dict[str, list[int]] = {}
        for consumer_id, msg_id in taken:
            by_consumer.setdefault(consumer_id, []).append(msg_id)
        return [self._op(make(cid, sorted(ids))) for cid, ids in by_consumer.items()]
