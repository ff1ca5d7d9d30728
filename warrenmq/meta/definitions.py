"""RabbitMQ's definitions JSON, both ways: export the metadata, plan an import as commands.

`export` reads the state machine; `plan_import` validates a whole definitions document first
and turns it into metadata commands (vhosts, users, permissions, topic permissions, policies,
exchanges, queues, bindings, in that order) for the caller to propose one by one, so an
invalid file changes nothing and every change goes through the same log as any other.
Passwords given in clear text ("password") are hashed here, by the proposer, as the state
machine must stay deterministic. Entities that already exist are left as they are, except
users, whose password and tags are overwritten, as RabbitMQ's import does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..core.exchanges import EXCHANGE_TYPES
from . import policies
from .access import hash_password
from .records import PREDECLARED

if TYPE_CHECKING:
    from .machine import MetaMachine

# the RabbitMQ release whose definitions format this reads and writes
FORMAT_VERSION = "3.10.8"
HASHING_ALGORITHMS = ("rabbit_password_hashing_sha256", "rabbit_password_hashing_sha512",
                      "rabbit_password_hashing_md5")
_PREDECLARED_NAMES = {name for name, _type, _internal in PREDECLARED}


class DefinitionsError(ValueError):
    """The document is not valid definitions; the message names the entry and the problem."""


def export(meta: MetaMachine, product_version: str = "") -> dict:
    vhosts = sorted(meta.vhosts.values(), key=lambda v: v.name)
    out: dict[str, Any] = {
        "rabbit_version": FORMAT_VERSION,
        "rabbitmq_version": FORMAT_VERSION,
        "product_name": "WarrenMQ",
        "product_version": product_version,
        "users": [
            {"name": u.name, "password_hash": u.password_hash,
             "hashing_algorithm": u.hashing_algorithm, "tags": list(u.tags), "limits": {}}
            for u in sorted(meta.users.values(), key=lambda u: u.name)],
        "vhosts": [
            {"name": v.name, "limits": [],
             "metadata": {"description": v.description, "tags": list(v.tags)}}
            for v in vhosts],
        "permissions": [
            {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write,
             "read": p.read}
            for (user, vhost), p in sorted(meta.permissions.items())],
        "topic_permissions": [
            {"user": user, "vhost": vhost, "exchange": tp.exchange, "write": tp.write,
             "read": tp.read}
            for (user, vhost), per_x in sorted(meta.topic_permissions.items())
            for tp in sorted(per_x.values(), key=lambda t: t.exchange)],
        "parameters": [],
        "global_parameters": [],
        "policies": [
            {"vhost": p.vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
             "definition": dict(p.definition), "priority": p.priority}
            for v in vhosts for p in sorted(v.policies.values(), key=lambda p: p.name)],
        "queues": [],
        "exchanges": [],
        "bindings": [],
    }
    for v in vhosts:
        for q in sorted(v.queues.values(), key=lambda q: q.name):
            if q.exclusive_owner is not None:
                continue  # exclusive queues belong to a connection, not to the definitions
            out["queues"].append({"name": q.name, "vhost": v.name, "durable": q.durable,
                                  "auto_delete": q.auto_delete, "type": q.type,
                                  "arguments": dict(q.arguments)})
        for x in sorted(v.exchanges.values(), key=lambda x: x.name):
            if x.name in _PREDECLARED_NAMES:
                continue
            out["exchanges"].append({"name": x.name, "vhost": v.name, "type": x.type,
                                     "durable": x.durable, "auto_delete": x.auto_delete,
                                     "internal": x.internal, "arguments": dict(x.arguments)})
        for x in sorted(v.exchanges.values(), key=lambda x: x.name):
            for b in sorted(x.router.bindings, key=lambda b: (b.dest.kind, b.dest.name,
                                                              b.routing_key)):
                out["bindings"].append({
                    "source": x.name, "vhost": v.name, "destination": b.dest.name,
                    "destination_type": b.dest.kind, "routing_key": b.routing_key,
                    "arguments": dict(b.arguments or {})})
    return out


def _need(entry: Any, section: str, *keys: str) -> dict:
    if not isinstance(entry, dict):
        raise DefinitionsError(f"{section}: each entry must be an object, got {entry!r}")
    for key in keys:
        if key not in entry:
            raise DefinitionsError(f"{section}: entry {_label(entry)} has no '{key}'")
    return entry


def _label(entry: dict) -> str:
    name = entry.get("name", entry.get("user", entry.get("source", "?")))
    vhost = entry.get("vhost")
    return f"'{name}'" + (f" in vhost '{vhost}'" if vhost is not None else "")


def _regex(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DefinitionsError(f"{where}: expected a regular expression, got {value!r}")
    try:
        re.compile(value)
    except re.error as e:
        raise DefinitionsError(f"{where}: invalid regular expression {value!r}: {e}") from None
    return value


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(value)
    raise DefinitionsError(f"tags must be a list of strings or a comma-separated string, "
                           f"got {value!r}")


def plan_import(meta: MetaMachine, doc: Any) -> tuple[list[dict], list[str]]:
    """Validate a definitions document; return (commands to propose, notes for the operator)."""
    if not isinstance(doc, dict):
        raise DefinitionsError("definitions must be a JSON object")
    for section in ("users", "vhosts", "permissions", "topic_permissions", "policies",
                    "queues", "exchanges", "bindings", "parameters", "global_parameters"):
        if section in doc and not isinstance(doc[section], list):
            raise DefinitionsError(f"'{section}' must be a list")
    commands: list[dict] = []
    notes: list[str] = []
    vhosts = set(meta.vhosts)
    users = set(meta.users)

    for v in doc.get("vhosts", []):
        _need(v, "vhosts", "name")
        metadata = v.get("metadata") or {}
        commands.append({"op": "vhost.add", "name": v["name"],
                         "description": str(metadata.get("description") or
                                            v.get("description") or ""),
                         "tags": _tags(metadata.get("tags", v.get("tags", [])))})
        vhosts.add(v["name"])
    for u in doc.get("users", []):
        _need(u, "users", "name")
        algorithm = u.get("hashing_algorithm") or "rabbit_password_hashing_sha256"
        if algorithm not in HASHING_ALGORITHMS:
            raise DefinitionsError(f"users: user '{u['name']}' has unsupported "
                                   f"hashing_algorithm '{algorithm}'")
        if "password_hash" in u:
            password_hash = str(u["password_hash"])
        elif "password" in u:
            password_hash = hash_password(str(u["password"]))
            algorithm = "rabbit_password_hashing_sha256"
        else:
            raise DefinitionsError(f"users: user '{u['name']}' has neither 'password_hash' "
                                   "nor 'password'")
        commands.append({"op": "user.put", "name": u["name"], "password_hash": password_hash,
                         "hashing_algorithm": algorithm, "tags": _tags(u.get("tags", []))})
        users.add(u["name"])
    for p in doc.get("permissions", []):
        _need(p, "permissions", "user", "vhost", "configure", "write", "read")
        where = f"permissions for user '{p['user']}' in vhost '{p['vhost']}'"
        _known(p, users, vhosts, where)
        commands.append({"op": "permission.set", "user": p["user"], "vhost": p["vhost"],
                         "configure": _regex(p["configure"], where),
                         "write": _regex(p["write"], where), "read": _regex(p["read"], where)})
    for p in doc.get("topic_permissions", []):
        _need(p, "topic_permissions", "user", "vhost", "exchange", "write", "read")
        where = f"topic permissions for user '{p['user']}' in vhost '{p['vhost']}'"
        _known(p, users, vhosts, where)
        commands.append({"op": "topic_permission.set", "user": p["user"], "vhost": p["vhost"],
                         "exchange": p["exchange"], "write": _regex(p["write"], where),
                         "read": _regex(p["read"], where)})
    for p in doc.get("policies", []):
        _need(p, "policies", "vhost", "name", "pattern", "definition")
        if p["vhost"] not in vhosts:
            raise DefinitionsError(f"policies: policy {_label(p)}: no such vhost")
        apply_to = p.get("apply-to", "all")
        priority = p.get("priority", 0)
        try:
            policies.validate(p["pattern"], p["definition"], priority, apply_to)
        except policies.PolicyError as e:
            raise DefinitionsError(f"policies: policy {_label(p)}: {e}") from None
        commands.append({"op": "policy.set", "vhost": p["vhost"], "name": p["name"],
                         "pattern": p["pattern"], "definition": p["definition"],
                         "priority": priority, "apply_to": apply_to})
    exchanges: set[tuple[str, str]] = {(v.name, x) for v in meta.vhosts.values()
                                       for x in v.exchanges}
    exchanges.update((v, x) for v in vhosts for x in _PREDECLARED_NAMES)
    queues: set[tuple[str, str]] = {(v.name, q) for v in meta.vhosts.values() for q in v.queues}
    for x in doc.get("exchanges", []):
        _need(x, "exchanges", "name", "vhost", "type")
        if x["vhost"] not in vhosts:
            raise DefinitionsError(f"exchanges: exchange {_label(x)}: no such vhost")
        if x["type"] not in EXCHANGE_TYPES:
            raise DefinitionsError(f"exchanges: exchange {_label(x)} has unknown type "
                                   f"'{x['type']}'")
        if (x["vhost"], x["name"]) in exchanges:
            continue
        exchanges.add((x["vhost"], x["name"]))
        commands.append({"op": "exchange.declare", "vhost": x["vhost"], "name": x["name"],
                         "type": x["type"], "durable": bool(x.get("durable", True)),
                         "auto_delete": bool(x.get("auto_delete", False)),
                         "internal": bool(x.get("internal", False)),
                         "arguments": dict(x.get("arguments") or {})})
    for q in doc.get("queues", []):
        _need(q, "queues", "name", "vhost")
        if q["vhost"] not in vhosts:
            raise DefinitionsError(f"queues: queue {_label(q)}: no such vhost")
        if (q["vhost"], q["name"]) in queues:
            continue
        queues.add((q["vhost"], q["name"]))
        arguments = dict(q.get("arguments") or {})
        qtype = q.get("type") or arguments.get("x-queue-type") or "classic"
        if qtype not in ("classic", "quorum"):
            notes.append(f"queue '{q['name']}' in vhost '{q['vhost']}' is of type '{qtype}', "
                         "imported as declared; it is served as a classic queue until that "
                         "type is supported")
        commands.append({"op": "queue.declare", "vhost": q["vhost"], "name": q["name"],
                         "durable": bool(q.get("durable", True)), "exclusive_owner": None,
                         "auto_delete": bool(q.get("auto_delete", False)),
                         "arguments": arguments, "type": qtype})
    for b in doc.get("bindings", []):
        _need(b, "bindings", "source", "vhost", "destination", "destination_type")
        kind = b["destination_type"]
        if kind not in ("queue", "exchange"):
            raise DefinitionsError(f"bindings: destination_type must be 'queue' or "
                                   f"'exchange', got {kind!r}")
        if (b["vhost"], b["source"]) not in exchanges:
            raise DefinitionsError(f"bindings: no exchange '{b['source']}' in vhost "
                                   f"'{b['vhost']}'")
        known = queues if kind == "queue" else exchanges
        if (b["vhost"], b["destination"]) not in known:
            raise DefinitionsError(f"bindings: no {kind} '{b['destination']}' in vhost "
                                   f"'{b['vhost']}'")
        commands.append({"op": "binding.add", "vhost": b["vhost"], "source": b["source"],
                         "dest_kind": kind, "dest": b["destination"],
                         "routing_key": str(b.get("routing_key", "")),
                         "arguments": dict(b.get("arguments") or {})})
    skipped = len(doc.get("parameters", [])) + len(doc.get("global_parameters", []))
    if skipped:
        notes.append(f"{skipped} runtime parameter(s) skipped: WarrenMQ has no plugin that "
                     "uses them")
    return commands, notes


def _known(entry: dict, users: set[str], vhosts: set[str], where: str) -> None:
    if entry["user"] not in users:
        raise DefinitionsError(f"{where}: no such user")
    if entry["vhost"] not in vhosts:
        raise DefinitionsError(f"{where}: no such vhost")
