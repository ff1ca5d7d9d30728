"""The idle-connections scenario: memory a broker spends per open, idle connection.

N connections, each with one open channel, are opened (a bounded number of handshakes in
flight), held open for `hold_s`, then closed. With the broker's pid, its VmRSS before and
at the end of the hold gives the increase per connection; without it, only that the
connections opened (and how fast).
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from . import stats
from .client import Connection
from .scenarios import Options

HANDSHAKES_IN_FLIGHT = 50


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _open_one(uri: str, gate: asyncio.Semaphore, conns: list[Connection]) -> None:
    async with gate:
        conn = await Connection.open(uri, name="warren-perf idle", timeout_s=30.0)
        conns.append(conn)
        await conn.channel()


async def _settled_rss(pid: int, timeout_s: float = 5.0) -> int | None:
    """The broker's RSS once it stops moving (within 1% over 0.5 s), or at the deadline.

    A broker may still be returning memory from earlier work; a moving baseline would
    be charged to (or credited against) the connections.
    """
    deadline = time.monotonic() + timeout_s
    last = stats.rss_kib(pid)
    while last is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = stats.rss_kib(pid)
        if now is None or abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


async def _run(opts: Options) -> dict[str, Any]:
    pid = opts.broker_pid
    rss_before = await _settled_rss(pid) if pid else None
    conns: list[Connection] = []
    gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
    t0 = time.monotonic()
    try:
        results = await asyncio.gather(
            *(_open_one(opts.uri, gate, conns) for _ in range(opts.connections)),
            return_exceptions=True)
        open_s = time.monotonic() - t0
        errors = [r for r in results if isinstance(r, BaseException)]
        # Hold them open; the broker's memory settles while they sit idle.
        await asyncio.sleep(opts.hold_s)
        alive = sum(1 for c in conns if c.error is None)
        out: dict[str, Any] = {
            "connections_requested": opts.connections,
            "connections_opened": len(conns) - sum(1 for c in conns if c.channels == {}),
            "connections_alive_after_hold": alive,
            "open_errors": len(errors),
            "first_error": repr(errors[0]) if errors else None,
            "open_s": round(open_s, 3),
            "open_rate": round(len(conns) / open_s, 1) if open_s else None,
        }
        if pid:
            rss_held = stats.rss_kib(pid)
            out["broker_rss_before_kib"] = rss_before
            out["broker_rss_held_kib"] = rss_held
            if rss_before is not None and rss_held is not None and alive:
                out["rss_per_connection_kib"] = round((rss_held - rss_before) / alive, 1)
        return out
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


def scenario_idle_connections(opts: Options) -> dict[str, Any]:
    _raise_fd_limit(opts.connections + 64)
    return asyncio.run(_run(opts))
