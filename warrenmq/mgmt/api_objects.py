"""Exchanges, queues and bindings: list, show, declare, delete, publish, get, purge.

Every change runs through a DirectSession, i.e. the AMQP channel's own handlers, so an API
declaration is exactly a queue.declare (same validation, permission checks, equivalence
errors, durability before the reply) and an API publish is a basic.publish (same routing,
alternate exchanges, confirms).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from typing import Any

from aiohttp import web
from pamqp import commands as C

from ..amqp import codec
from ..amqp.errors import AMQPError
from ..server.metalog import finish
from .direct import DirectSession
from .http import (
    ApiError,
    bad_request,
    created,
    json_response,
    no_content,
    not_found,
    read_object,
    respond_list,
)
from .render import (
    binding,
    bindings_of,
    exchange,
    plain,
    properties_key,
    queue,
    queue_detail,
)
from .router import Call, route

REPLICA_STATUS_TIMEOUT_S = 1.0
ACKMODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
            "reject_requeue_false")


def _session(call: Call, vhost: str) -> DirectSession:
    return DirectSession(call.node, call.user.name, vhost)


async def _run(call: Call, vhost: str, action: Any) -> None:
    """Run `action(channel)` on a direct session, to the end of its metadata commands
    (applied, hence committed: on disk on a majority of the nodes)."""
    session = _session(call, vhost)
    try:
        await finish(action(session.channel))
    finally:
        session.close()
    await call.ctx.synced()  # what is not metadata (a purge's settlements) is on disk too


def _bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _args(body: dict) -> dict:
    args = body.get("arguments") or {}
    if not isinstance(args, dict):
        raise bad_request("arguments must be a JSON object")
    return args


# -- exchanges --------------------------------------------------------------------------------------
def _exchanges(call: Call, vhosts: list) -> web.Response:
    node = call.node
    records = [x for v in vhosts for x in v.exchanges.values()]
    return respond_list(call.request, records, lambda x: exchange(node, x),
                        name_of=lambda x: x.name,
                        sort_fast={"name": lambda x: x.name, "vhost": lambda x: x.vhost,
                                   "type": lambda x: x.type})


@route("GET", "/api/exchanges")
async def list_exchanges(call: Call) -> web.Response:
    return _exchanges(call, call.visible_vhosts())


@route("GET", "/api/exchanges/{vhost}")
async def list_vhost_exchanges(call: Call) -> web.Response:
    return _exchanges(call, [call.vhost()])


def _exchange_record(call: Call) -> Any:
    x = call.vhost().exchanges.get(_xname(call.params["name"]))
    if x is None:
        raise not_found()
    return x


def _xname(name: str) -> str:
    return "" if name == "amq.default" else name


@route("GET", "/api/exchanges/{vhost}/{name}")
async def get_exchange(call: Call) -> web.Response:
    out = exchange(call.node, _exchange_record(call))
    out["incoming"] = []
    out["outgoing"] = []
    return json_response(out)


@route("PUT", "/api/exchanges/{vhost}/{name}")
async def put_exchange(call: Call) -> web.Response:
    body = await read_object(call.request)
    v = _vhost_for_write(call)
    name = call.params["name"]
    existed = name in v.exchanges
    method = C.Exchange.Declare(
        exchange=name, exchange_type=str(body.get("type", "direct")),
        durable=_bool(body, "durable", False), auto_delete=_bool(body, "auto_delete", False),
        internal=_bool(body, "internal", False), arguments=_args(body))
    await _run(call, v.name, lambda ch: ch.handle_exchange_declare(method))
    return no_content() if existed else created()


def _vhost_for_write(call: Call) -> Any:
    v = call.node.meta.vhosts.get(call.params["vhost"])
    if v is None:
        raise ApiError(404, "not_found", "vhost_not_found")
    return call.vhost()


@route("DELETE", "/api/exchanges/{vhost}/{name}")
async def delete_exchange(call: Call) -> web.Response:
    x = _exchange_record(call)
    if_unused = call.request.query.get("if-unused", "false") == "true"
    method = C.Exchange.Delete(exchange=x.name, if_unused=if_unused)
    await _run(call, x.vhost, lambda ch: ch.handle_exchange_delete(method))
    return no_content()


@route("GET", "/api/exchanges/{vhost}/{name}/bindings/source")
async def exchange_bindings_source(call: Call) -> web.Response:
    x = _exchange_record(call)
    items = [b for b in bindings_of(call.vhost()) if b["source"] == x.name]
    return json_response(items)


@route("GET", "/api/exchanges/{vhost}/{name}/bindings/destination")
async def exchange_bindings_destination(call: Call) -> web.Response:
    x = _exchange_record(call)
    items = [b for b in bindings_of(call.vhost())
             if b["destination_type"] == "exchange" and b["destination"] == x.name]
    return json_response(items)


def _payload(body: dict) -> bytes:
    missing = [k for k in ("properties", "routing_key", "payload", "payload_encoding")
               if k not in body]
    if missing:
        raise bad_request(", ".join(f"key_missing: {k}" for k in missing))
    payload, encoding = body["payload"], body["payload_encoding"]
    if not isinstance(payload, str):
        raise bad_request("payload must be a string")
    if encoding == "string":
        return payload.encode()
    if encoding == "base64":
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("payload is not valid base64") from None
    raise bad_request(f"payload_encoding must be 'string' or 'base64', got {encoding!r}")


PROPERTY_NAMES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                  "type", "user_id", "app_id", "cluster_id")


def _properties(raw: Any) -> C.Basic.Properties:
    if raw in (None, []):
        raw = {}
    if not isinstance(raw, dict):
        raise bad_request("properties must be a JSON object")
    unknown = [k for k in raw if k not in PROPERTY_NAMES]
    if unknown:
        raise bad_request(f"unknown message properties: {', '.join(unknown)}")
    values = dict(raw)
    try:
        if "delivery_mode" in values:
            values["delivery_mode"] = int(values["delivery_mode"])
        if "priority" in values:
            values["priority"] = int(values["priority"])
        if "timestamp" in values:
            values["timestamp"] = datetime.datetime.fromtimestamp(int(values["timestamp"]),
                                                                  datetime.UTC)
        if "headers" in values and not isinstance(values["headers"], dict):
            raise ValueError("headers must be a JSON object")
        return C.Basic.Properties(**values)
    except (TypeError, ValueError) as e:
        raise bad_request(f"invalid message properties: {e}") from None


@route("POST", "/api/exchanges/{vhost}/{name}/publish")
async def publish(call: Call) -> web.Response:
    body = await read_object(call.request)
    v = call.vhost()
    payload = _payload(body)
    props = _properties(body.get("properties"))
    name = _xname(call.params["name"])
    routing_key = str(body["routing_key"])
    if name not in v.exchanges:
        raise bad_request(f"404 NOT_FOUND - no exchange '{call.params['name']}' in vhost "
                          f"'{v.name}'")
    header = codec.encode_header_payload(len(payload), props)
    session = _session(call, v.name)
    try:
        ch = session.channel
        ch.handle_confirm_select(C.Confirm.Select(nowait=True))
        session.take_frames()
        try:
            ch.publish(name, routing_key, codec.shortstr(name), codec.shortstr(routing_key),
                       True, header, payload)
        except AMQPError as e:  # RabbitMQ reports a refused publish as a bad request
            raise bad_request(f"{e.reply_code} {e.reply_text}") from None
        routed = not session.returned(session.take_frames())
        await session.confirmed(ch.publish_seq, call.ctx.rt.app.schedule_flush)
    finally:
        session.close()
    return json_response({"routed": routed})


# -- queues -----------------------------------------------------------------------------------------
def _queues(call: Call, vhosts: list) -> web.Response:
    node = call.node
    sampler = call.ctx.sampler
    records = [q for v in vhosts for q in v.queues.values()]

    def depth(r: Any) -> int:
        q = node.live_queue(r.vhost, r.name)
        return (len(q.ready) + q.unacked) if q else 0

    def ready(r: Any) -> int:
        q = node.live_queue(r.vhost, r.name)
        return len(q.ready) if q else 0

    def unacked(r: Any) -> int:
        q = node.live_queue(r.vhost, r.name)
        return q.unacked if q else 0

    def consumers(r: Any) -> int:
        q = node.live_queue(r.vhost, r.name)
        return len(q.consumers) if q else 0

    return respond_list(call.request, records, lambda r: queue(node, sampler, r),
                        name_of=lambda r: r.name,
                        sort_fast={"name": lambda r: r.name, "vhost": lambda r: r.vhost,
                                   "messages": depth, "messages_ready": ready,
                                   "messages_unacknowledged": unacked,
                                   "consumers": consumers, "durable": lambda r: r.durable,
                                   "type": lambda r: r.type})


async def _ask_leaders(call: Call, records: list) -> None:
    """Who leads, and which members are in sync, is the leaders' knowledge: ask those of the
    replicated queues not led by this node (briefly: a leader that does not answer in time
    leaves those fields as last known)."""
    quorum = getattr(call.ctx.rt.app, "quorum", None)
    if quorum is not None:
        await quorum.ops.refresh(records, REPLICA_STATUS_TIMEOUT_S)


@route("GET", "/api/queues")
async def list_queues(call: Call) -> web.Response:
    vhosts = call.visible_vhosts()
    await _ask_leaders(call, [q for v in vhosts for q in v.queues.values()])
    return _queues(call, vhosts)


@route("GET", "/api/queues/{vhost}")
async def list_vhost_queues(call: Call) -> web.Response:
    vhost = call.vhost()
    await _ask_leaders(call, list(vhost.queues.values()))
    return _queues(call, [vhost])


def _queue_record(call: Call) -> Any:
    q = call.vhost().queues.get(call.params["name"])
    if q is None:
        raise not_found()
    return q


@route("GET", "/api/queues/{vhost}/{name}")
async def get_queue(call: Call) -> web.Response:
    record = _queue_record(call)
    await _ask_leaders(call, [record])
    return json_response(queue_detail(call.node, call.ctx.sampler, record))


@route("PUT", "/api/queues/{vhost}/{name}")
async def put_queue(call: Call) -> web.Response:
    body = await read_object(call.request)
    v = _vhost_for_write(call)
    name = call.params["name"]
    existed = name in v.queues
    args = _args(body)
    qtype = body.get("type")
    if qtype is not None and "x-queue-type" not in args:
        args["x-queue-type"] = qtype
    method = C.Queue.Declare(queue=name, durable=_bool(body, "durable", False),
                             auto_delete=_bool(body, "auto_delete", False), arguments=args)
    await _run(call, v.name, lambda ch: ch.handle_queue_declare(method))
    return no_content() if existed else created()


@route("DELETE", "/api/queues/{vhost}/{name}")
async def delete_queue(call: Call) -> web.Response:
    q = _queue_record(call)
    query = call.request.query
    method = C.Queue.Delete(queue=q.name, if_unused=query.get("if-unused") == "true",
                            if_empty=query.get("if-empty") == "true")
    await _run(call, q.vhost, lambda ch: ch.handle_queue_delete(method))
    return no_content()


@route("DELETE", "/api/queues/{vhost}/{name}/contents")
async def purge_queue(call: Call) -> web.Response:
    q = _queue_record(call)
    await _run(call, q.vhost, lambda ch: ch.handle_queue_purge(C.Queue.Purge(queue=q.name)))
    return no_content()


@route("GET", "/api/queues/{vhost}/{name}/bindings")
async def queue_bindings(call: Call) -> web.Response:
    q = _queue_record(call)
    items = [b for b in bindings_of(call.vhost())
             if b["destination_type"] == "queue" and b["destination"] == q.name]
    return json_response(items)


def _message(entry: tuple, exchange_name: str, count: int, encoding: str,
             truncate: int | None) -> dict:
    msg = entry[1]
    body = bytes(msg.body or b"")
    size = len(body)
    if truncate is not None:
        body = body[:truncate]
    props = msg.properties
    # pamqp reports an absent cluster_id as "", every other absent property as None
    properties = {k: plain(getattr(props, k)) for k in PROPERTY_NAMES
                  if getattr(props, k, None) not in (None, "")}
    if encoding == "auto":
        try:
            text, enc = body.decode("utf-8"), "string"
        except UnicodeDecodeError:
            text, enc = base64.b64encode(body).decode(), "base64"
    else:
        text, enc = base64.b64encode(body).decode(), "base64"
    return {"payload_bytes": size, "redelivered": bool(entry[2]), "exchange": exchange_name,
            "routing_key": msg.routing_key, "message_count": count,
            "properties": properties, "payload": text, "payload_encoding": enc}


@route("POST", "/api/queues/{vhost}/{name}/get")
async def get_messages(call: Call) -> web.Response:
    body = await read_object(call.request)
    q = _queue_record(call)
    ackmode = body.get("ackmode")
    if ackmode not in ACKMODES:
        raise bad_request(f"ackmode must be one of {', '.join(ACKMODES)}, got {ackmode!r}")
    encoding = body.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise bad_request(f"encoding must be 'auto' or 'base64', got {encoding!r}")
    try:
        count = int(body.get("count", 1))
        truncate = int(body["truncate"]) if body.get("truncate") is not None else None
    except (TypeError, ValueError):
        raise bad_request("count and truncate must be integers") from None
    if count < 1:
        raise bad_request("count must be at least 1")
    session = _session(call, q.vhost)
    out: list[dict] = []
    try:
        ch = session.channel
        live = call.node.live_queue(q.vhost, q.name)
        for _ in range(count):
            before = ch.next_delivery_tag
            await finish(ch.handle_basic_get(C.Basic.Get(queue=q.name, no_ack=False)))
            if ch.next_delivery_tag == before:
                break  # get-empty
            _queue, entry, _ = ch.unacked[ch.next_delivery_tag]
            remaining = len(live.ready) if live is not None else 0
            out.append(_message(entry, entry[1].exchange, remaining, encoding, truncate))
        session.take_frames()
        if ch.unacked:
            if ackmode.startswith("ack_requeue_false"):
                ch.handle_ack(0, True)
            else:
                # requeue: back to their places, marked redelivered, as RabbitMQ does
                ch.handle_nack(0, True, ackmode.endswith("true"))
    finally:
        session.close()
    await call.ctx.synced()
    return json_response(out)


# -- bindings ---------------------------------------------------------------------------------------
@route("GET", "/api/bindings")
async def list_bindings(call: Call) -> web.Response:
    items = [b for v in call.visible_vhosts() for b in bindings_of(v)]
    return respond_list(call.request, items, lambda b: b)


@route("GET", "/api/bindings/{vhost}")
async def list_vhost_bindings(call: Call) -> web.Response:
    return respond_list(call.request, bindings_of(call.vhost()), lambda b: b)


def _ends(call: Call, kind: str) -> tuple[Any, str, str]:
    v = call.vhost()
    source = _xname(call.params["source"])
    if source not in v.exchanges:
        raise not_found()
    dest = call.params["dest"]
    table = v.queues if kind == "queue" else v.exchanges
    if dest not in table:
        raise not_found()
    return v, source, dest


def _pair(call: Call, kind: str) -> web.Response:
    v, source, dest = _ends(call, kind)
    return json_response([b for b in bindings_of(v) if b["source"] == source and
                          b["destination_type"] == kind and b["destination"] == dest])


async def _bind(call: Call, kind: str) -> web.Response:
    body = await read_object(call.request)
    v = call.vhost()
    source = _xname(call.params["source"])
    dest = call.params["dest"]
    routing_key = str(body.get("routing_key", ""))
    args = _args(body)
    method: Any
    if kind == "queue":
        method = C.Queue.Bind(queue=dest, exchange=source, routing_key=routing_key,
                              arguments=args)
        await _run(call, v.name, lambda ch: ch.handle_queue_bind(method))
    else:
        method = C.Exchange.Bind(destination=dest, source=source, routing_key=routing_key,
                                 arguments=args)
        await _run(call, v.name, lambda ch: ch.handle_exchange_bind(method))
    resp = created()
    resp.headers["Location"] = properties_key(routing_key, args)
    return resp


def _one(call: Call, kind: str) -> dict:
    v, source, dest = _ends(call, kind)
    for b in bindings_of(v):
        if (b["source"] == source and b["destination_type"] == kind and
                b["destination"] == dest and b["properties_key"] == call.params["props"]):
            return b
    raise not_found()


async def _unbind(call: Call, kind: str) -> web.Response:
    b = _one(call, kind)
    args = b["arguments"]
    v = call.vhost()
    if kind == "queue":
        method: Any = C.Queue.Unbind(queue=b["destination"], exchange=b["source"],
                                     routing_key=b["routing_key"], arguments=args)
        await _run(call, v.name, lambda ch: ch.handle_queue_unbind(method))
    else:
        method = C.Exchange.Unbind(destination=b["destination"], source=b["source"],
                                   routing_key=b["routing_key"], arguments=args)
        await _run(call, v.name, lambda ch: ch.handle_exchange_unbind(method))
    return no_content()


@route("GET", "/api/bindings/{vhost}/e/{source}/q/{dest}")
async def get_bindings_eq(call: Call) -> web.Response:
    return _pair(call, "queue")


@route("POST", "/api/bindings/{vhost}/e/{source}/q/{dest}")
async def post_binding_eq(call: Call) -> web.Response:
    return await _bind(call, "queue")


@route("GET", "/api/bindings/{vhost}/e/{source}/q/{dest}/{props}")
async def get_binding_eq(call: Call) -> web.Response:
    return json_response(_one(call, "queue"))


@route("DELETE", "/api/bindings/{vhost}/e/{source}/q/{dest}/{props}")
async def delete_binding_eq(call: Call) -> web.Response:
    return await _unbind(call, "queue")


@route("GET", "/api/bindings/{vhost}/e/{source}/e/{dest}")
async def get_bindings_ee(call: Call) -> web.Response:
    return _pair(call, "exchange")


@route("POST", "/api/bindings/{vhost}/e/{source}/e/{dest}")
async def post_binding_ee(call: Call) -> web.Response:
    return await _bind(call, "exchange")


@route("GET", "/api/bindings/{vhost}/e/{source}/e/{dest}/{props}")
async def get_binding_ee(call: Call) -> web.Response:
    return json_response(_one(call, "exchange"))


@route("DELETE", "/api/bindings/{vhost}/e/{source}/e/{dest}/{props}")
async def delete_binding_ee(call: Call) -> web.Response:
    return await _unbind(call, "exchange")


__all__ = ["ApiError", "binding"]
