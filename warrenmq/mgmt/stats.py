"""Rate sampling for the API, the console's charts and /metrics.

The broker keeps only cheap cumulative counters (a queue's published/delivered/acked, the
node's published count, a connection's bytes_in). Once a second the sampler reads them all,
turns the differences into per-second rates, and keeps a node-wide history for charts. A
queue or connection that disappears simply drops out of the next sample: the node totals
are sums of differences, so they never go backwards when objects go away.

Cost: one pass over the live queues and connections per second, nothing per message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.node import Node

SAMPLE_INTERVAL_S = 1.0
HISTORY_S = 600  # ten minutes of node-wide samples


@dataclass
class Totals:
    """Node-wide cumulative counters (message_stats) since the sampler started."""
    publish: int = 0
    deliver_get: int = 0
    ack: int = 0
    recv_oct: int = 0


@dataclass
class Sample:
    ts: float  # unix time, seconds
    publish_total: int  # the node's cumulative counters at ts
    deliver_get_total: int
    ack_total: int
    publish: float  # per second over the last interval
    deliver_get: float
    ack: float
    messages_ready: int
    messages_unacknowledged: int


@dataclass
class Rates:
    publish: float = 0.0
    deliver_get: float = 0.0
    ack: float = 0.0


@dataclass
class Sampler:
    get_node: Callable[[], Node | None]
    totals: Totals = field(default_factory=Totals)
    history: deque[Sample] = field(default_factory=lambda: deque(maxlen=HISTORY_S))
    queue_rates: dict[Any, Rates] = field(default_factory=dict)
    conn_rates: dict[str, float] = field(default_factory=dict)  # connection id -> recv B/s
    _node: Any = None
    _queue_prev: dict[Any, tuple[int, int, int]] = field(default_factory=dict)
    _conn_prev: dict[str, int] = field(default_factory=dict)
    _published_prev: int = 0
    _last: float = 0.0
    started_at: float = field(default_factory=time.time)

    def sample(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        node = self.get_node()
        if node is None:
            return
        if node is not self._node:  # the app restarted: a new node with fresh counters
            self._node = node
            self._queue_prev.clear()
            self._conn_prev.clear()
            self._published_prev = getattr(node, "msgs_published", 0)
            self._last = now
        dt = max(now - self._last, 1e-3)
        self._last = now
        d_deliver = d_ack = 0
        ready = unacked = 0
        prev = self._queue_prev
        current: dict[Any, tuple[int, int, int]] = {}
        rates: dict[Any, Rates] = {}
        for per_vhost in node.queues.values():
            for q in per_vhost.values():
                counters = (q.published, q.delivered, q.acked)
                current[q] = counters
                before = prev.get(q)
                ready += len(q.ready)
                unacked += q.unacked
                if before is None:
                    continue
                dp, dd, da = (counters[0] - before[0], counters[1] - before[1],
                              counters[2] - before[2])
                d_deliver += dd
                d_ack += da
                if dp or dd or da:
                    rates[q] = Rates(dp / dt, dd / dt, da / dt)
        self._queue_prev = current
        self.queue_rates = rates
        published = getattr(node, "msgs_published", 0)
        d_publish = max(published - self._published_prev, 0)
        self._published_prev = published
        conn_now: dict[str, int] = {}
        conn_rates: dict[str, float] = {}
        d_recv = 0
        for conn_id, conn in node.connections.items():
            b = conn.bytes_in
            conn_now[conn_id] = b
            before_b = self._conn_prev.get(conn_id)
            if before_b is not None and b > before_b:
                d_recv += b - before_b
                conn_rates[conn_id] = (b - before_b) / dt
        self._conn_prev = conn_now
        self.conn_rates = conn_rates
        t = self.totals
        t.publish += d_publish
        t.deliver_get += d_deliver
        t.ack += d_ack
        t.recv_oct += d_recv
        self.history.append(Sample(now, t.publish, t.deliver_get, t.ack, d_publish / dt,
                                   d_deliver / dt, d_ack / dt, ready, unacked))

    def latest(self) -> Sample | None:
        return self.history[-1] if self.history else None

    def since(self, seconds: float) -> list[Sample]:
        if not self.history:
            return []
        cutoff = self.history[-1].ts - seconds
        return [s for s in self.history if s.ts >= cutoff]
