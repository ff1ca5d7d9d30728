"""Connections, channels and consumers: what clients are doing right now.

Users without the monitoring tag see only their own connections and channels, and
consumers only in vhosts they may access, as in RabbitMQ. Closing a connection through the
API sends connection.close 320 CONNECTION_FORCED with the reason from the X-Reason header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..amqp.constants import CONNECTION_FORCED
from ..server.listing import connection_name
from .http import json_response, no_content, not_found, respond_list
from .render import channel, connection, consumer
from .router import Call, route

if TYPE_CHECKING:
    from ..core.connection import Connection


def _conns(call: Call) -> list[Connection]:
    return [c for c in call.node.connections.values()
            if call.sees_everything or c.user == call.user.name]


def _conn_list(call: Call, conns: list[Connection]) -> web.Response:
    node, sampler = call.node, call.ctx.sampler
    return respond_list(call.request, conns, lambda c: connection(node, sampler, c),
                        name_of=connection_name,
                        sort_fast={"name": connection_name, "user": lambda c: c.user,
                                   "vhost": lambda c: c.vhost_name,
                                   "channels": lambda c: len(c.channels)})


@route("GET", "/api/connections")
async def list_connections(call: Call) -> web.Response:
    return _conn_list(call, _conns(call))


@route("GET", "/api/vhosts/{vhost}/connections")
async def vhost_connections(call: Call) -> web.Response:
    v = call.vhost()
    return _conn_list(call, [c for c in _conns(call) if c.vhost_name == v.name])


def _conn(call: Call) -> Connection:
    name = call.params["name"]
    for c in _conns(call):
        if connection_name(c) == name:
            return c
    raise not_found()


@route("GET", "/api/connections/{name}")
async def get_connection(call: Call) -> web.Response:
    return json_response(connection(call.node, call.ctx.sampler, _conn(call)))


@route("DELETE", "/api/connections/{name}")
async def delete_connection(call: Call) -> web.Response:
    c = _conn(call)
    reason = call.request.headers.get("X-Reason", "Closed via management plugin")
    c.close(CONNECTION_FORCED, f"CONNECTION_FORCED - {reason}")
    call.ctx.rt.app.schedule_flush()
    return no_content()


def _channels(call: Call, conns: list[Connection]) -> list[Any]:
    return [ch for c in conns for ch in c.channels.values()]


def _channel_list(call: Call, chans: list[Any]) -> web.Response:
    node = call.node
    return respond_list(call.request, chans, lambda ch: channel(node, ch))


@route("GET", "/api/connections/{name}/channels")
async def connection_channels(call: Call) -> web.Response:
    return _channel_list(call, _channels(call, [_conn(call)]))


@route("GET", "/api/channels")
async def list_channels(call: Call) -> web.Response:
    return _channel_list(call, _channels(call, _conns(call)))


@route("GET", "/api/vhosts/{vhost}/channels")
async def vhost_channels(call: Call) -> web.Response:
    v = call.vhost()
    return _channel_list(call, _channels(call, [c for c in _conns(call)
                                                if c.vhost_name == v.name]))


@route("GET", "/api/channels/{name}")
async def get_channel(call: Call) -> web.Response:
    node = call.node
    for ch in _channels(call, _conns(call)):
        out = channel(node, ch)
        if out["name"] == call.params["name"]:
            out["consumer_details"] = [consumer(node, c) for c in ch.consumers.values()]
            out["deliveries"] = []
            out["publishes"] = []
            return json_response(out)
    raise not_found()


def _consumers(call: Call, vhosts: set[str]) -> web.Response:
    node = call.node
    items = [cons for c in node.connections.values() if c.vhost_name in vhosts
             for ch in c.channels.values() for cons in ch.consumers.values()]
    return json_response([consumer(node, cons) for cons in items])


@route("GET", "/api/consumers")
async def list_consumers(call: Call) -> web.Response:
    return _consumers(call, {v.name for v in call.visible_vhosts()})


@route("GET", "/api/consumers/{vhost}")
async def vhost_consumers(call: Call) -> web.Response:
    return _consumers(call, {call.vhost().name})
