"""The JSON objects of the API, with RabbitMQ's field names, built from the node's state.

Rates come from the sampler (`*_details.rate`); counters from the objects themselves. AMQP
tables (arguments, client properties, headers) become plain JSON objects, as RabbitMQ's
management API shows them (unlike rabbitmqctl's typed triples).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..core.connection import OPENED
from ..meta.policies import effective_policy
from ..server.listing import channel_pid, connection_name

if TYPE_CHECKING:
    from ..core.channel import Channel
    from ..core.connection import Connection
    from ..core.consumer import Consumer
    from ..core.node import Node
    from ..meta.records import ExchangeRecord, Policy, QueueRecord, User, VHost
    from .stats import Sampler


def plain(value: Any) -> Any:
    """An AMQP value as JSON: tables to objects, bytes to text, decimals to numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    return value


def details(rate: float) -> dict:
    return {"rate": round(rate, 2)}


def _policy_name(p: Policy | None) -> str | None:
    return p.name if p else None


# -- queues -------------------------------------------------------------------------------------
def queue(node: Node, sampler: Sampler, record: QueueRecord) -> dict:
    q = node.live_queue(record.vhost, record.name)
    ready = len(q.ready) if q else 0
    unacked = q.unacked if q else 0
    # a queue of another node counts the consumers of every node (its home's figure)
    consumers = (getattr(q, "consumer_count", None) or len(q.consumers)) if q else 0
    p = effective_policy(node.meta, record.vhost, "queue", record.name) \
        if node.meta.vhosts[record.vhost].policies else None
    rates = sampler.queue_rates.get(q) if q is not None else None
    replicas = _replicas(node, record)
    out: dict[str, Any] = {
        "name": record.name,
        "vhost": record.vhost,
        "type": record.type,
        "durable": record.durable,
        "auto_delete": record.auto_delete,
        "exclusive": record.exclusive_owner is not None,
        "arguments": plain(record.arguments),
        # where it lives: a replicated queue's leader (a mirrored queue's master), else its node
        "node": replicas.get("leader") or record.node or node.config.nodename,
        "state": "running",
        "policy": _policy_name(p),
        "operator_policy": None,
        "effective_policy_definition": dict(p.definition) if p else {},
        "consumers": consumers,
        "consumer_capacity": 1.0 if consumers else 0.0,
        "consumer_utilisation": 1.0 if consumers else 0.0,
        "exclusive_consumer_tag": next((c.tag for c in q.consumers if c.exclusive), None)
        if q else None,
        "single_active_consumer_tag": None,
        "messages": ready + unacked,
        "messages_details": details(0.0),
        "messages_ready": ready,
        "messages_ready_details": details(0.0),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": details(0.0),
        "messages_ram": ready + unacked,
        "messages_ready_ram": ready,
        "messages_unacknowledged_ram": unacked,
        "messages_persistent": 0,
        "messages_paged_out": 0,
        "message_bytes": q.ready_bytes if q else 0,
        "message_bytes_ready": q.ready_bytes if q else 0,
        "message_bytes_unacknowledged": 0,
        "message_bytes_ram": q.resident_bytes if q else 0,
        "message_bytes_persistent": 0,
        "message_bytes_paged_out": (q.ready_bytes - q.resident_bytes) if q else 0,
        "head_message_timestamp": None,
        "idle_since": None,
        "memory": 0,
        "recoverable_slaves": None,
        "owner_pid_details": None,
    }
    if record.members:
        out["leader"] = replicas.get("leader", "")
        out["members"] = replicas.get("members", list(record.members))
        out["online"] = replicas.get("online", [])
        if record.type == "classic":  # RabbitMQ's fields for a mirrored classic queue
            out["slave_nodes"] = replicas.get("slave_nodes", [])
            out["synchronised_slave_nodes"] = replicas.get("synchronised_slave_nodes", [])
    if q is not None:
        out["message_stats"] = {
            "publish": q.published, "publish_details": details(rates.publish if rates else 0),
            "deliver_get": q.delivered,
            "deliver_get_details": details(rates.deliver_get if rates else 0),
            "ack": q.acked, "ack_details": details(rates.ack if rates else 0),
        }
    return out


def _replicas(node: Node, record: QueueRecord) -> dict:
    """Leader, members, online, slave_nodes, synchronised_slave_nodes of a replicated queue,
    as the shell knows them ({} for a queue that is not replicated)."""
    describe = getattr(node, "describe_replicas", None)
    return describe(record) if describe is not None and record.members else {}


def queue_detail(node: Node, sampler: Sampler, record: QueueRecord) -> dict:
    out = queue(node, sampler, record)
    q = node.live_queue(record.vhost, record.name)
    out["consumer_details"] = [consumer(node, c) for c in (q.consumers if q else [])]
    out["deliveries"] = []
    out["incoming"] = []
    return out


# -- exchanges and bindings ---------------------------------------------------------------------
def exchange(node: Node, x: ExchangeRecord) -> dict:
    p = effective_policy(node.meta, x.vhost, "exchange", x.name) \
        if node.meta.vhosts[x.vhost].policies else None
    out = {"name": x.name, "vhost": x.vhost, "type": x.type, "durable": x.durable,
           "auto_delete": x.auto_delete, "internal": x.internal,
           "arguments": plain(x.arguments), "user_who_performed_action": "rmq-internal"}
    if p is not None:
        out["policy"] = p.name
    return out


def properties_key(routing_key: str, arguments: dict | None) -> str:
    if not arguments:
        return routing_key or "~"
    digest = hashlib.sha256(json.dumps(plain(arguments), sort_keys=True).encode()).hexdigest()
    return f"{routing_key}~{digest[:22]}"


def binding(vhost: str, source: str, dest_kind: str, dest: str, routing_key: str,
            arguments: dict | None) -> dict:
    return {"source": source, "vhost": vhost, "destination": dest,
            "destination_type": dest_kind, "routing_key": routing_key,
            "arguments": plain(arguments or {}),
            "properties_key": properties_key(routing_key, arguments)}


def bindings_of(v: VHost) -> list[dict]:
    """Every binding of a vhost, the default exchange's implicit ones first (RabbitMQ's
    order)."""
    out = [binding(v.name, "", "queue", q, q, None) for q in sorted(v.queues)]
    explicit = sorted(((x.name, b) for x in v.exchanges.values() for b in x.router.bindings),
                      key=lambda e: (e[0], e[1].dest.kind, e[1].dest.name, e[1].routing_key))
    out += [binding(v.name, src, b.dest.kind, b.dest.name, b.routing_key, b.arguments)
            for src, b in explicit]
    return out


# -- connections, channels, consumers -------------------------------------------------------------
def connection(node: Node, sampler: Sampler, c: Connection) -> dict:
    props = plain(c.client_properties)
    shell = getattr(c, "shell", None)
    started = getattr(shell, "started", 0.0)
    return {
        "name": connection_name(c),
        "node": node.config.nodename,
        "type": "network",
        "state": "blocked" if c.blocked else ("running" if c.state == OPENED else "closing"),
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost_name,
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": c.auth_mechanism,
        "host": c.local[0] if c.local else None,
        "port": c.local[1] if c.local else None,
        "peer_host": c.peer[0] if c.peer else None,
        "peer_port": c.peer[1] if c.peer else None,
        "ssl": False, "ssl_protocol": None, "ssl_key_exchange": None, "ssl_cipher": None,
        "ssl_hash": None, "peer_cert_subject": None, "peer_cert_issuer": None,
        "peer_cert_validity": None,
        "channels": len(c.channels),
        "channel_max": c.channel_max,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "client_properties": props,
        "connected_at": int(_wall(started) * 1000),
        "recv_oct": c.bytes_in,
        "recv_oct_details": details(sampler.conn_rates.get(c.id, 0.0)),
        "recv_cnt": c.frames_in,
        "send_oct": 0,
        "send_oct_details": details(0.0),
        "send_cnt": 0,
        "send_pend": 0,
    }


def _wall(loop_time: float) -> float:
    """A loop.time() stamp as unix time (the shell records loop time)."""
    try:
        now_loop = asyncio.get_running_loop().time()
    except RuntimeError:
        return time.time()
    return time.time() - (now_loop - loop_time) if loop_time else time.time()


def channel(node: Node, ch: Channel) -> dict:
    c = ch.conn
    return {
        "name": f"{connection_name(c)} ({ch.number})",
        "node": node.config.nodename,
        "number": ch.number,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost_name,
        "state": "running",
        "transactional": ch.tx,
        "confirm": ch.confirm,
        "consumer_count": len(ch.consumers),
        "messages_unacknowledged": ch.unacked_count,
        "messages_unconfirmed": ch.publish_seq - ch.confirmed_seq if ch.confirm else 0,
        "messages_uncommitted": sum(1 for op in ch.tx_ops if op[0] == "publish"),
        "acks_uncommitted": sum(len(op[1]) for op in ch.tx_ops if op[0] == "settle"),
        "prefetch_count": ch.prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "pending_raft_commands": 0,
        "idle_since": None,
        "connection_details": {"name": connection_name(c),
                               "peer_host": c.peer[0] if c.peer else None,
                               "peer_port": c.peer[1] if c.peer else None},
        "pid": channel_pid(ch),
    }


def consumer(node: Node, cons: Consumer) -> dict:
    ch = cons.channel
    c = ch.conn
    return {
        "consumer_tag": cons.tag,
        "queue": {"name": cons.queue.name, "vhost": cons.queue.vhost},
        "channel_details": {"name": f"{connection_name(c)} ({ch.number})",
                            "number": ch.number, "node": node.config.nodename,
                            "connection_name": connection_name(c),
                            "peer_host": c.peer[0] if c.peer else None,
                            "peer_port": c.peer[1] if c.peer else None, "user": c.user},
        "ack_required": not cons.no_ack,
        "exclusive": cons.exclusive,
        "prefetch_count": cons.prefetch,
        "arguments": plain(cons.arguments),
        "active": True,
        "activity_status": "up",
    }


# -- users, vhosts, permissions, policies ----------------------------------------------------------
def user(u: User) -> dict:
    return {"name": u.name, "password_hash": u.password_hash,
            "hashing_algorithm": u.hashing_algorithm, "tags": list(u.tags), "limits": {}}


def vhost(node: Node, v: VHost) -> dict:
    ready = unacked = 0
    for q in node.queues.get(v.name, {}).values():
        ready += len(q.ready)
        unacked += q.unacked
    recv = sum(c.bytes_in for c in node.connections.values() if c.vhost_name == v.name)
    return {"name": v.name, "description": v.description, "tags": list(v.tags),
            "recv_oct": recv, "recv_oct_details": details(0.0), "send_oct": 0,
            "send_oct_details": details(0.0),
            "metadata": {"description": v.description, "tags": list(v.tags)},
            "default_queue_type": "classic", "tracing": False,
            "cluster_state": {node.config.nodename: "running"},
            "messages": ready + unacked, "messages_details": details(0.0),
            "messages_ready": ready, "messages_ready_details": details(0.0),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": details(0.0)}


def permission(user_name: str, vhost_name: str, p: Any) -> dict:
    return {"user": user_name, "vhost": vhost_name, "configure": p.configure,
            "write": p.write, "read": p.read}


def policy(p: Policy) -> dict:
    return {"vhost": p.vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
            "definition": dict(p.definition), "priority": p.priority}
