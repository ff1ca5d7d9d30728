"""Real AMQP clients for the replicated-queue fault tests, and the ledger they write to.

Theory of operation. Every publisher names its messages `<publisher>.<seq>` (the AMQP
`message_id`) and derives the body from that name, so a consumer can tell which message it
got and whether the body arrived intact. The `Ledger` is the single record of the run, kept
with one lock because every client runs in a thread of its own:

- `attempt`: a publish of a message was started (a re-publish is a second attempt);
- `confirm`: the broker acked an attempt (basic.ack in confirm mode), through which node;
- `receive`: a consumer got a delivery (queue, redelivered flag, node, intact body).

The checks a test makes are questions to the ledger: confirmed but never received
(`missing`), delivered from the wrong queue or damaged (`misdelivered`), delivered twice
without the redelivered flag although it was published once (`unflagged_redeliveries`).

Publishers (pika, one confirm at a time; aio-pika, a window of unconfirmed publishes) are
given an ordered list of nodes. On any failure (connection lost, channel closed, nack, a
confirm that does not come within `CONFIRM_TIMEOUT_S`) a publisher drops its connection,
moves to the next node in its list and publishes again everything that was not confirmed:
the broker owes nothing for those, so duplicates are the client's price, as with any AMQP
client. Consumers ack manually (one by one or several at once with `multiple`); one that is
told to `reconnect` moves to the next node on a lost connection and subscribes again,
otherwise it records the error and ends (what a consumer on a killed node does).
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import aio_pika
import pika
import pika.exceptions
from pamqp import commands as amqp_commands

from tests.support.node import Node

CONFIRM_TIMEOUT_S = 15.0  # beyond the broker's own 10 s commit timeout (then it nacks)
CONNECT_TIMEOUT_S = 5.0
HEARTBEAT_S = 2  # a stopped (SIGSTOP) node is noticed by the client within ~7 s
RETRY_S = 0.2  # between two connection attempts, so a dead node is not hammered
POLL_S = 0.05  # how long a pika consumer waits for input before flushing its acks
JOIN_S = 30.0


def make_body(message_id: str) -> bytes:
    """The body of a message, derived from its id: 64 B to 2 KiB, checkable on receipt."""
    digest = hashlib.sha256(message_id.encode()).digest()
    size = 64 + int.from_bytes(digest[:2], "big") % 1984
    return (message_id.encode() + b"|" + digest * (size // len(digest) + 1))[:size]


@dataclass
class Confirm:
    queue: str
    node: str  # the node whose connection confirmed it
    attempt_t: float  # when the confirmed attempt was started (time.monotonic)
    t: float


@dataclass
class Receipt:
    queue: str
    redelivered: bool
    node: str
    t: float
    intact: bool


@dataclass
class Ledger:
    queue_of: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, list[float]] = field(default_factory=dict)
    confirmed: dict[str, Confirm] = field(default_factory=dict)
    receipts: dict[str, list[Receipt]] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)  # deliveries without a known message id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new(self, message_id: str, queue: str) -> None:
        with self.lock:
            self.queue_of[message_id] = queue

    def attempt(self, message_id: str) -> float:
        t = time.monotonic()
        with self.lock:
            self.attempts.setdefault(message_id, []).append(t)
        return t

    def confirm(self, message_id: str, node: str, attempt_t: float) -> None:
        with self.lock:
            self.confirmed.setdefault(
                message_id, Confirm(self.queue_of[message_id], node, attempt_t, time.monotonic()))

    def receive(self, message_id: str | None, queue: str, redelivered: bool, node: str,
                body: bytes) -> None:
        with self.lock:
            if message_id is None or message_id not in self.queue_of:
                self.strays.append(f"{queue}: {body[:40]!r}")
                return
            self.receipts.setdefault(message_id, []).append(
                Receipt(queue, redelivered, node, time.monotonic(),
                        body == make_body(message_id)))

    # -- questions ------------------------------------------------------------------------
    def confirmed_count(self, since: float = 0.0, publisher: str | None = None) -> int:
        """Confirms of messages first attempted after `since` (by one publisher, or any)."""
        with self.lock:
            return sum(1 for mid in self.confirmed
                       if self.attempts[mid][0] > since
                       and (publisher is None or mid.rpartition(".")[0] == publisher))

    def missing(self) -> list[str]:
        with self.lock:
            return sorted((mid for mid in self.confirmed if mid not in self.receipts),
                          key=_order)

    def misdelivered(self) -> list[str]:
        """Deliveries from a queue the message was not published to, or with a damaged body."""
        with self.lock:
            return [f"{mid} from {r.queue} on {r.node}{'' if r.intact else ' (body damaged)'}"
                    for mid, rs in self.receipts.items() for r in rs
                    if r.queue != self.queue_of[mid] or not r.intact]

    def unflagged_redeliveries(self) -> list[str]:
        """Messages published once but delivered more than once with redelivered=False."""
        with self.lock:
            return [mid for mid, rs in self.receipts.items()
                    if len(self.attempts.get(mid, ())) == 1
                    and sum(1 for r in rs if not r.redelivered) > 1]

    def first_receipt_of_later(self, since: float) -> float | None:
        """When the first message first attempted after `since` was received, if it was."""
        with self.lock:
            times = [rs[0].t for mid, rs in self.receipts.items()
                     if self.attempts[mid][0] > since]
        return min(times) if times else None

    def deliveries(self) -> int:
        with self.lock:
            return sum(len(rs) for rs in self.receipts.values())

    def wait_drained(self, stall_s: float = 10.0, timeout_s: float = 60.0) -> bool:
        """Wait until every confirmed message was received; give up when no delivery at all
        came for `stall_s` (nothing is on its way) or at the deadline. True if drained."""
        deadline = time.monotonic() + timeout_s
        seen, progress_t = -1, time.monotonic()
        while True:
            if not self.missing():
                return True
            now = time.monotonic()
            count = self.deliveries()
            if count != seen:
                seen, progress_t = count, now
            if now - progress_t > stall_s or now > deadline:
                return False
            time.sleep(0.1)

    def summary(self) -> str:
        with self.lock:
            redelivered = sum(1 for rs in self.receipts.values() for r in rs if r.redelivered)
            duplicates = sum(len(rs) - 1 for rs in self.receipts.values())
            republished = sum(1 for a in self.attempts.values() if len(a) > 1)
            return (f"{len(self.queue_of)} messages, {len(self.confirmed)} confirmed, "
                    f"{republished} republished, {len(self.receipts)} received "
                    f"({duplicates} duplicate deliveries, {redelivered} flagged redelivered)")


def stacks(threads: Sequence[threading.Thread]) -> str:
    """Where each live client thread is now: what a stuck client is waiting on."""
    frames = sys._current_frames()
    out = []
    for t in threads:
        frame = frames.get(t.ident or -1)
        if t.is_alive() and frame is not None:
            out.append(f"thread {t.name}:\n" + "".join(traceback.format_stack(frame)[-6:]))
    return "\n".join(out)


def _order(message_id: str) -> tuple[str, int]:
    name, _, seq = message_id.rpartition(".")
    return name, int(seq)


# -- publishers -------------------------------------------------------------------------------
class Publisher(threading.Thread):
    """The bookkeeping both publishers share: naming, queue choice, what must be re-sent."""

    def __init__(self, name: str, nodes: Sequence[Node], queues: Sequence[str], ledger: Ledger,
                 rate_per_s: float | None = None, limit: int | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.publisher = name
        self.limit = limit  # publish this many messages, then end once all are confirmed
        self.nodes = list(nodes)
        self.queues = list(queues)
        self.ledger = ledger
        self.rate_per_s = rate_per_s
        self.stopping = threading.Event()
        self.resend: deque[str] = deque()  # not confirmed on a connection that failed
        self.events: list[str] = []  # failures and moves, for the failure report
        self.connected: list[str] = []  # every node a connection was opened to, in order
        self._seq = 0
        self._next_t = time.monotonic()

    @property
    def done(self) -> bool:
        return self.stopping.is_set() or (
            self.limit is not None and self._seq >= self.limit and not self.resend)

    def pace(self) -> float:
        """Seconds until the next new message is due at `rate_per_s` (0: now). Pacing a load
        generator, not synchronisation: callers wait on it in ways a stop interrupts."""
        if not self.rate_per_s or self.resend:
            return 0.0
        return max(0.0, self._next_t - time.monotonic())

    def next_message(self) -> str | None:
        """The next message to publish: first what must be re-sent; None once stopping or
        when the limit is reached. Callers wait for `pace()` first."""
        if self.stopping.is_set():
            return None
        if self.resend:
            return self.resend.popleft()
        if self.limit is not None and self._seq >= self.limit:
            return None
        if self.rate_per_s:
            # a stall (a failover) does not turn into a burst afterwards: at most 1 s is owed
            self._next_t = max(self._next_t, time.monotonic() - 1.0) + 1.0 / self.rate_per_s
        self._seq += 1
        message_id = f"{self.publisher}.{self._seq}"
        self.ledger.new(message_id, self.queues[self._seq % len(self.queues)])
        return message_id

    def failed(self, message_ids: list[str], node: Node, why: object) -> None:
        # re-sent in publish order, ahead of anything new
        self.resend.extendleft(sorted(message_ids, key=_order, reverse=True))
        self.events.append(f"{time.monotonic():.3f} {node.name}: {why!r}")

    def node_at(self, i: int) -> Node:
        return self.nodes[i % len(self.nodes)]

    def stop(self) -> None:
        self.stopping.set()

    def finish(self, timeout_s: float = JOIN_S) -> None:
        self.stop()
        self.join(timeout_s)


def pika_params(node: Node, heartbeat_s: int = HEARTBEAT_S) -> pika.ConnectionParameters:
    """No retries of its own: moving to another node is the client's decision."""
    return pika.ConnectionParameters(
        host=node.host, port=node.port,
        credentials=pika.PlainCredentials(node.user, node.password),
        heartbeat=heartbeat_s, connection_attempts=1, socket_timeout=CONNECT_TIMEOUT_S,
        stack_timeout=CONNECT_TIMEOUT_S, blocked_connection_timeout=CONFIRM_TIMEOUT_S)


def _close_quietly(conn: pika.BlockingConnection | None) -> None:
    if conn is None or not conn.is_open:
        return
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - the connection is being abandoned either way
        pass


class PikaPublisher(Publisher):
    """pika's BlockingConnection in confirm mode: basic_publish returns once confirmed."""

    def run(self) -> None:
        i = 0
        while not self.done:
            node = self.node_at(i)
            conn = None
            current: str | None = None
            try:
                conn = pika.BlockingConnection(pika_params(node))
                self.connected.append(node.name)
                ch = conn.channel()
                ch.confirm_delivery()
                while not self.stopping.wait(self.pace()):
                    current = self.next_message()
                    if current is None:
                        break
                    attempt_t = self.ledger.attempt(current)
                    ch.basic_publish(
                        "", self.ledger.queue_of[current], make_body(current),
                        pika.BasicProperties(delivery_mode=2, message_id=current),
                        mandatory=True)
                    self.ledger.confirm(current, node.name, attempt_t)
                    current = None
            except (pika.exceptions.AMQPError, OSError) as e:
                self.failed([current] if current else [], node, e)
                i += 1  # nacked, closed or lost: the next node
                self.stopping.wait(RETRY_S)
            finally:
                _close_quietly(conn)


class AioPikaPublisher(Publisher):
    """aio-pika with publisher confirms and up to `window` publishes awaiting their confirm."""

    def __init__(self, *args, window: int = 16, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.window = window

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self.events.append(f"{time.monotonic():.3f} crashed: {e!r}")
            raise

    async def _main(self) -> None:
        i = 0
        while not self.done:
            node = self.node_at(i)
            conn = None
            try:
                conn = await asyncio.wait_for(
                    aio_pika.connect(node.url() + f"?heartbeat={HEARTBEAT_S}",
                                     timeout=CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S * 2)
                self.connected.append(node.name)
                ch = await conn.channel(publisher_confirms=True, on_return_raises=False)
                if await self._pump(ch, node):
                    return
            except Exception as e:  # noqa: BLE001 - any failure: move to the next node
                self.events.append(f"{time.monotonic():.3f} {node.name}: {e!r}")
            finally:
                if conn is not None:
                    try:
                        await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT_S)
                    except Exception:  # noqa: BLE001 - abandoned either way
                        pass
            i += 1
            await asyncio.sleep(RETRY_S)

    async def _publish(self, ch: aio_pika.abc.AbstractChannel, message_id: str) -> bool:
        result = await asyncio.wait_for(ch.default_exchange.publish(
            aio_pika.Message(make_body(message_id), message_id=message_id,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=self.ledger.queue_of[message_id], mandatory=True), CONFIRM_TIMEOUT_S)
        return isinstance(result, amqp_commands.Basic.Ack)  # a return is no confirm

    async def _pump(self, ch: aio_pika.abc.AbstractChannel, node: Node) -> bool:
        """Publish until stopped (True) or until something fails (False, all unconfirmed
        messages queued to be sent again)."""
        inflight: dict[asyncio.Task, tuple[str, float]] = {}
        try:
            while not self.stopping.is_set():
                exhausted = False
                while len(inflight) < self.window and not self.pace():
                    message_id = self.next_message()
                    if message_id is None:
                        exhausted = True
                        break
                    attempt_t = self.ledger.attempt(message_id)
                    task = asyncio.ensure_future(self._publish(ch, message_id))
                    inflight[task] = (message_id, attempt_t)
                if not inflight:
                    if exhausted:
                        return True
                    await asyncio.sleep(self.pace())
                    continue
                done, _ = await asyncio.wait(inflight, timeout=min(0.5, self.pace() or 0.5),
                                             return_when=asyncio.FIRST_COMPLETED)
                failed: list[str] = []
                why: object = None
                for task in done:
                    message_id, attempt_t = inflight.pop(task)
                    # aiormq cancels the confirmations of a connection it closes
                    error = "cancelled" if task.cancelled() else task.exception()
                    if error is None and task.result():
                        self.ledger.confirm(message_id, node.name, attempt_t)
                    else:
                        failed.append(message_id)
                        why = error or "returned or nacked"
                if failed:
                    self.failed(failed + [m for m, _ in inflight.values()], node, why)
                    return False
            return True  # stopped: what is still unconfirmed is owed nothing
        finally:
            for task in inflight:
                task.cancel()
            if inflight:  # bounded: a publish stuck on a dead socket is left behind
                await asyncio.wait(inflight, timeout=CONNECT_TIMEOUT_S)


# -- consumers --------------------------------------------------------------------------------
class PikaConsumer(threading.Thread):
    """Consumes every queue in `queues` (a channel each) with manual acks: a multiple ack
    after `ack_every` deliveries, and whatever is left after each poll."""

    def __init__(self, name: str, nodes: Sequence[Node], queues: Sequence[str], ledger: Ledger,
                 prefetch: int = 50, ack_every: int = 1, reconnect: bool = False) -> None:
        super().__init__(name=name, daemon=True)
        self.consumer = name
        self.nodes = list(nodes)
        self.queues = list(queues)
        self.ledger = ledger
        self.prefetch = prefetch
        self.ack_every = ack_every
        self.reconnect = reconnect
        self.stopping = threading.Event()
        self.subscribed = threading.Event()  # set once every queue has its consumer
        self.errors: list[str] = []
        self.connected: list[str] = []
        self.subscribed_at_end = False  # every channel open and still consuming at stop
        self.received = 0

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            node = self.nodes[i % len(self.nodes)]
            conn = None
            try:
                conn = pika.BlockingConnection(pika_params(node))
                self.connected.append(node.name)
                self._consume(conn, node)
                return
            except (pika.exceptions.AMQPError, OSError) as e:
                self.errors.append(f"{time.monotonic():.3f} {node.name}: {e!r}")
                if not self.reconnect:
                    return
                i += 1
                self.stopping.wait(RETRY_S)
            finally:
                _close_quietly(conn)

    def _consume(self, conn: pika.BlockingConnection, node: Node) -> None:
        pending: dict[int, list[int]] = {}  # channel number -> [last tag, count] not acked

        def on_message(queue: str, ch, method, properties, body: bytes) -> None:
            self.received += 1
            self.ledger.receive(properties.message_id, queue, bool(method.redelivered),
                                node.name, body)
            mark = pending.setdefault(ch.channel_number, [0, 0])
            mark[0], mark[1] = method.delivery_tag, mark[1] + 1
            if mark[1] >= self.ack_every:
                flush(ch)

        def flush(ch) -> None:
            mark = pending.get(ch.channel_number)
            if mark and mark[1]:
                ch.basic_ack(mark[0], multiple=mark[1] > 1)
                mark[1] = 0

        channels = []
        for queue in self.queues:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=self.prefetch)
            tag = ch.basic_consume(
                queue, lambda c, m, p, b, q=queue: on_message(q, c, m, p, b))
            channels.append((ch, tag))
        self.subscribed.set()
        while not self.stopping.is_set():
            conn.process_data_events(time_limit=POLL_S)
            for ch, _ in channels:
                flush(ch)
        self.subscribed_at_end = all(ch.is_open and tag in ch.consumer_tags
                                     for ch, tag in channels)

    def finish(self, timeout_s: float = JOIN_S) -> None:
        self.stopping.set()
        self.join(timeout_s)
