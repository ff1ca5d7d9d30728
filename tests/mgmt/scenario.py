"""One scenario of management API requests, run against RabbitMQ to record a fixture
(record_fixtures.py) and against WarrenMQ to compare (test_api_compat.py).

Each step records the status code and the *shape* of the JSON body: the keys of every
object (lists contribute the union of their items' shapes) and a type name for scalars, so
values may differ (names, counts, ports) while the structure must not. Error bodies are kept
whole (their "error" text is part of the contract).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .http import Api, Reply

MGR = ("sc-mgr", "mgrpw")  # tags: management
MON = ("sc-mon", "monpw")  # tags: monitoring
ADMIN = ("guest", "guest")
NOAUTH = (None, None)
BADPW = ("guest", "wrong")

V = "sc-vhost"
Q = "sc-q"
X = "sc-x"


@dataclass(frozen=True)
class Step:
    id: str
    method: str
    path: str
    body: Any = None
    who: tuple = ADMIN
    raw: bytes | None = None


STEPS: list[Step] = [
    # authentication and authorisation
    Step("overview-noauth", "GET", "/api/overview", who=NOAUTH),
    Step("overview-badpw", "GET", "/api/overview", who=BADPW),
    Step("overview", "GET", "/api/overview"),
    Step("whoami", "GET", "/api/whoami"),
    Step("put-user-mgr", "PUT", f"/api/users/{MGR[0]}",
         {"password": MGR[1], "tags": "management"}),
    Step("put-user-mgr-again", "PUT", f"/api/users/{MGR[0]}",
         {"password": MGR[1], "tags": "management"}),
    Step("put-user-mon", "PUT", f"/api/users/{MON[0]}", {"password": MON[1],
                                                         "tags": "monitoring"}),
    Step("put-user-no-password", "PUT", "/api/users/sc-nopw", {"tags": ""}),
    Step("get-user-mgr", "GET", f"/api/users/{MGR[0]}"),
    Step("users", "GET", "/api/users"),
    Step("permissions-mgr", "PUT", f"/api/permissions/%2F/{MGR[0]}",
         {"configure": ".*", "write": ".*", "read": ".*"}),
    Step("permissions-mon", "PUT", f"/api/permissions/%2F/{MON[0]}",
         {"configure": ".*", "write": ".*", "read": ".*"}),
    Step("get-permission", "GET", f"/api/permissions/%2F/{MGR[0]}"),
    Step("user-permissions", "GET", f"/api/users/{MGR[0]}/permissions"),
    Step("permissions", "GET", "/api/permissions"),
    Step("permission-bad-regex", "PUT", f"/api/permissions/%2F/{MGR[0]}",
         {"configure": "(", "write": ".*", "read": ".*"}),
    Step("mgr-whoami", "GET", "/api/whoami", who=MGR),
    Step("mgr-overview", "GET", "/api/overview", who=MGR),
    Step("mgr-create-user", "PUT", "/api/users/sc-evil", {"password": "x", "tags": ""},
         who=MGR),
    Step("mgr-list-users", "GET", "/api/users", who=MGR),
    Step("mgr-nodes", "GET", "/api/nodes", who=MGR),
    Step("mgr-queues", "GET", "/api/queues", who=MGR),
    Step("mgr-vhosts", "GET", "/api/vhosts", who=MGR),
    Step("mgr-definitions", "GET", "/api/definitions", who=MGR),
    Step("mgr-put-policy", "PUT", "/api/policies/%2F/sc-evil",
         {"pattern": ".*", "definition": {"max-length": 1}}, who=MGR),
    Step("mon-nodes", "GET", "/api/nodes", who=MON),
    Step("mon-create-vhost", "PUT", "/api/vhosts/sc-evil", who=MON),
    # vhosts
    Step("put-vhost", "PUT", f"/api/vhosts/{V}", {"description": "scenario"}),
    Step("put-vhost-again", "PUT", f"/api/vhosts/{V}", {"description": "scenario"}),
    Step("get-vhost", "GET", f"/api/vhosts/{V}"),
    Step("vhosts", "GET", "/api/vhosts"),
    Step("get-vhost-missing", "GET", "/api/vhosts/sc-missing"),
    # nodes
    Step("nodes", "GET", "/api/nodes"),
    Step("node", "GET", "/api/nodes/{node}"),
    Step("node-missing", "GET", "/api/nodes/nobody@nowhere"),
    # exchanges
    Step("exchanges", "GET", "/api/exchanges"),
    Step("exchanges-vhost", "GET", "/api/exchanges/%2F"),
    Step("exchange-amq-direct", "GET", "/api/exchanges/%2F/amq.direct"),
    Step("put-exchange", "PUT", f"/api/exchanges/%2F/{X}",
         {"type": "direct", "durable": True, "auto_delete": False, "internal": False,
          "arguments": {}}),
    Step("put-exchange-again", "PUT", f"/api/exchanges/%2F/{X}", {"type": "direct"}),
    Step("put-exchange-other-type", "PUT", f"/api/exchanges/%2F/{X}", {"type": "fanout"}),
    Step("put-exchange-bad-type", "PUT", "/api/exchanges/%2F/sc-bad", {"type": "nonsense"}),
    Step("put-exchange-no-vhost", "PUT", f"/api/exchanges/sc-missing/{X}", {"type": "direct"}),
    Step("put-exchange-amq", "PUT", "/api/exchanges/%2F/amq.sc", {"type": "direct"}),
    Step("get-exchange", "GET", f"/api/exchanges/%2F/{X}"),
    Step("get-exchange-missing", "GET", "/api/exchanges/%2F/sc-missing"),
    Step("put-exchange-bad-json", "PUT", f"/api/exchanges/%2F/{X}", raw=b"{not json"),
    # queues
    Step("put-queue", "PUT", f"/api/queues/%2F/{Q}",
         {"durable": True, "auto_delete": False, "arguments": {"x-max-length": 100}}),
    Step("put-queue-again", "PUT", f"/api/queues/%2F/{Q}",
         {"durable": True, "auto_delete": False, "arguments": {"x-max-length": 100}}),
    Step("put-queue-inequivalent", "PUT", f"/api/queues/%2F/{Q}", {"durable": False}),
    Step("put-queue-bad-arg", "PUT", "/api/queues/%2F/sc-bad",
         {"arguments": {"x-max-length": "lots"}}),
    Step("put-queue-no-vhost", "PUT", f"/api/queues/sc-missing/{Q}", {}),
    Step("get-queue", "GET", f"/api/queues/%2F/{Q}"),
    Step("get-queue-missing", "GET", "/api/queues/%2F/sc-missing"),
    Step("queues", "GET", "/api/queues"),
    Step("queues-vhost", "GET", "/api/queues/%2F"),
    Step("queues-no-vhost", "GET", "/api/queues/sc-missing"),
    Step("queues-page", "GET", "/api/queues?page=1&page_size=2&name=sc&sort=name"),
    Step("queues-page-regex", "GET",
         "/api/queues?page=1&page_size=100&name=%5Esc-&use_regex=true&sort=name&sort_reverse=true"),
    Step("queues-page-too-big", "GET", "/api/queues?page=1&page_size=1000"),
    Step("queues-page-bad", "GET", "/api/queues?page=x"),
    Step("queues-columns", "GET", "/api/queues?columns=name,vhost,messages"),
    # bindings
    Step("post-binding", "POST", f"/api/bindings/%2F/e/{X}/q/{Q}",
         {"routing_key": "k", "arguments": {}}),
    Step("post-binding-missing-q", "POST", f"/api/bindings/%2F/e/{X}/q/sc-missing",
         {"routing_key": "k"}),
    Step("get-bindings-eq", "GET", f"/api/bindings/%2F/e/{X}/q/{Q}"),
    Step("get-binding", "GET", f"/api/bindings/%2F/e/{X}/q/{Q}/k"),
    Step("get-binding-missing", "GET", f"/api/bindings/%2F/e/{X}/q/{Q}/nokey"),
    Step("queue-bindings", "GET", f"/api/queues/%2F/{Q}/bindings"),
    Step("exchange-bindings-source", "GET", f"/api/exchanges/%2F/{X}/bindings/source"),
    Step("exchange-bindings-destination", "GET",
         "/api/exchanges/%2F/amq.fanout/bindings/destination"),
    Step("post-binding-e2e", "POST", f"/api/bindings/%2F/e/amq.fanout/e/{X}", {}),
    Step("get-bindings-ee", "GET", f"/api/bindings/%2F/e/amq.fanout/e/{X}"),
    Step("bindings", "GET", "/api/bindings"),
    Step("bindings-vhost", "GET", "/api/bindings/%2F"),
    # publish, get, purge
    Step("publish", "POST", f"/api/exchanges/%2F/{X}/publish",
         {"properties": {"delivery_mode": 2, "headers": {"h": "v"}}, "routing_key": "k",
          "payload": "hello", "payload_encoding": "string"}),
    Step("publish-unroutable", "POST", f"/api/exchanges/%2F/{X}/publish",
         {"properties": {}, "routing_key": "nowhere", "payload": "x",
          "payload_encoding": "string"}),
    Step("publish-base64", "POST", "/api/exchanges/%2F/amq.default/publish",
         {"properties": {}, "routing_key": Q, "payload": "aGk=", "payload_encoding": "base64"}),
    Step("publish-missing-field", "POST", f"/api/exchanges/%2F/{X}/publish",
         {"routing_key": "k"}),
    Step("publish-missing-exchange", "POST", "/api/exchanges/%2F/sc-missing/publish",
         {"properties": {}, "routing_key": "k", "payload": "x", "payload_encoding": "string"}),
    Step("get-messages", "POST", f"/api/queues/%2F/{Q}/get",
         {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
    Step("get-messages-bad-ackmode", "POST", f"/api/queues/%2F/{Q}/get",
         {"count": 1, "ackmode": "nonsense", "encoding": "auto"}),
    Step("get-messages-consume", "POST", f"/api/queues/%2F/{Q}/get",
         {"count": 5, "ackmode": "ack_requeue_false", "encoding": "base64", "truncate": 50000}),
    Step("purge", "DELETE", f"/api/queues/%2F/{Q}/contents"),
    # connections, channels, consumers (the scenario's AMQP client is connected)
    Step("connections", "GET", "/api/connections"),
    Step("connection", "GET", "/api/connections/{conn}"),
    Step("connection-missing", "GET", "/api/connections/nothing"),
    Step("connection-channels", "GET", "/api/connections/{conn}/channels"),
    Step("vhost-connections", "GET", "/api/vhosts/%2F/connections"),
    Step("channels", "GET", "/api/channels"),
    Step("consumers", "GET", "/api/consumers"),
    Step("consumers-vhost", "GET", "/api/consumers/%2F"),
    # policies
    Step("put-policy", "PUT", "/api/policies/%2F/sc-policy",
         {"pattern": "^sc-", "definition": {"max-length": 1000}, "priority": 1,
          "apply-to": "queues"}),
    Step("put-policy-bad", "PUT", "/api/policies/%2F/sc-bad-policy",
         {"pattern": "^sc-", "definition": {"max-length": "x"}}),
    Step("put-policy-unknown-key", "PUT", "/api/policies/%2F/sc-bad-policy",
         {"pattern": "^sc-", "definition": {"no-such-key": 1}}),
    Step("policies", "GET", "/api/policies"),
    Step("policies-vhost", "GET", "/api/policies/%2F"),
    Step("get-policy", "GET", "/api/policies/%2F/sc-policy"),
    Step("delete-policy", "DELETE", "/api/policies/%2F/sc-policy"),
    Step("delete-policy-missing", "DELETE", "/api/policies/%2F/sc-policy"),
    # definitions
    Step("definitions", "GET", "/api/definitions"),
    Step("definitions-vhost", "GET", "/api/definitions/%2F"),
    Step("post-definitions", "POST", "/api/definitions",
         {"queues": [{"name": "sc-def-q", "vhost": "/", "durable": True,
                      "auto_delete": False, "arguments": {}}]}),
    Step("post-definitions-bad", "POST", "/api/definitions", raw=b"[1, 2"),
    # health
    Step("aliveness", "GET", "/api/aliveness-test/%2F"),
    Step("aliveness-missing", "GET", "/api/aliveness-test/sc-missing"),
    Step("health-alarms", "GET", "/api/health/checks/alarms"),
    Step("health-local-alarms", "GET", "/api/health/checks/local-alarms"),
    Step("health-port", "GET", "/api/health/checks/port-listener/{amqp_port}"),
    Step("health-port-closed", "GET", "/api/health/checks/port-listener/1"),
    Step("health-vhosts", "GET", "/api/health/checks/virtual-hosts"),
    # deletions
    Step("delete-binding", "DELETE", f"/api/bindings/%2F/e/{X}/q/{Q}/k"),
    Step("delete-queue", "DELETE", f"/api/queues/%2F/{Q}"),
    Step("delete-queue-missing", "DELETE", f"/api/queues/%2F/{Q}"),
    Step("delete-def-queue", "DELETE", "/api/queues/%2F/sc-def-q"),
    Step("delete-exchange", "DELETE", f"/api/exchanges/%2F/{X}"),
    Step("delete-exchange-missing", "DELETE", f"/api/exchanges/%2F/{X}"),
    Step("delete-vhost", "DELETE", f"/api/vhosts/{V}"),
    Step("delete-vhost-missing", "DELETE", f"/api/vhosts/{V}"),
    Step("delete-user-mgr", "DELETE", f"/api/users/{MGR[0]}"),
    Step("delete-user-mon", "DELETE", f"/api/users/{MON[0]}"),
    Step("delete-user-nopw", "DELETE", "/api/users/sc-nopw"),
    Step("delete-user-missing", "DELETE", f"/api/users/{MGR[0]}"),
    Step("not-found-path", "GET", "/api/no-such-thing"),
]


def shape(value: Any) -> Any:
    """The structure of a JSON value: objects keep their keys, lists merge their items."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        merged: Any = None
        for item in value:
            merged = merge(merged, shape(item))
        return [merged] if merged is not None else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "string"


def merge(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out.get(k), v)
        return out
    if isinstance(a, list) and isinstance(b, list):
        return [merge(a[0] if a else None, b[0] if b else None)] if (a or b) else []
    return a


def record(reply: Reply) -> dict:
    out: dict[str, Any] = {"status": reply.status}
    if reply.body is not None:
        out["shape"] = shape(reply.body)
        if reply.status >= 400 and isinstance(reply.body, dict):
            out["body"] = reply.body
    return out


def run(api: Api, placeholders: dict[str, str]) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for step in STEPS:
        user, password = step.who
        path = step.path.format(**placeholders)
        reply = api.as_user(user, password).call(step.method, path, step.body, raw=step.raw)
        results[step.id] = record(reply)
    return results


def dump(doc: Any) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"
