"""Virtual hosts, users, permissions, topic permissions, policies and definitions.

Changes are metadata commands proposed to the node (the same commands warrenctl's handlers
propose), and the reply waits until they are on disk. Deleting a user or a vhost closes its
connections first, as RabbitMQ does.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from .. import __version__
from ..amqp.constants import CONNECTION_FORCED
from ..amqp.errors import AMQPError
from ..meta import definitions, policies
from ..meta.access import hash_password
from ..server.metalog import wait
from .http import (
    ApiError,
    bad_request,
    created,
    json_response,
    no_content,
    not_found,
    read_json,
    read_object,
    respond_list,
)
from .render import permission, policy, user, vhost
from .router import Call, amqp_error, route


async def propose(call: Call, command: dict) -> Any:
    try:
        return await wait(call.node.propose(command))
    except AMQPError as e:
        raise amqp_error(e) from None


def close_connections(call: Call, match: Any, reason: str) -> None:
    for conn in list(call.node.connections.values()):
        if match(conn):
            conn.close(CONNECTION_FORCED, f"CONNECTION_FORCED - {reason}")
    call.ctx.rt.app.schedule_flush()


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(value)
    raise bad_request("tags must be a comma-separated string or a list of strings")


def _regex(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise bad_request(f"'{key}' must be a string (a regular expression)")
    try:
        re.compile(value)
    except re.error as e:
        raise bad_request(f"invalid regular expression for '{key}' {value!r}: {e}") from None
    return value


# -- vhosts -----------------------------------------------------------------------------------------
@route("GET", "/api/vhosts")
async def list_vhosts(call: Call) -> web.Response:
    node = call.node
    return respond_list(call.request, call.visible_vhosts(), lambda v: vhost(node, v),
                        name_of=lambda v: v.name, sort_fast={"name": lambda v: v.name})


@route("GET", "/api/vhosts/{vhost}")
async def get_vhost(call: Call) -> web.Response:
    return json_response(vhost(call.node, call.vhost()))


@route("PUT", "/api/vhosts/{vhost}", tag="administrator")
async def put_vhost(call: Call) -> web.Response:
    body = await read_object(call.request)
    name = call.params["vhost"]
    if not name:
        raise bad_request("virtual host name must not be empty")
    existed = name in call.node.meta.vhosts
    await propose(call, {"op": "vhost.add", "name": name,
                         "description": str(body.get("description", "")),
                         "tags": _tags(body.get("tags"))})
    return no_content() if existed else created()


@route("DELETE", "/api/vhosts/{vhost}", tag="administrator")
async def delete_vhost(call: Call) -> web.Response:
    name = call.params["vhost"]
    if name not in call.node.meta.vhosts:
        raise not_found()
    close_connections(call, lambda c: c.vhost_name == name, f"vhost '{name}' is deleted")
    await propose(call, {"op": "vhost.delete", "name": name})
    return no_content()


@route("GET", "/api/vhosts/{vhost}/permissions", tag="administrator")
async def vhost_permissions(call: Call) -> web.Response:
    v = call.vhost()
    return json_response([permission(u, vh, p) for (u, vh), p in
                          sorted(call.node.meta.permissions.items()) if vh == v.name])


# -- users ------------------------------------------------------------------------------------------
@route("GET", "/api/users", tag="administrator")
async def list_users(call: Call) -> web.Response:
    return respond_list(call.request, list(call.node.meta.users.values()), user,
                        name_of=lambda u: u.name, sort_fast={"name": lambda u: u.name})


@route("GET", "/api/users/without-permissions", tag="administrator")
async def users_without_permissions(call: Call) -> web.Response:
    with_perms = {u for u, _ in call.node.meta.permissions}
    return json_response([user(u) for u in call.node.meta.users.values()
                          if u.name not in with_perms])


@route("GET", "/api/users/{user}", tag="administrator")
async def get_user(call: Call) -> web.Response:
    u = call.node.meta.users.get(call.params["user"])
    if u is None:
        raise not_found()
    return json_response(user(u))


@route("PUT", "/api/users/{user}", tag="administrator")
async def put_user(call: Call) -> web.Response:
    body = await read_object(call.request)
    name = call.params["user"]
    if not name:
        raise bad_request("user name must not be empty")
    existing = call.node.meta.users.get(name)
    tags = _tags(body.get("tags"))
    algorithm = "rabbit_password_hashing_sha256"
    if "password" in body:
        if not isinstance(body["password"], str):
            raise bad_request("password must be a string")
        password_hash = hash_password(body["password"])
    elif "password_hash" in body:
        password_hash = str(body["password_hash"])
        algorithm = str(body.get("hashing_algorithm") or algorithm)
        if algorithm not in definitions.HASHING_ALGORITHMS:
            raise bad_request(f"unsupported hashing_algorithm {algorithm!r}")
    elif existing is not None:
        password_hash, algorithm = existing.password_hash, existing.hashing_algorithm
    else:
        password_hash = ""  # a user who cannot log in with a password, as in RabbitMQ
    await propose(call, {"op": "user.put", "name": name, "password_hash": password_hash,
                         "tags": tags, "hashing_algorithm": algorithm})
    return no_content() if existing is not None else created()


async def _delete_user(call: Call, name: str) -> None:
    close_connections(call, lambda c: c.user == name, f"user '{name}' was deleted")
    await propose(call, {"op": "user.delete", "name": name})


@route("DELETE", "/api/users/{user}", tag="administrator")
async def delete_user(call: Call) -> web.Response:
    name = call.params["user"]
    if name not in call.node.meta.users:
        raise not_found()
    await _delete_user(call, name)
    return no_content()


@route("POST", "/api/users/bulk-delete", tag="administrator")
async def bulk_delete_users(call: Call) -> web.Response:
    body = await read_object(call.request)
    names = body.get("users")
    if not isinstance(names, list):
        raise bad_request("'users' must be a list of user names")
    for name in names:
        if name in call.node.meta.users:
            await _delete_user(call, name)
    return no_content()


@route("GET", "/api/users/{user}/permissions", tag="administrator")
async def user_permissions(call: Call) -> web.Response:
    name = call.params["user"]
    if name not in call.node.meta.users:
        raise not_found()
    return json_response([permission(u, v, p) for (u, v), p in
                          sorted(call.node.meta.permissions.items()) if u == name])


@route("GET", "/api/users/{user}/topic-permissions", tag="administrator")
async def user_topic_permissions(call: Call) -> web.Response:
    name = call.params["user"]
    if name not in call.node.meta.users:
        raise not_found()
    return json_response(_topic_rows(call, lambda u, v: u == name))


# -- permissions ------------------------------------------------------------------------------------
@route("GET", "/api/permissions", tag="administrator")
async def list_permissions(call: Call) -> web.Response:
    return json_response([permission(u, v, p)
                          for (u, v), p in sorted(call.node.meta.permissions.items())])


def _user_and_vhost(call: Call) -> tuple[str, str]:
    u, v = call.params["user"], call.params["vhost"]
    if v not in call.node.meta.vhosts or u not in call.node.meta.users:
        raise not_found()
    return u, v


@route("GET", "/api/permissions/{vhost}/{user}", tag="administrator")
async def get_permission(call: Call) -> web.Response:
    u, v = _user_and_vhost(call)
    p = call.node.meta.permissions.get((u, v))
    if p is None:
        raise not_found()
    return json_response(permission(u, v, p))


@route("PUT", "/api/permissions/{vhost}/{user}", tag="administrator")
async def put_permission(call: Call) -> web.Response:
    body = await read_object(call.request)
    u, v = _user_and_vhost(call)
    existed = (u, v) in call.node.meta.permissions
    await propose(call, {"op": "permission.set", "user": u, "vhost": v,
                         "configure": _regex(body, "configure"),
                         "write": _regex(body, "write"), "read": _regex(body, "read")})
    return no_content() if existed else created()


@route("DELETE", "/api/permissions/{vhost}/{user}", tag="administrator")
async def delete_permission(call: Call) -> web.Response:
    u, v = _user_and_vhost(call)
    if (u, v) not in call.node.meta.permissions:
        raise not_found()
    await propose(call, {"op": "permission.clear", "user": u, "vhost": v})
    return no_content()


def _topic_rows(call: Call, match: Any) -> list[dict]:
    return [{"user": u, "vhost": v, "exchange": tp.exchange, "write": tp.write,
             "read": tp.read}
            for (u, v), per_x in sorted(call.node.meta.topic_permissions.items())
            if match(u, v) for tp in per_x.values()]


@route("GET", "/api/topic-permissions", tag="administrator")
async def list_topic_permissions(call: Call) -> web.Response:
    return json_response(_topic_rows(call, lambda u, v: True))


@route("GET", "/api/topic-permissions/{vhost}/{user}", tag="administrator")
async def get_topic_permissions(call: Call) -> web.Response:
    u, v = _user_and_vhost(call)
    rows = _topic_rows(call, lambda uu, vv: (uu, vv) == (u, v))
    if not rows:
        raise not_found()
    return json_response(rows)


@route("PUT", "/api/topic-permissions/{vhost}/{user}", tag="administrator")
async def put_topic_permissions(call: Call) -> web.Response:
    body = await read_object(call.request)
    u, v = _user_and_vhost(call)
    exchange = body.get("exchange")
    if not isinstance(exchange, str) or not exchange:
        raise bad_request("'exchange' must name a topic exchange")
    existed = exchange in call.node.meta.topic_permissions.get((u, v), {})
    await propose(call, {"op": "topic_permission.set", "user": u, "vhost": v,
                         "exchange": exchange, "write": _regex(body, "write"),
                         "read": _regex(body, "read")})
    return no_content() if existed else created()


@route("DELETE", "/api/topic-permissions/{vhost}/{user}", tag="administrator")
async def delete_topic_permissions(call: Call) -> web.Response:
    u, v = _user_and_vhost(call)
    if (u, v) not in call.node.meta.topic_permissions:
        raise not_found()
    await propose(call, {"op": "topic_permission.clear", "user": u, "vhost": v})
    return no_content()


# -- policies ---------------------------------------------------------------------------------------
@route("GET", "/api/policies", tag="policymaker")
async def list_policies(call: Call) -> web.Response:
    items = [p for v in call.visible_vhosts()
             for p in policies.sorted_for_listing(list(v.policies.values()))]
    return json_response([policy(p) for p in items])


@route("GET", "/api/policies/{vhost}", tag="policymaker")
async def list_vhost_policies(call: Call) -> web.Response:
    v = call.vhost()
    return json_response([policy(p) for p in
                          policies.sorted_for_listing(list(v.policies.values()))])


@route("GET", "/api/policies/{vhost}/{name}", tag="policymaker")
async def get_policy(call: Call) -> web.Response:
    p = call.vhost().policies.get(call.params["name"])
    if p is None:
        raise not_found()
    return json_response(policy(p))


@route("PUT", "/api/policies/{vhost}/{name}", tag="policymaker")
async def put_policy(call: Call) -> web.Response:
    body = await read_object(call.request)
    v = call.vhost()
    name = call.params["name"]
    pattern = body.get("pattern")
    definition = body.get("definition")
    priority = body.get("priority", 0)
    apply_to = body.get("apply-to", "all")
    try:
        policies.validate(pattern, definition, priority, apply_to)
    except policies.PolicyError as e:
        raise bad_request(f"Validation failed\n\n{e}\n") from None
    existed = name in v.policies
    await propose(call, {"op": "policy.set", "vhost": v.name, "name": name,
                         "pattern": pattern, "definition": definition,
                         "priority": priority, "apply_to": apply_to})
    return no_content() if existed else created()


@route("DELETE", "/api/policies/{vhost}/{name}", tag="policymaker")
async def delete_policy(call: Call) -> web.Response:
    v = call.vhost()
    if call.params["name"] not in v.policies:
        raise not_found()
    await propose(call, {"op": "policy.clear", "vhost": v.name, "name": call.params["name"]})
    return no_content()


# -- definitions ------------------------------------------------------------------------------------
def _attachment(call: Call, doc: dict, filename: str) -> web.Response:
    resp = json_response(doc)
    if call.request.query.get("download"):
        resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


@route("GET", "/api/definitions", tag="administrator")
async def get_definitions(call: Call) -> web.Response:
    return _attachment(call, definitions.export(call.node.meta, __version__),
                       "warrenmq-definitions.json")


VHOST_SECTIONS = ("queues", "exchanges", "bindings", "policies")


@route("GET", "/api/definitions/{vhost}", tag="administrator")
async def get_vhost_definitions(call: Call) -> web.Response:
    v = call.vhost()
    full = definitions.export(call.node.meta, __version__)
    doc: dict[str, Any] = {"rabbit_version": full["rabbit_version"],
                           "rabbitmq_version": full["rabbitmq_version"],
                           "product_name": full["product_name"],
                           "product_version": full["product_version"], "parameters": []}
    for section in VHOST_SECTIONS:
        doc[section] = [{k: val for k, val in e.items() if k != "vhost"}
                        for e in full[section] if e.get("vhost") == v.name]
    return _attachment(call, doc, f"warrenmq-definitions-{v.name}.json")


async def _import(call: Call, doc: Any) -> web.Response:
    try:
        commands, _notes = definitions.plan_import(call.node.meta, doc)
    except definitions.DefinitionsError as e:
        raise bad_request(str(e)) from None
    pending = [(command, call.node.propose(call.node.placed(command)))
               for command in commands]
    for command, p in pending:
        try:
            await wait(p)
        except AMQPError as e:
            raise ApiError(400, "bad_request", f"import stopped at {command['op']}: "
                           f"{e.text}") from None
    return no_content()


async def _definitions_body(call: Call) -> Any:
    try:
        return await read_json(call.request)
    except ApiError:
        raise bad_request("failed_to_parse_json") from None


@route("POST", "/api/definitions", tag="administrator")
async def post_definitions(call: Call) -> web.Response:
    return await _import(call, await _definitions_body(call))


@route("POST", "/api/definitions/{vhost}", tag="administrator")
async def post_vhost_definitions(call: Call) -> web.Response:
    v = call.vhost()
    doc = await _definitions_body(call)
    if not isinstance(doc, dict):
        raise bad_request("definitions must be a JSON object")
    scoped = {s: [dict(e, vhost=v.name) if isinstance(e, dict) else e
                  for e in doc.get(s) or []] for s in VHOST_SECTIONS}
    return await _import(call, scoped)
