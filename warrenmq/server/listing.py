"""The rows behind warrenctl's list_* commands, with rabbitmqctl's column names.

Each listing knows its columns (info items) and its default ones; a request for an unknown
column is a usage error, as in rabbitmqctl. Rows carry plain values that survive msgpack
(AMQP tables become [key, type, value] triples, RabbitMQ's JSON form); how they look in a
table or in JSON is the client's business.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..cluster.control import EX_USAGE, CommandError
from ..core.connection import OPENED
from ..meta.policies import effective_policy

if TYPE_CHECKING:
    from ..core.channel import Channel
    from ..core.connection import Connection
    from ..core.node import Node

Row = Callable[..., Any]


def amqp_table(table: dict | None) -> list:
    """An AMQP field table as RabbitMQ's JSON shows it: [[key, type, value], ...]."""
    return [[str(k), *_typed(v)] for k, v in (table or {}).items()]


def _typed(v: Any) -> list:
    if isinstance(v, bool):
        return ["bool", v]
    if isinstance(v, int):
        return ["signedint" if -2**31 <= v < 2**31 else "long", v]
    if isinstance(v, float):
        return ["double", v]
    if isinstance(v, Decimal):
        return ["decimal", str(v)]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ["longstr", bytes(v).decode("utf-8", errors="replace")]
    if isinstance(v, str):
        return ["longstr", v]
    if isinstance(v, dict):
        return ["table", amqp_table(v)]
    if isinstance(v, (list, tuple)):
        return ["array", [_typed(x) for x in v]]
    if isinstance(v, datetime.datetime):
        return ["timestamp", int(v.timestamp())]
    if v is None:
        return ["void", None]
    return ["longstr", str(v)]


def _check_columns(kind: str, requested: list[str] | None, known: dict[str, Row],
                   default: tuple[str, ...]) -> list[str]:
    columns = list(requested or default)
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise CommandError(f"Info key(s) {','.join(unknown)} are not supported by {kind}; "
                           f"valid keys: {', '.join(known)}", EX_USAGE)
    return columns


def _table(kind: str, requested: list[str] | None, known: dict[str, Row],
           default: tuple[str, ...], items: Iterable[Any]) -> dict:
    columns = _check_columns(kind, requested, known, default)
    getters = [known[c] for c in columns]
    return {"columns": columns, "rows": [[get(item) for get in getters] for item in items]}


def _vhost_or_fail(node: Node, vhost: str) -> Any:
    record = node.meta.vhosts.get(vhost)
    if record is None:
        raise CommandError(f"virtual host '{vhost}' does not exist")
    return record


def _replicas(node: Node, record: Any) -> dict:
    """Leader, members and online members of a replicated queue (the shell knows them)."""
    describe = getattr(node, "describe_replicas", None)
    return describe(record) if describe is not None and record.members else {}


# -- queues -------------------------------------------------------------------------------------------
def queues(node: Node, vhost: str, columns: list[str] | None) -> dict:
    record = _vhost_or_fail(node, vhost)
    live = node.queues.get(vhost, {})

    def policy(q: Any) -> str:
        p = effective_policy(node.meta, vhost, "queue", q.name)
        return p.name if p else ""

    def count(attr: str) -> Row:
        return lambda q: getattr(live[q.name], attr, 0) if q.name in live else 0

    def ready(q: Any) -> int:
        return live[q.name].message_count if q.name in live else 0

    def unacked(q: Any) -> int:
        return live[q.name].unacked if q.name in live else 0

    def consumers(q: Any) -> int:
        lq = live.get(q.name)
        if lq is None:
            return 0
        # a queue of another node counts the consumers of every node (its home's figure)
        return getattr(lq, "consumer_count", None) or len(lq.consumers)

    known: dict[str, Row] = {
        "name": lambda q: q.name,
        "vhost": lambda q: q.vhost,
        "durable": lambda q: q.durable,
        "auto_delete": lambda q: q.auto_delete,
        "exclusive": lambda q: q.exclusive_owner is not None,
        "arguments": lambda q: amqp_table(q.arguments),
        "policy": policy,
        "effective_policy_definition": lambda q: (
            (p := effective_policy(node.meta, vhost, "queue", q.name)) and p.definition) or {},
        "type": lambda q: q.type,
        "messages": lambda q: ready(q) + unacked(q),
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_bytes_ready": count("ready_bytes"),
        "consumers": consumers,
        "state": lambda q: "running",
        "owner_pid": lambda q: connection_pid(node, q.exclusive_owner) if q.exclusive_owner
        else "",
        # a replicated queue's node is its leader's, as RabbitMQ shows a mirrored queue's
        # master and a quorum queue's leader
        "node": lambda q: _replicas(node, q).get("leader") or q.node or node.config.nodename,
        "leader": lambda q: _replicas(node, q).get("leader", q.node or node.config.nodename),
        "members": lambda q: _replicas(node, q).get("members", [q.node or node.config.nodename]),
        "online": lambda q: _replicas(node, q).get("online", [q.node or node.config.nodename]),
        "slave_nodes": lambda q: _replicas(node, q).get("slave_nodes", []),
        "synchronised_slave_nodes": lambda q: _replicas(node, q).get(
            "synchronised_slave_nodes", []),
    }
    return _table("list_queues", columns, known, ("name", "messages"), record.queues.values())


# -- exchanges and bindings -----------------------------------------------------------------------------
def exchanges(node: Node, vhost: str, columns: list[str] | None) -> dict:
    record = _vhost_or_fail(node, vhost)

    def policy(x: Any) -> str:
        p = effective_policy(node.meta, vhost, "exchange", x.name)
        return p.name if p else ""

    known: dict[str, Row] = {
        "name": lambda x: x.name,
        "vhost": lambda x: x.vhost,
        "type": lambda x: x.type,
        "durable": lambda x: x.durable,
        "auto_delete": lambda x: x.auto_delete,
        "internal": lambda x: x.internal,
        "arguments": lambda x: amqp_table(x.arguments),
        "policy": policy,
    }
    return _table("list_exchanges", columns, known, ("name", "type"),
                  record.exchanges.values())


def bindings(node: Node, vhost: str, columns: list[str] | None) -> dict:
    record = _vhost_or_fail(node, vhost)
    # (source, source_kind, destination, destination_kind, routing_key, arguments)
    items: list[tuple] = [("", "exchange", q, "queue", q, {}) for q in record.queues]
    explicit = [(x.name, "exchange", b.dest.name, b.dest.kind, b.routing_key, b.arguments or {})
                for x in record.exchanges.values() for b in x.router.bindings]
    items += sorted(explicit, key=lambda b: (b[0], b[2], b[3], b[4]))
    known: dict[str, Row] = {
        "source_name": lambda b: b[0],
        "source_kind": lambda b: b[1],
        "destination_name": lambda b: b[2],
        "destination_kind": lambda b: b[3],
        "routing_key": lambda b: b[4],
        "arguments": lambda b: amqp_table(b[5]),
        "vhost": lambda b: vhost,
    }
    return _table("list_bindings", columns, known, tuple(k for k in known if k != "vhost"),
                  items)


# -- connections, channels, consumers -----------------------------------------------------------------------
def connection_number(conn_id: str) -> str:
    """Connection ids are NODENAME/N/PEER; N is unique for the life of the process."""
    parts = conn_id.split("/")
    return parts[1] if len(parts) > 2 else conn_id


def connection_pid(node: Node, conn_id: str | None) -> str:
    return f"<{node.config.nodename}.{connection_number(conn_id or '')}>"


def channel_pid(ch: Channel) -> str:
    return f"<{ch.node.config.nodename}.{connection_number(ch.conn.id)}.{ch.number}>"


def connection_name(conn: Connection) -> str:
    return str(getattr(conn, "name", conn.id))


def _state(conn: Connection) -> str:
    if getattr(conn, "blocked", False):
        return "blocked"
    return "running" if conn.state == OPENED else "closing"


def connections(node: Node, columns: list[str] | None) -> dict:
    def peer(i: int) -> Row:
        return lambda c: (c.peer[i] if c.peer else "")

    def local(i: int) -> Row:
        return lambda c: (c.local[i] if c.local else "")

    known: dict[str, Row] = {
        "pid": lambda c: connection_pid(node, c.id),
        "name": connection_name,
        "user": lambda c: c.user,
        "vhost": lambda c: c.vhost_name,
        "state": _state,
        "peer_host": peer(0),
        "peer_port": peer(1),
        "host": local(0),
        "port": local(1),
        "protocol": lambda c: [0, 9, 1],
        "channels": lambda c: len(c.channels),
        "channel_max": lambda c: c.channel_max,
        "frame_max": lambda c: c.frame_max,
        "timeout": lambda c: c.heartbeat,
        "auth_mechanism": lambda c: c.auth_mechanism,
        "client_properties": lambda c: amqp_table(c.client_properties),
        "ssl": lambda c: False,
        "node": lambda c: node.config.nodename,
    }
    return _table("list_connections", columns, known,
                  ("user", "peer_host", "peer_port", "state"), list(node.connections.values()))


def _channels(node: Node) -> list[Channel]:
    return [ch for conn in node.connections.values() for ch in conn.channels.values()]


def channels(node: Node, columns: list[str] | None) -> dict:
    known: dict[str, Row] = {
        "pid": channel_pid,
        "name": lambda ch: f"{connection_name(ch.conn)} ({ch.number})",
        "connection": lambda ch: connection_pid(node, ch.conn.id),
        "number": lambda ch: ch.number,
        "user": lambda ch: ch.conn.user,
        "vhost": lambda ch: ch.conn.vhost_name,
        "transactional": lambda ch: ch.tx,
        "confirm": lambda ch: ch.confirm,
        "consumer_count": lambda ch: len(ch.consumers),
        "messages_unacknowledged": lambda ch: ch.unacked_count,
        "messages_unconfirmed": lambda ch: ch.publish_seq - ch.confirmed_seq,
        "prefetch_count": lambda ch: ch.prefetch,
        "global_prefetch_count": lambda ch: ch.global_prefetch,
        "state": lambda ch: "running",
        "node": lambda ch: node.config.nodename,
    }
    return _table("list_channels", columns, known,
                  ("pid", "user", "consumer_count", "messages_unacknowledged"), _channels(node))


def consumers(node: Node, vhost: str, columns: list[str] | None) -> dict:
    _vhost_or_fail(node, vhost)
    items = [c for ch in _channels(node) if ch.conn.vhost_name == vhost
             for c in ch.consumers.values()]
    known: dict[str, Row] = {
        "queue_name": lambda c: c.queue.name,
        "channel_pid": lambda c: channel_pid(c.channel),
        "consumer_tag": lambda c: c.tag,
        "ack_required": lambda c: not c.no_ack,
        "prefetch_count": lambda c: c.prefetch,
        "active": lambda c: True,
        "activity_status": lambda c: "up",
        "exclusive": lambda c: c.exclusive,
        "arguments": lambda c: amqp_table(c.arguments),
    }
    return _table("list_consumers", columns, known,
                  ("queue_name", "channel_pid", "consumer_tag", "ack_required",
                   "prefetch_count", "active", "arguments"), items)


# -- users, vhosts, permissions -------------------------------------------------------------------------------
def users(node: Node) -> dict:
    rows = [[u.name, list(u.tags)] for u in node.meta.users.values()]
    return {"columns": ["user", "tags"], "rows": rows}


def vhosts(node: Node, columns: list[str] | None) -> dict:
    known: dict[str, Row] = {
        "name": lambda v: v.name,
        "description": lambda v: v.description,
        "tags": lambda v: list(v.tags),
        "tracing": lambda v: False,
    }
    return _table("list_vhosts", columns, known, ("name",), node.meta.vhosts.values())
