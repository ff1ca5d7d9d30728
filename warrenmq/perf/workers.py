"""Producer and consumer bodies; each runs in its own OS process (see `runner`).

A worker connects, declares nothing (the scenario did), reports ready on a barrier,
waits for the shared start time and then works until the end of the window. Counts are
sampled at the end of the warm-up and at the end of the window, so rates cover exactly
`duration_s` of steady state. In count mode (`messages` set) a worker instead stops after
that many messages: a producer once they are sent (and confirmed) or at the window's end
if that comes first, a consumer once it has received and acknowledged them (draining a
queue). Clocks are CLOCK_MONOTONIC, shared by all processes of the machine, so a
timestamp written by a producer can be read by a consumer.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from . import wire
from .client import Connection

_stamp = struct.Struct(">Q")
BATCH = 64


@dataclass
class Window:
    """Times (time.monotonic()) shared by every worker of one run."""

    start: float
    warmup_end: float
    end: float


@dataclass
class ProducerSpec:
    uri: str
    exchange: str
    routing_key: str
    size_bytes: int = 1024
    persistent: bool = False
    rate: float = 0.0  # msg/s for this producer; 0 = as fast as the broker takes them
    messages: int = 0  # stop after this many (count mode) instead of at the window end
    confirm_window: int = 0  # outstanding confirms allowed; 0 = no publisher confirms
    stamp: bool = False  # write a send timestamp in the first 8 body bytes


@dataclass
class ConsumerSpec:
    uri: str
    queues: list[str] = field(default_factory=list)
    prefetch: int = 100
    multi_ack_every: int = 10  # 1 = ack every message; N = one multiple ack per N
    no_ack: bool = False
    latency: bool = False
    messages: int = 0  # count mode: stop once this many are received and acked (one queue)
    stall_s: float = 60.0  # count mode: give up when nothing arrives for this long


class _Sampler:
    """Sample a counter and this process's CPU time at the window's boundaries."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.at_warmup: tuple[int, float, float] | None = None
        self.at_end: tuple[int, float, float] | None = None

    def sample(self, now: float, count: int) -> None:
        if self.at_warmup is None and now >= self.window.warmup_end:
            self.at_warmup = (count, time.process_time(), now)
        if self.at_end is None and now >= self.window.end:
            self.at_end = (count, time.process_time(), now)

    def result(self, count: int) -> dict[str, Any]:
        """Count and CPU share between the two samples (or up to now, in count mode)."""
        start = self.at_warmup or (0, 0.0, self.window.warmup_end)
        end = self.at_end or (count, time.process_time(), time.monotonic())
        span = end[2] - start[2]
        return {
            "window_count": end[0] - start[0],
            "window_s": span,
            "cpu_pct": round(100.0 * (end[1] - start[1]) / span, 1) if span > 0 else None,
        }


async def _sleep_until(deadline: float) -> None:
    # Event-loop timers may fire up to a millisecond early (uvloop rounds to ms).
    while (delay := deadline - time.monotonic()) > 0:
        await asyncio.sleep(delay + 0.0005)


async def _wait_until(waiting: Any, deadline: float) -> None:
    """Await, but not past the window's end: a broker that blocks its publishers (memory
    alarm, credit flow) must not keep a timed run from ending."""
    try:
        await asyncio.wait_for(waiting, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        pass


async def produce(spec: ProducerSpec, window_of: Any) -> dict[str, Any]:
    conn = await Connection.open(spec.uri, name="warren-perf producer")
    try:
        ch = await conn.channel()
        outstanding: collections.deque[tuple[int, int]] = collections.deque()
        state = {"confirmed": 0, "nacked": 0}
        confirm_lat_us: list[int] = []
        room = asyncio.Event()
        window: Window | None = None
        if spec.confirm_window:
            await ch.confirm_select()

            def on_confirm(tag: int, multiple: bool, ack: bool) -> None:
                now_ns = time.monotonic_ns()
                record = window is not None and (
                    window.warmup_end * 1e9 <= now_ns < window.end * 1e9)
                key = "confirmed" if ack else "nacked"
                if multiple:
                    while outstanding and outstanding[0][0] <= tag:
                        _, sent_ns = outstanding.popleft()
                        state[key] += 1
                        if record:
                            confirm_lat_us.append((now_ns - sent_ns) // 1000)
                else:
                    for i, (seq, sent_ns) in enumerate(outstanding):
                        if seq == tag:
                            del outstanding[i]
                            state[key] += 1
                            if record:
                                confirm_lat_us.append((now_ns - sent_ns) // 1000)
                            break
                room.set()

            ch.on_confirm = on_confirm

        template = wire.PublishTemplate(ch.number, spec.exchange, spec.routing_key,
                                        spec.size_bytes, spec.persistent, conn.frame_max)
        padding = b"\x00" * max(0, spec.size_bytes - 8)
        fixed = None if spec.stamp else template.message(b"\x00" * spec.size_bytes)
        window = await window_of()
        sampler = _Sampler(window)
        confirm_sampler = _Sampler(window)
        await _sleep_until(window.start)
        started = time.monotonic()
        sent = 0
        send = conn.send
        while True:
            now = time.monotonic()
            sampler.sample(now, sent)
            confirm_sampler.sample(now, state["confirmed"])
            if spec.messages:
                if sent >= spec.messages or now >= window.end:
                    break
            elif now >= window.end:
                break
            n = BATCH if not spec.messages else min(BATCH, spec.messages - sent)
            if spec.rate:
                due = int((now - started) * spec.rate) - sent
                if due <= 0:
                    await asyncio.sleep(min(0.001, 1.0 / spec.rate))
                    continue
                n = min(n, due)
            if spec.confirm_window:
                n = min(n, spec.confirm_window - len(outstanding))
                if n <= 0:
                    room.clear()
                    await _wait_until(room.wait(), window.end)
                    continue
                now_ns = time.monotonic_ns()
                for i in range(1, n + 1):
                    outstanding.append((sent + i, now_ns))
            if fixed is not None:
                for _ in range(n):
                    send(fixed)
            else:
                for _ in range(n):
                    send(template.message(_stamp.pack(time.monotonic_ns()) + padding))
            sent += n
            if conn.writable:
                await asyncio.sleep(0)
            else:
                await _wait_until(conn.wait_writable(), window.end)
        finished = time.monotonic()
        if spec.confirm_window:
            deadline = time.monotonic() + 30.0
            while outstanding and time.monotonic() < deadline:
                room.clear()
                try:
                    await asyncio.wait_for(room.wait(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
            finished = time.monotonic()
        result = {"role": "producer", "sent": sent, **sampler.result(sent),
                  "elapsed_s": finished - started}
        if spec.confirm_window:
            result.update(confirmed=state["confirmed"], nacked=state["nacked"],
                          unconfirmed=len(outstanding),
                          confirmed_window=confirm_sampler.result(state["confirmed"])[
                              "window_count"],
                          confirm_latency_us=confirm_lat_us)
        return result
    finally:
        await conn.close()


async def consume(spec: ConsumerSpec, window_of: Any) -> dict[str, Any]:
    if spec.messages:
        return await _consume_count(spec, window_of)
    conns: list[Connection] = []
    try:
        received = 0
        latencies_us: list[int] = []
        window_box: list[Window] = []
        for queue in spec.queues:
            conn = await Connection.open(spec.uri, name="warren-perf consumer")
            conns.append(conn)
            ch = await conn.channel()
            await ch.basic_qos(spec.prefetch)
            await ch.basic_consume(queue, _make_handler(spec, ch, latencies_us, window_box),
                                   no_ack=spec.no_ack, want_body=spec.latency)
        window: Window = await window_of()
        window_box.append(window)
        sampler = _Sampler(window)
        await _sleep_until(window.warmup_end)
        sampler.sample(time.monotonic(), _received(conns))
        await _sleep_until(window.end)
        received = _received(conns)
        sampler.sample(time.monotonic(), received)
        for conn in conns:
            if conn.error:
                raise conn.error
        return {"role": "consumer", "received": received, **sampler.result(received),
                "queues": len(spec.queues), "latency_us": latencies_us}
    finally:
        for conn in conns:
            await conn.close()


async def _consume_count(spec: ConsumerSpec, window_of: Any) -> dict[str, Any]:
    """Drain: receive `spec.messages` from one queue, acking as usual, then ack the rest."""
    conn = await Connection.open(spec.uri, name="warren-perf drain")
    try:
        ch = await conn.channel()
        await ch.basic_qos(spec.prefetch)
        done = asyncio.Event()
        state = {"received": 0, "last_ns": 0}
        every = max(1, min(spec.multi_ack_every, spec.prefetch or spec.multi_ack_every))
        last_acked = 0
        target = spec.messages

        def on_deliver(delivery_tag: int, body: bytes) -> None:
            nonlocal last_acked
            state["received"] += 1
            if not spec.no_ack and (state["received"] >= target
                                    or delivery_tag - last_acked >= every):
                ch.ack(delivery_tag, every > 1)
                last_acked = delivery_tag
            if state["received"] >= target:
                state["last_ns"] = time.monotonic_ns()
                done.set()

        window: Window = await window_of()
        await _sleep_until(window.start)
        cpu_start, started = time.process_time(), time.monotonic()
        await ch.basic_consume(spec.queues[0], on_deliver, no_ack=spec.no_ack)
        seen = -1
        # A deadline on progress, not on the whole drain: a deep queue may take minutes.
        while not done.is_set():
            if conn.error:
                raise conn.error
            if state["received"] == seen:
                raise TimeoutError(f"drain stalled: nothing for {spec.stall_s:g} s after "
                                   f"{seen} of {target} messages")
            seen = state["received"]
            try:
                await asyncio.wait_for(done.wait(), spec.stall_s)
            except TimeoutError:
                continue
        elapsed = state["last_ns"] / 1e9 - started
        cpu_pct = round(100.0 * (time.process_time() - cpu_start) / elapsed, 1) if elapsed else None
        return {"role": "consumer", "received": state["received"], "window_count":
                state["received"], "window_s": elapsed, "elapsed_s": elapsed,
                "cpu_pct": cpu_pct, "queues": 1, "latency_us": []}
    finally:
        await conn.close()


def _received(conns: list[Connection]) -> int:
    return sum(getattr(ch, "received", 0) for c in conns for ch in c.channels.values())


def _make_handler(spec: ConsumerSpec, ch: Any, latencies_us: list[int],
                  window_box: list[Window]) -> Any:
    ch.received = 0
    # A multiple ack every N deliveries stalls if N exceeds the prefetch window.
    every = max(1, min(spec.multi_ack_every, spec.prefetch or spec.multi_ack_every))
    last_acked = [0]
    no_ack = spec.no_ack

    def on_deliver(delivery_tag: int, body: bytes) -> None:
        ch.received += 1
        if not no_ack and delivery_tag - last_acked[0] >= every:
            ch.ack(delivery_tag, every > 1)
            last_acked[0] = delivery_tag
        if spec.latency and len(body) >= 8 and window_box:
            now_ns = time.monotonic_ns()
            window = window_box[0]
            if window.warmup_end * 1e9 <= now_ns < window.end * 1e9:
                latencies_us.append((now_ns - _stamp.unpack_from(body, 0)[0]) // 1000)

    return on_deliver
