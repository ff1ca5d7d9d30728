"""Prometheus metrics with the names of RabbitMQ's rabbitmq_prometheus plugin, so the
published Grafana dashboards (RabbitMQ-Overview and friends) work unchanged.

`/metrics` aggregates per node, as RabbitMQ does by default; `/metrics/per-object` adds one
series per queue (labels vhost and queue). Counters come from the sampler's running totals
plus what happened since its last sample, so they only ever go up.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .. import __version__
from .router import Context

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.append(f"# HELP {name} {help_text}")
        for labels, value in samples:
            if labels:
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{rendered}}} {_num(value)}")
            else:
                self.lines.append(f"{name} {_num(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _num(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(ctx: Context, per_object: bool) -> str:
    rt = ctx.rt
    node = ctx.node
    cfg = node.config
    sampler = ctx.sampler
    w = Writer()
    queues = [q for per_vhost in node.queues.values() for q in per_vhost.values()]
    conns = list(node.connections.values())
    channels = [ch for c in conns for ch in c.channels.values()]
    consumers = sum(len(q.consumers) for q in queues)
    monitor = rt.app.monitor
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    max_fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    w.family("rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info",
             [({"rabbitmq_node": cfg.nodename,
                "rabbitmq_cluster": cfg.cluster_name or cfg.nodename,
                "rabbitmq_cluster_permanent_id": cfg.cluster_name or cfg.nodename}, 1)])
    w.family("rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info",
             [({"rabbitmq_version": "3.10.8", "prometheus_plugin_version": __version__,
                "prometheus_client_version": __version__, "erlang_version": "python",
                "product_name": "WarrenMQ", "product_version": __version__}, 1)])
    w.one("process_start_time_seconds", "gauge", "Start time of the process since unix epoch",
          int(rt.started_at))
    w.one("rabbitmq_process_open_fds", "gauge", "Open file descriptors", fds)
    w.one("rabbitmq_process_max_fds", "gauge", "Open file descriptors limit", max_fds)
    w.one("rabbitmq_process_open_tcp_sockets", "gauge", "Open TCP sockets", len(conns))
    w.one("rabbitmq_process_max_tcp_sockets", "gauge", "Open TCP sockets limit", max_fds)
    w.one("rabbitmq_process_resident_memory_bytes", "gauge", "Memory used in bytes",
          monitor.memory_used if monitor else 0)
    w.one("rabbitmq_resident_memory_limit_bytes", "gauge",
          "Memory high watermark in bytes", monitor.memory_limit if monitor else 0)
    w.one("rabbitmq_disk_space_available_bytes", "gauge", "Disk space available in bytes",
          monitor.disk_free if monitor else 0)
    w.one("rabbitmq_disk_space_available_limit_bytes", "gauge",
          "Free disk space low watermark in bytes",
          monitor.marks.disk_free_absolute if monitor else 0)
    w.one("rabbitmq_alarms_memory_used_watermark", "gauge",
          "is 1 if VM memory watermark alarm is in effect", "memory" in node.alarms)
    w.one("rabbitmq_alarms_free_disk_space_watermark", "gauge",
          "is 1 if free disk space watermark alarm is in effect", "disk" in node.alarms)
    w.one("rabbitmq_alarms_file_descriptor_limit", "gauge",
          "is 1 if file descriptor limit alarm is in effect", 0)

    w.one("rabbitmq_connections", "gauge", "Connections currently open", len(conns))
    w.one("rabbitmq_channels", "gauge", "Channels currently open", len(channels))
    w.one("rabbitmq_consumers", "gauge", "Consumers currently connected", consumers)
    w.one("rabbitmq_queues", "gauge", "Queues available", len(queues))
    w.one("rabbitmq_global_consumers", "gauge",
          "Current number of consumers", consumers)
    w.one("rabbitmq_global_publishers", "gauge", "Current number of publishers",
          sum(1 for c in conns if c.has_published))

    # counters: the sampler's totals, plus the increase since its last pass
    published = getattr(node, "msgs_published", 0)
    delivered = sum(q.delivered for q in queues)
    acked = sum(q.acked for q in queues)
    t = sampler.totals
    w.one("rabbitmq_global_messages_received_total", "counter",
          "Total number of messages received from publishers",
          max(t.publish, 0) + max(published - sampler._published_prev, 0))
    w.one("rabbitmq_global_messages_routed_total", "counter",
          "Total number of messages routed to queues", sum(q.published for q in queues))
    w.one("rabbitmq_global_messages_delivered_total", "counter",
          "Total number of messages delivered to consumers",
          t.deliver_get + max(delivered - _prev_sum(sampler, 1), 0))
    w.one("rabbitmq_global_messages_acknowledged_total", "counter",
          "Total number of messages acknowledged by consumers",
          t.ack + max(acked - _prev_sum(sampler, 2), 0))
    w.one("rabbitmq_global_messages_confirmed_total", "counter",
          "Total number of messages confirmed to publishers",
          sum(ch.confirmed_seq for ch in channels))

    ready = sum(len(q.ready) for q in queues)
    unacked = sum(q.unacked for q in queues)
    w.one("rabbitmq_queue_messages_ready", "gauge", "Messages ready to be delivered to "
          "consumers", ready)
    w.one("rabbitmq_queue_messages_unacked", "gauge", "Messages delivered to consumers but "
          "not yet acknowledged", unacked)
    w.one("rabbitmq_queue_messages", "gauge", "Sum of ready and unacknowledged messages "
          "- total queue depth", ready + unacked)
    w.one("rabbitmq_queue_messages_ready_bytes", "gauge", "Size in bytes of ready messages",
          sum(q.ready_bytes for q in queues))
    w.one("rabbitmq_queue_consumers", "gauge", "Consumers on a queue", consumers)
    w.one("rabbitmq_queue_messages_published_total", "counter",
          "Total number of messages published to queues", sum(q.published for q in queues))
    w.one("rabbitmq_channel_messages_unacked", "gauge", "Delivered but not yet acknowledged "
          "messages", sum(ch.unacked_count for ch in channels))
    w.one("rabbitmq_channel_messages_unconfirmed", "gauge", "Published but not yet confirmed "
          "messages", sum(ch.publish_seq - ch.confirmed_seq for ch in channels if ch.confirm))
    w.one("rabbitmq_channel_consumers", "gauge", "Consumers on a channel",
          sum(len(ch.consumers) for ch in channels))
    w.one("rabbitmq_connection_incoming_bytes_total", "counter",
          "Total number of bytes received on a connection",
          t.recv_oct + sum(max(c.bytes_in - sampler._conn_prev.get(c.id, 0), 0)
                           for c in conns))
    w.one("rabbitmq_connection_channels", "gauge", "Channels on a connection", len(channels))

    if per_object:
        def per_queue(value: Any) -> list[tuple[dict[str, str], float]]:
            return [({"vhost": q.vhost, "queue": q.name}, value(q)) for q in queues]

        w.family("rabbitmq_queue_messages_ready", "gauge", "Messages ready, per queue",
                 per_queue(lambda q: len(q.ready)))
        w.family("rabbitmq_queue_messages_unacked", "gauge", "Messages unacked, per queue",
                 per_queue(lambda q: q.unacked))
        w.family("rabbitmq_queue_messages", "gauge", "Queue depth, per queue",
                 per_queue(lambda q: len(q.ready) + q.unacked))
        w.family("rabbitmq_queue_consumers", "gauge", "Consumers, per queue",
                 per_queue(lambda q: len(q.consumers)))
        w.family("rabbitmq_queue_messages_published_total", "counter",
                 "Messages published, per queue", per_queue(lambda q: q.published))
    return w.text()


def _prev_sum(sampler: Any, index: int) -> int:
    return sum(c[index] for c in sampler._queue_prev.values())


def build_app(ctx: Context) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        if not ctx.rt.app.running:
            return web.Response(status=503, text="the node's app is stopped\n")
        text = render(ctx, request.path.endswith("/per-object"))
        return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/metrics/per-object", metrics)
    return app
