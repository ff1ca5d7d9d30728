"""The failover probe of bench/ha.py: a steady publisher and a consumer on two nodes.

Both run in one thread with its own event loop (`warrenmq/perf`'s client), so the thread that
kills a node keeps its own clock. Every body carries a sequence number and its publish time
(CLOCK_MONOTONIC ns, shared by every process of the machine). The killing thread sets
`kill_at_ns` just before the signal; the consumer notes when the first delivery stamped at or
after it arrives, which is never a message prefetched or in flight before the kill. When
told to stop, the publisher waits for its last confirms; then the consumer must receive
every confirmed sequence number (what it never receives was lost). Both clients reconnect,
and the consumer consumes again after a Basic.Cancel, until stopped: what the broker does to
its clients during a failover is counted, not fatal.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pamqp import commands

from warrenmq.perf import wire
from warrenmq.perf.client import AmqpError, Connection

SIZE_BYTES = 1024
PREFETCH = 100
SETTLE_TIMEOUT_S = 30.0  # the publisher's last confirms, then the consumer's catching up
BODY = struct.Struct(">QQ")  # sequence number, publish time (CLOCK_MONOTONIC ns)


@dataclass
class FailoverProbe:
    """One failover's clients (see the module docstring); `start`, then `stop`."""

    publish_uri: str
    consume_uri: str
    queue: str
    rate: float
    kill_at_ns: int = 0
    first_after_kill_ns: int = 0
    sent: int = 0
    nacked: int = 0
    unsettled: int = 0  # outstanding when a publisher connection died or gave up
    deliveries: int = 0
    duplicates: int = 0
    publisher_reconnects: int = 0
    consumer_restarts: int = 0
    confirmed: set[int] = field(default_factory=set)
    received: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    nack_after_s: list[float] = field(default_factory=list)  # when nacks came, from the kill
    steady: threading.Event = field(default_factory=threading.Event)
    after_kill: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True, name="failover probe").start()

    def stop(self, timeout_s: float) -> bool:
        self._stop.set()
        return self.done.wait(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported with the repetition
            self._error("probe", exc)
        finally:
            self.done.set()

    def _error(self, where: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        if len(self.errors) < 20:
            self.errors.append(f"{where}: {text}")

    def _settle(self, seq: int, ack: bool) -> None:
        if ack:
            self.confirmed.add(seq)
            return
        self.nacked += 1
        if self.kill_at_ns:
            self.nack_after_s.append((time.monotonic_ns() - self.kill_at_ns) / 1e9)

    async def _main(self) -> None:
        consumer = asyncio.create_task(self._consume())
        await self._publish()
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while self.confirmed - self.received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)

    async def _publish(self) -> None:
        padding = bytes(SIZE_BYTES - BODY.size)
        while not self._stop.is_set():
            try:
                conn = await Connection.open(self.publish_uri, name="bench ha publisher")
            except (OSError, TimeoutError, AmqpError) as exc:
                self._error("publisher connect", exc)
                await asyncio.sleep(0.1)
                continue
            outstanding: collections.deque[tuple[int, int]] = collections.deque()  # tag, seq
            try:
                ch = await conn.channel()
                await ch.confirm_select()

                def on_confirm(tag: int, multiple: bool, ack: bool,
                               outstanding: collections.deque = outstanding) -> None:
                    if multiple:
                        while outstanding and outstanding[0][0] <= tag:
                            self._settle(outstanding.popleft()[1], ack)
                        return
                    for i, (t, seq) in enumerate(outstanding):
                        if t == tag:
                            del outstanding[i]
                            self._settle(seq, ack)
                            return

                ch.on_confirm = on_confirm
                template = wire.PublishTemplate(ch.number, "", self.queue, SIZE_BYTES, True,
                                                conn.frame_max)
                tag = 0
                # the schedule restarts at each connection: no burst to make up for a gap
                base_t, base_sent = time.monotonic(), self.sent
                while not self._stop.is_set():
                    if conn.error:
                        raise conn.error
                    if ch.closed:
                        raise ch.closed
                    due = int((time.monotonic() - base_t) * self.rate) - (self.sent - base_sent)
                    for _ in range(min(due, 100)):
                        self.sent += 1
                        tag += 1
                        outstanding.append((tag, self.sent))
                        conn.send(template.message(
                            BODY.pack(self.sent, time.monotonic_ns()) + padding))
                    await asyncio.sleep(0.001)
                deadline = time.monotonic() + SETTLE_TIMEOUT_S
                while outstanding and time.monotonic() < deadline:
                    if conn.error:
                        raise conn.error
                    if ch.closed:
                        raise ch.closed
                    await asyncio.sleep(0.01)
                if outstanding:
                    self._error("publisher", f"{len(outstanding)} publishes never confirmed "
                                             f"within {SETTLE_TIMEOUT_S:g} s")
                self.unsettled += len(outstanding)
                return
            except (AmqpError, ConnectionError, OSError, TimeoutError) as exc:
                self._error("publisher", exc)
                self.unsettled += len(outstanding)
                self.publisher_reconnects += 1
            finally:
                await conn.close()

    async def _consume(self) -> None:
        while True:  # until cancelled by _main
            try:
                conn = await Connection.open(self.consume_uri, name="bench ha consumer")
            except (OSError, TimeoutError, AmqpError) as exc:
                self._error("consumer connect", exc)
                await asyncio.sleep(0.1)
                continue
            try:
                ch = await conn.channel()
                await ch.basic_qos(PREFETCH)
                cancelled = asyncio.Event()
                handle_method = ch._on_method

                def on_method(method: Any, handle: Callable = handle_method,
                              cancelled: asyncio.Event = cancelled) -> None:
                    if isinstance(method, commands.Basic.Cancel):
                        cancelled.set()  # the client ignores it; this consumer consumes again
                    handle(method)

                ch._on_method = on_method  # type: ignore[method-assign]

                def on_deliver(delivery_tag: int, body: bytes, ch: Any = ch) -> None:
                    now = time.monotonic_ns()
                    seq, stamp = BODY.unpack_from(body)
                    self.deliveries += 1
                    if seq in self.received:
                        self.duplicates += 1
                    self.received.add(seq)
                    if not self.steady.is_set() and len(self.received) >= max(100, self.rate):
                        self.steady.set()
                    if self.kill_at_ns and stamp >= self.kill_at_ns and not self.first_after_kill_ns:
                        self.first_after_kill_ns = now
                        self.after_kill.set()
                    ch.ack(delivery_tag)

                await ch.basic_consume(self.queue, on_deliver, want_body=True)
                while not (cancelled.is_set() or conn.error or ch.closed):
                    await asyncio.sleep(0.005)
                self._error("consumer", conn.error or ch.closed or "cancelled by the broker")
                self.consumer_restarts += 1
            except (AmqpError, ConnectionError, OSError, TimeoutError) as exc:
                self._error("consumer", exc)
                self.consumer_restarts += 1
                await asyncio.sleep(0.05)
            finally:
                await conn.close()


