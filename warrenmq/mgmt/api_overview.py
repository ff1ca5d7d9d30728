"""Overview, nodes, whoami, aliveness and health checks (RabbitMQ's monitoring endpoints).

/api/overview also answers RabbitMQ's sample parameters (msg_rates_age/msg_rates_incr,
lengths_age/lengths_incr) with `samples` lists, which is what the console's charts draw.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

from aiohttp import web
from pamqp import commands as C

from .. import __version__
from ..amqp import codec
from ..cluster.control import CommandError
from ..core.exchanges import EXCHANGE_TYPES
from ..server.metalog import finish
from ..server.replica_commands import queues_quorum_critical
from . import plugins
from .direct import DirectSession
from .http import ApiError, bad_request, json_response, not_found
from .render import details
from .router import Call, route
from .stats import Sample

MANAGEMENT_VERSION = __version__


def _int_query(call: Call, name: str, default: int) -> int:
    raw = call.request.query.get(name)
    if raw is None:
        return default
    try:
        return max(int(raw), 1)
    except ValueError:
        raise bad_request(f"invalid value for {name}: {raw!r}") from None


def _samples(history: list[Sample], age_s: int, incr_s: int, value: Any) -> list[dict]:
    """RabbitMQ's sample lists: newest first, one every incr seconds over age seconds."""
    if not history:
        return []
    newest = history[-1].ts
    out: list[dict] = []
    step = max(incr_s, 1)
    target = newest
    for s in reversed(history):
        if s.ts <= target + 1e-6:
            out.append({"timestamp": int(s.ts * 1000), "sample": value(s)})
            target -= step
            if newest - target > age_s:
                break
    return out


def _stat(value: int, rate: float, samples: list[dict] | None) -> tuple[int, dict]:
    d: dict[str, Any] = details(rate)
    if samples is not None:
        d["samples"] = samples
    return value, d


def overview(call: Call) -> dict:
    node = call.node
    cfg = node.config
    sampler = call.ctx.sampler
    latest = sampler.latest()
    history = list(sampler.history)
    q = call.request.query
    want_rates = "msg_rates_age" in q
    want_lengths = "lengths_age" in q
    rates_age = _int_query(call, "msg_rates_age", 60)
    rates_incr = _int_query(call, "msg_rates_incr", 5)
    lengths_age = _int_query(call, "lengths_age", 60)
    lengths_incr = _int_query(call, "lengths_incr", 5)
    t = sampler.totals
    visible = call.visible_vhosts()
    ready = unacked = 0
    queues = consumers = exchanges = 0
    for v in visible:
        exchanges += len(v.exchanges)
        queues += len(v.queues)
        for lq in node.queues.get(v.name, {}).values():
            ready += len(lq.ready)
            unacked += lq.unacked
            consumers += len(lq.consumers)
    conns = [c for c in node.connections.values()
             if call.sees_everything or c.user == call.user.name]
    message_stats: dict[str, Any] = {}
    for key, total, rate_of in (
            ("publish", t.publish, lambda s: s.publish_total),
            ("deliver_get", t.deliver_get, lambda s: s.deliver_get_total),
            ("ack", t.ack, lambda s: s.ack_total)):
        rate = getattr(latest, key) if latest else 0.0
        samples = _samples(history, rates_age, rates_incr, rate_of) if want_rates else None
        message_stats[key], message_stats[key + "_details"] = _stat(total, rate, samples)
    message_stats["deliver"], message_stats["deliver_details"] = \
        message_stats["deliver_get"], message_stats["deliver_get_details"]
    message_stats["disk_reads"], message_stats["disk_reads_details"] = 0, details(0.0)
    message_stats["disk_writes"], message_stats["disk_writes_details"] = 0, details(0.0)
    queue_totals: dict[str, Any] = {}
    for key, value, get in (
            ("messages", ready + unacked,
             lambda s: s.messages_ready + s.messages_unacknowledged),
            ("messages_ready", ready, lambda s: s.messages_ready),
            ("messages_unacknowledged", unacked, lambda s: s.messages_unacknowledged)):
        samples = _samples(history, lengths_age, lengths_incr, get) if want_lengths else None
        queue_totals[key], queue_totals[key + "_details"] = _stat(value, 0.0, samples)
    out: dict[str, Any] = {
        "management_version": MANAGEMENT_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600], "basic": [600], "detailed": [600]},
        "exchange_types": exchange_types(),
        "product_version": __version__,
        "product_name": "WarrenMQ",
        "rabbitmq_version": "3.10.8",
        "cluster_name": cfg.cluster_name or cfg.nodename,
        "erlang_version": platform.python_version(),
        "erlang_full_version": f"Python {platform.python_version()}",
        "release_series_support_status": "supported",
        "disable_stats": False,
        "enable_queue_totals": False,
        "message_stats": message_stats,
        "churn_rates": {k: 0 for k in ("channel_closed", "channel_created", "connection_closed",
                                       "connection_created", "queue_created", "queue_declared",
                                       "queue_deleted")}
        | {f"{k}_details": details(0.0) for k in ("channel_closed", "channel_created",
                                                  "connection_closed", "connection_created",
                                                  "queue_created", "queue_declared",
                                                  "queue_deleted")},
        "queue_totals": queue_totals,
        "object_totals": {"connections": len(conns),
                          "channels": sum(len(c.channels) for c in conns),
                          "exchanges": exchanges, "queues": queues, "consumers": consumers},
        "statistics_db_event_queue": 0,
    }
    if call.sees_everything:
        out["node"] = cfg.nodename
        out["listeners"] = listeners(call)
        out["contexts"] = [{"node": cfg.nodename, "description": "WarrenMQ Management",
                            "path": "/", "port": str(call.ctx.rt.ports.get("mgmt", 0)),
                            "ip": cfg.bind, "protocol": "http", "cowboy_opts": "[]",
                            "ssl_opts": []}]
    return out


def exchange_types() -> list[dict]:
    return [{"name": name, "description": f"AMQP {name} exchange", "enabled": True}
            for name in sorted(EXCHANGE_TYPES)]


def listeners(call: Call) -> list[dict]:
    rt = call.ctx.rt
    cfg = rt.config
    purposes = {"amqp": "amqp", "dist": "clustering", "mgmt": "http",
                "prometheus": "http/prometheus"}
    return [{"node": cfg.nodename, "protocol": purposes.get(key, key), "ip_address": cfg.bind,
             "port": port, "socket_opts": {}}
            for key, port in rt.ports.items() if port]


@route("GET", "/api/overview")
async def get_overview(call: Call) -> web.Response:
    return json_response(overview(call))


@route("GET", "/api/cluster-name")
async def get_cluster_name(call: Call) -> web.Response:
    cfg = call.node.config
    return json_response({"name": cfg.cluster_name or cfg.nodename})


@route("GET", "/api/extensions")
async def get_extensions(call: Call) -> web.Response:
    return json_response([])


@route("GET", "/api/whoami")
async def whoami(call: Call) -> web.Response:
    return json_response({"name": call.user.name, "tags": list(call.user.tags)})


# -- nodes ------------------------------------------------------------------------------------------
def _fds() -> tuple[int, int]:
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 0
    return used, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def node_info(call: Call) -> dict:
    rt = call.ctx.rt
    node = call.node
    cfg = node.config
    monitor = rt.app.monitor
    fd_used, fd_total = _fds()
    sockets = len(node.connections)
    enabled = plugins.read_enabled(cfg.data_dir)
    return {
        "name": cfg.nodename,
        "type": "disc",
        "running": True,
        "being_drained": False,
        "os_pid": str(os.getpid()),
        "uptime": int((time.time() - rt.started_at) * 1000),
        "processors": os.cpu_count() or 1,
        "run_queue": 0,
        "rates_mode": "basic",
        "net_ticktime": 60,
        "mem_used": monitor.memory_used if monitor else 0,
        "mem_used_details": details(0.0),
        "mem_limit": monitor.memory_limit if monitor else 0,
        "mem_alarm": "memory" in node.alarms,
        "mem_calculation_strategy": "rss",
        "disk_free": monitor.disk_free if monitor else 0,
        "disk_free_details": details(0.0),
        "disk_free_limit": monitor.marks.disk_free_absolute if monitor else 0,
        "disk_free_alarm": "disk" in node.alarms,
        "fd_used": fd_used,
        "fd_used_details": details(0.0),
        "fd_total": fd_total,
        "sockets_used": sockets,
        "sockets_used_details": details(0.0),
        "sockets_total": fd_total,
        "proc_used": 1,
        "proc_used_details": details(0.0),
        "proc_total": 1,
        "partitions": [],
        "cluster_links": [],
        "exchange_types": exchange_types(),
        "auth_mechanisms": [{"name": m, "description": f"{m} authentication",
                             "enabled": True} for m in ("PLAIN", "AMQPLAIN")],
        "applications": [{"name": p, "description": plugins.PLUGINS[p].description,
                          "version": plugins.VERSION} for p in enabled],
        "enabled_plugins": enabled,
        "contexts": [],
        "log_files": [str(f) for f in rt.log_files],
        "config_files": [str(cfg.config_file)] if cfg.config_file else [],
        "db_dir": str(cfg.data_dir),
        "connection_created": 0, "connection_created_details": details(0.0),
        "connection_closed": 0, "connection_closed_details": details(0.0),
        "channel_created": 0, "channel_created_details": details(0.0),
        "channel_closed": 0, "channel_closed_details": details(0.0),
        "queue_created": 0, "queue_created_details": details(0.0),
        "queue_declared": 0, "queue_declared_details": details(0.0),
        "queue_deleted": 0, "queue_deleted_details": details(0.0),
    }


@route("GET", "/api/nodes", tag="monitoring")
async def get_nodes(call: Call) -> web.Response:
    return json_response([node_info(call)])


@route("GET", "/api/nodes/{node}", tag="monitoring")
async def get_node(call: Call) -> web.Response:
    if call.params["node"] != call.node.config.nodename:
        raise not_found()
    return json_response(node_info(call))


# -- health -----------------------------------------------------------------------------------------
def _failed(reason: str, **extra: Any) -> ApiError:
    return ApiError(503, "", "", extra={"status": "failed", "reason": reason, **extra})


def _alarms(call: Call) -> web.Response:
    node = call.node
    if node.alarms:
        raise _failed("There are alarms in effect in the cluster",
                      alarms=[{"node": node.config.nodename, "resource": r}
                              for r in sorted(node.alarms)])
    return json_response({"status": "ok"})


@route("GET", "/api/health/checks/alarms")
async def health_alarms(call: Call) -> web.Response:
    return _alarms(call)


@route("GET", "/api/health/checks/local-alarms")
async def health_local_alarms(call: Call) -> web.Response:
    return _alarms(call)


@route("GET", "/api/health/checks/port-listener/{port}")
async def health_port(call: Call) -> web.Response:
    try:
        port = int(call.params["port"])
    except ValueError:
        raise bad_request(f"invalid port {call.params['port']!r}") from None
    ports = sorted(p for p in call.ctx.rt.ports.values() if p)
    if port not in ports:
        raise _failed("No active listener", missing=port, ports=ports)
    return json_response({"status": "ok", "port": port})


@route("GET", "/api/health/checks/virtual-hosts")
async def health_vhosts(call: Call) -> web.Response:
    return json_response({"status": "ok"})


@route("GET", "/api/health/checks/node-is-quorum-critical")
async def health_quorum_critical(call: Call) -> web.Response:
    """503 naming the replicated queues that would lose their majority if this node
    stopped (`warren-queues check_if_node_is_quorum_critical`'s check), as RabbitMQ's."""
    try:
        queues = (await queues_quorum_critical(call.ctx.rt, {}))["queues"]
    except CommandError as e:
        raise _failed(str(e)) from None
    if queues:
        raise _failed("There are quorum queues that would lose their quorum if the target "
                      "node is shut down", queues=queues)
    return json_response({"status": "ok"})


@route("GET", "/api/aliveness-test/{vhost}")
async def aliveness(call: Call) -> web.Response:
    """Declare a queue, publish to it and get the message back, as RabbitMQ's check does."""
    v = call.vhost()
    session = DirectSession(call.node, call.user.name, v.name)
    try:
        ch = session.channel
        await finish(ch.handle_queue_declare(C.Queue.Declare(queue="aliveness-test",
                                                             durable=False)))
        await finish(ch.handle_queue_purge(C.Queue.Purge(queue="aliveness-test")))
        body = b"test_message"
        header = codec.encode_header_payload(len(body), C.Basic.Properties())
        ch.publish("", "aliveness-test", codec.shortstr(""), codec.shortstr("aliveness-test"),
                   False, header, body)
        await finish(ch.handle_basic_get(C.Basic.Get(queue="aliveness-test", no_ack=True)))
        if not any(len(f) > 11 and f[7:11] == b"\x00\x3c\x00\x47" for f in
                   session.take_frames()):
            raise _failed("aliveness test failed: the message did not come back")
    finally:
        session.close()
    call.ctx.rt.app.schedule_flush()
    return json_response({"status": "ok"})
