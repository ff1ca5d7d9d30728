"""The scenarios: what each one declares, which workers it runs and what it reports.

Every scenario declares uniquely named entities before the run and deletes them after,
even when the run fails; except a queue named with `--queue`, which is used as it is when
it exists, declared when it does not, and always left in place (to fill a queue with one
run and drain it with another, across a broker restart for instance). Rates are messages
per second over the measurement window (after the warm-up), summed over workers; in count
mode (`--messages`, `drain`) over the whole run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import stats
from .client import AmqpError, AmqpUri, Connection
from .runner import RunResult, run_workers
from .workers import ConsumerSpec, ProducerSpec

ADMIN_TIMEOUT_S = 60.0


@dataclass
class Options:
    uri: str = "amqp://guest:guest@127.0.0.1:5672/"
    duration_s: float = 10.0
    warmup_s: float = 2.0
    messages: int = 0  # publish/confirm: total messages (count mode) instead of a duration
    size_bytes: int = 1024
    rate: float = 0.0  # per producer, msg/s; 0 = unlimited (latency defaults to 1000)
    producers: int = 1
    consumers: int = 1
    confirm: int = 100  # outstanding-confirm window of the confirm scenario
    prefetch: int = 100
    multi_ack_every: int = 10
    persistent: bool = False  # delivery_mode 2, and a durable queue
    durable: bool = False  # a durable queue even for transient messages
    queue_type: str = "classic"  # classic | quorum
    queues: int = 10  # fanout: queues bound to the exchange, one consumer each
    consumer_procs: int = 2  # fanout: processes the consumers are spread over
    connections: int = 1000  # idle-connections
    hold_s: float = 5.0  # idle-connections: how long to hold them open
    broker_pid: int | None = None
    queue: str = ""  # use (and keep) this queue instead of a fresh one
    stall_s: float = 60.0  # drain: fail when nothing arrives for this long
    max_duration_s: float = 0.0  # publish/confirm --messages: stop early after this long


def unique(kind: str) -> str:
    return f"warren-perf-{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _queue_args(opts: Options) -> dict[str, Any]:
    return {"x-queue-type": opts.queue_type} if opts.queue_type != "classic" else {}


def _durable(opts: Options) -> bool:
    return opts.persistent or opts.durable or opts.queue_type == "quorum"


async def _admin(opts: Options, work: Callable[[Any], Any]) -> Any:
    conn = await Connection.open(opts.uri, name="warren-perf admin")
    try:
        ch = await conn.channel()
        return await asyncio.wait_for(work(ch), ADMIN_TIMEOUT_S)
    finally:
        await conn.close()


def admin(opts: Options, work: Callable[[Any], Any]) -> Any:
    return asyncio.run(_admin(opts, work))


def broker_info(opts: Options) -> dict[str, str]:
    async def info() -> dict[str, str]:
        conn = await Connection.open(opts.uri, name="warren-perf admin")
        props = conn.server_properties
        await conn.close()
        return {k: str(props.get(k, "")) for k in ("product", "version", "platform")}

    return asyncio.run(info())


def _rate(results: list[dict[str, Any]], key: str = "window_count") -> float:
    return round(sum(r[key] / r["window_s"] for r in results if r["window_s"] > 0), 1)


def _common(opts: Options, run: RunResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "client_cpu_pct": {
            "producers": [r.get("cpu_pct") for r in run.producers],
            "consumers": [r.get("cpu_pct") for r in run.consumers],
        },
    }
    if run.broker:
        out["broker_cpu_pct"] = run.broker.get("cpu_pct")
        out["broker_rss_peak_kib"] = run.broker.get("rss_peak_kib")
        if "rss_end_kib" in run.broker:
            out["broker_rss_end_kib"] = run.broker["rss_end_kib"]
    return out


def _producer(opts: Options, exchange: str, routing_key: str, **extra: Any) -> ProducerSpec:
    return ProducerSpec(uri=opts.uri, exchange=exchange, routing_key=routing_key,
                        size_bytes=opts.size_bytes, persistent=opts.persistent,
                        rate=opts.rate, **extra)


def _consumer(opts: Options, queues: list[str], **extra: Any) -> ConsumerSpec:
    return ConsumerSpec(uri=opts.uri, queues=queues, prefetch=opts.prefetch,
                        multi_ack_every=opts.multi_ack_every, **extra)


def _with_queue(opts: Options, body: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    if opts.queue:
        _use_named_queue(opts)
        return body(opts.queue)
    queue = unique("q")

    async def declare(ch: Any) -> None:
        await ch.queue_declare(queue, durable=_durable(opts), arguments=_queue_args(opts))

    async def delete(ch: Any) -> None:
        await ch.queue_delete(queue)

    admin(opts, declare)
    try:
        return body(queue)
    finally:
        admin(opts, delete)


def _use_named_queue(opts: Options, create: bool = True) -> int:
    """The depth of the `--queue` queue, declaring it first when it does not exist."""

    async def declare(ch: Any) -> int:
        ok = await ch.queue_declare(opts.queue, durable=_durable(opts),
                                    arguments=_queue_args(opts))
        return ok.message_count

    async def passive(ch: Any) -> int | None:
        try:
            ok = await ch.queue_declare(opts.queue, passive=True)
        except AmqpError as exc:
            if exc.reply_code == 404:  # NOT_FOUND: the queue does not exist yet
                return None
            raise
        return ok.message_count

    depth = admin(opts, passive)
    if depth is None and not create:
        raise ValueError(f"no queue {opts.queue!r} in vhost {AmqpUri.parse(opts.uri).vhost!r}")
    return admin(opts, declare) if depth is None else depth


def _depth(opts: Options, queue: str) -> int:
    async def depth(ch: Any) -> int:
        ok = await ch.queue_declare(queue, passive=True)
        return ok.message_count

    return admin(opts, depth)


def _publish_like(opts: Options, confirm_window: int) -> dict[str, Any]:
    if opts.messages < 0 or opts.max_duration_s < 0:
        raise ValueError("--messages and --max-duration must be >= 0")
    count_mode = opts.messages > 0

    def body(queue: str) -> dict[str, Any]:
        per_producer = [opts.messages // opts.producers
                        + (1 if i < opts.messages % opts.producers else 0)
                        for i in range(opts.producers)] if count_mode else [0] * opts.producers
        specs = [_producer(opts, "", queue, messages=n, confirm_window=confirm_window)
                 for n in per_producer]
        # Count mode: no warm-up, and a window that closes at the last message (or at
        # --max-duration, to time-box a fill that may take very long).
        run = run_workers(specs, [], 0.0 if count_mode else opts.warmup_s,
                          (opts.max_duration_s or 1e9) if count_mode else opts.duration_s,
                          opts.broker_pid, count_mode=count_mode)
        out = _common(opts, run)
        if count_mode:
            elapsed = max(r["elapsed_s"] for r in run.producers)
            sent = sum(r["sent"] for r in run.producers)
            out.update(messages=sent, elapsed_s=round(elapsed, 3),
                       publish_rate=round(sent / elapsed, 1) if elapsed else None)
        else:
            out["publish_rate"] = _rate(run.producers)
        if confirm_window:
            lat: list[int] = []
            for r in run.producers:
                lat.extend(r["confirm_latency_us"])
            out["confirmed"] = sum(r["confirmed"] for r in run.producers)
            out["nacked"] = sum(r["nacked"] for r in run.producers)
            out["unconfirmed"] = sum(r["unconfirmed"] for r in run.producers)
            if count_mode:
                elapsed = out["elapsed_s"]
                out["confirm_rate"] = round(out["confirmed"] / elapsed, 1) if elapsed else None
            else:
                out["confirm_rate"] = round(sum(
                    r["confirmed_window"] / r["window_s"] for r in run.producers), 1)
            out["confirm_latency_ms"] = stats.percentiles(lat)
        out["queue_depth_at_end"] = _depth(opts, queue)
        return out

    return _with_queue(opts, body)


def scenario_publish(opts: Options) -> dict[str, Any]:
    return _publish_like(opts, 0)


def scenario_confirm(opts: Options) -> dict[str, Any]:
    return _publish_like(opts, max(1, opts.confirm))


def _producer_consumer(opts: Options, latency: bool) -> dict[str, Any]:
    def body(queue: str) -> dict[str, Any]:
        producers = [_producer(opts, "", queue, stamp=latency) for _ in range(opts.producers)]
        consumers = [_consumer(opts, [queue], latency=latency) for _ in range(opts.consumers)]
        run = run_workers(producers, consumers, opts.warmup_s, opts.duration_s, opts.broker_pid)
        out = _common(opts, run)
        out["publish_rate"] = _rate(run.producers)
        out["consume_rate"] = _rate(run.consumers)
        if latency:
            samples = [x for r in run.consumers for x in r["latency_us"]]
            out["latency_ms"] = stats.percentiles(samples)
        return out

    return _with_queue(opts, body)


def scenario_throughput(opts: Options) -> dict[str, Any]:
    return _producer_consumer(opts, latency=False)


def scenario_latency(opts: Options) -> dict[str, Any]:
    if not opts.rate:
        opts.rate = 1000.0
    opts.size_bytes = max(opts.size_bytes, 8)
    return _producer_consumer(opts, latency=True)


def scenario_drain(opts: Options) -> dict[str, Any]:
    """One consumer empties the `--queue` queue (or takes `--messages` from it)."""
    if not opts.queue:
        raise ValueError("drain needs --queue NAME: the queue to empty")
    if opts.messages < 0 or opts.stall_s <= 0 or opts.prefetch < 0:
        raise ValueError("--messages and --prefetch must be >= 0, --stall > 0")
    depth = _use_named_queue(opts, create=False)
    wanted = min(opts.messages, depth) if opts.messages else depth
    if wanted == 0:
        raise ValueError(f"queue {opts.queue!r} is empty: nothing to drain")
    consumer = _consumer(opts, [opts.queue], messages=wanted, stall_s=opts.stall_s)
    run = run_workers([], [consumer], 0.0, 1e9, opts.broker_pid, count_mode=True)
    out = _common(opts, run)
    elapsed = run.consumers[0]["elapsed_s"]
    out.update(messages=run.consumers[0]["received"], elapsed_s=round(elapsed, 3),
               consume_rate=round(wanted / elapsed, 1) if elapsed > 0 else None,
               queue_depth_at_start=depth, queue_depth_at_end=_depth(opts, opts.queue))
    return out


def scenario_fanout(opts: Options) -> dict[str, Any]:
    exchange = unique("fanout")
    queues = [unique(f"fq{i}") for i in range(opts.queues)]

    async def declare(ch: Any) -> None:
        await ch.exchange_declare(exchange, "fanout", durable=_durable(opts))
        for q in queues:
            await ch.queue_declare(q, durable=_durable(opts), arguments=_queue_args(opts))
            await ch.queue_bind(q, exchange)

    async def delete(ch: Any) -> None:
        for q in queues:
            await ch.queue_delete(q)
        await ch.exchange_delete(exchange)

    admin(opts, declare)
    try:
        procs = max(1, min(opts.consumer_procs, len(queues)))
        groups = [queues[i::procs] for i in range(procs)]
        producers = [_producer(opts, exchange, "") for _ in range(opts.producers)]
        consumers = [_consumer(opts, group) for group in groups]
        run = run_workers(producers, consumers, opts.warmup_s, opts.duration_s, opts.broker_pid)
        out = _common(opts, run)
        out["publish_rate"] = _rate(run.producers)
        out["delivery_rate"] = _rate(run.consumers)
        return out
    finally:
        admin(opts, delete)


def describe(opts: Options) -> dict[str, Any]:
    params = asdict(opts)
    params["uri"] = AmqpUri.parse(opts.uri).redacted()
    return params
