"""The metadata state machine: `apply(command) -> (reply, effects)`.

Commands are plain dicts with an "op" (they will travel through a Raft log as msgpack), and
`apply` is deterministic: no clock, no randomness, no I/O; anything random (a password salt,
a server-generated queue name) is decided by the proposer and carried in the command.
Preconditions that depend on live state (a queue's message count, its consumers) are checked
by the caller before proposing. A command that can no longer apply returns an `AMQPError` as
its reply instead of raising, so every replica stays in step.

Effects tell the node what to do outside the metadata: ("queue.created", record),
("queue.deleted", record), ("exchange.deleted", record), ("policy.changed", vhost name) and
("members.changed", None),
("queue.members", record).

The cluster's members are metadata too: `members` maps each node name to its Raft id; the
shell keeps the metadata group's voters and its links in step with it.
"""

from __future__ import annotations

from typing import Any

from ..amqp.constants import NOT_FOUND, PRECONDITION_FAILED
from ..amqp.errors import AMQPError
from ..core.exchanges.base import Dest, make_binding
from .records import (
    PREDECLARED,
    ExchangeRecord,
    Permission,
    Policy,
    QueueRecord,
    TopicPermission,
    User,
    VHost,
)

Effects = list[tuple[str, Any]]


class MetaMachine:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.vhosts: dict[str, VHost] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}
        # (user, vhost) -> exchange -> topic permission
        self.topic_permissions: dict[tuple[str, str], dict[str, TopicPermission]] = {}
        self.members: dict[str, int] = {}  # node name -> Raft node id
        self.cluster_name = ""
        self.applied_index = 0

    # -- the single entry point -------------------------------------------------------------
    def apply(self, command: dict) -> tuple[Any, Effects]:
        self.applied_index += 1
        handler = getattr(self, "_" + command["op"].replace(".", "_"))
        effects: Effects = []
        reply = handler(command, effects)
        return reply, effects

    def snapshot_extra(self) -> list[dict]:
        """Commands rebuilding what the journal's generic snapshot does not cover: hashing
        algorithms (user.put overwrites the user.add before it), topic permissions, policies."""
        out: list[dict] = [
            {"op": "member.add", "name": name, "id": node_id}
            for name, node_id in self.members.items()]
        if self.cluster_name:
            out.append({"op": "cluster_name.set", "name": self.cluster_name})
        out += [
            {"op": "user.put", "name": u.name, "password_hash": u.password_hash,
             "tags": list(u.tags), "hashing_algorithm": u.hashing_algorithm}
            for u in self.users.values()]
        for (user, vhost), per_exchange in self.topic_permissions.items():
            out += [{"op": "topic_permission.set", "user": user, "vhost": vhost,
                     "exchange": tp.exchange, "write": tp.write, "read": tp.read}
                    for tp in per_exchange.values()]
        for v in self.vhosts.values():
            out += [{"op": "policy.set", "vhost": v.name, "name": p.name, "pattern": p.pattern,
                     "definition": dict(p.definition), "priority": p.priority,
                     "apply_to": p.apply_to} for p in v.policies.values()]
        return out

    # -- cluster members --------------------------------------------------------------------
    def _member_add(self, c: dict, fx: Effects) -> Any:
        self.members[c["name"]] = int(c["id"])
        if c.get("cluster_name") and not self.cluster_name:
            self.cluster_name = c["cluster_name"]
        fx.append(("members.changed", None))
        return dict(self.members)

    def _member_remove(self, c: dict, fx: Effects) -> Any:
        if self.members.pop(c["name"], None) is None:
            return AMQPError(NOT_FOUND, f"node {c['name']} is not a member of the cluster")
        fx.append(("members.changed", None))
        return dict(self.members)

    def _cluster_name_set(self, c: dict, fx: Effects) -> Any:  # noqa: ARG002
        self.cluster_name = c["name"]
        return self.cluster_name

    # -- users, vhosts, permissions ---------------------------------------------------------
    def _user_add(self, c: dict, fx: Effects) -> Any:
        if c["name"] in self.users:
            return AMQPError(PRECONDITION_FAILED, f"user '{c['name']}' already exists")
        self.users[c["name"]] = User(c["name"], c["password_hash"], list(c.get("tags", [])),
                                     c.get("hashing_algorithm", "rabbit_password_hashing_sha256"))
        return None

    def _user_put(self, c: dict, fx: Effects) -> Any:
        """Create or overwrite a user (definitions import does this, as RabbitMQ's does)."""
        self.users[c["name"]] = User(c["name"], c["password_hash"], list(c.get("tags", [])),
                                     c.get("hashing_algorithm", "rabbit_password_hashing_sha256"))
        return None

    def _user_delete(self, c: dict, fx: Effects) -> Any:
        if self.users.pop(c["name"], None) is None:
            return AMQPError(NOT_FOUND, f"no user '{c['name']}'")
        for key in [k for k in self.permissions if k[0] == c["name"]]:
            del self.permissions[key]
        for key in [k for k in self.topic_permissions if k[0] == c["name"]]:
            del self.topic_permissions[key]
        return None

    def _user_set_password(self, c: dict, fx: Effects) -> Any:
        user = self.users.get(c["name"])
        if user is None:
            return AMQPError(NOT_FOUND, f"no user '{c['name']}'")
        user.password_hash = c["password_hash"]
        user.hashing_algorithm = c.get("hashing_algorithm", "rabbit_password_hashing_sha256")
        return None

    def _user_set_tags(self, c: dict, fx: Effects) -> Any:
        user = self.users.get(c["name"])
        if user is None:
            return AMQPError(NOT_FOUND, f"no user '{c['name']}'")
        user.tags = list(c["tags"])
        return None

    def _vhost_add(self, c: dict, fx: Effects) -> Any:
        name = c["name"]
        if name in self.vhosts:
            return None
        vhost = VHost(name, c.get("description", ""), list(c.get("tags", [])))
        for xname, xtype, internal in PREDECLARED:
            vhost.exchanges[xname] = ExchangeRecord(name, xname, xtype, True, False, internal)
        self.vhosts[name] = vhost
        return None

    def _vhost_delete(self, c: dict, fx: Effects) -> Any:
        vhost = self.vhosts.pop(c["name"], None)
        if vhost is None:
            return AMQPError(NOT_FOUND, f"no vhost '{c['name']}'")
        for q in vhost.queues.values():
            fx.append(("queue.deleted", q))
        for x in vhost.exchanges.values():
            fx.append(("exchange.deleted", x))
        for key in [k for k in self.permissions if k[1] == c["name"]]:
            del self.permissions[key]
        for key in [k for k in self.topic_permissions if k[1] == c["name"]]:
            del self.topic_permissions[key]
        return None

    def _permission_set(self, c: dict, fx: Effects) -> Any:
        if c["user"] not in self.users:
            return AMQPError(NOT_FOUND, f"no user '{c['user']}'")
        if c["vhost"] not in self.vhosts:
            return AMQPError(NOT_FOUND, f"no vhost '{c['vhost']}'")
        self.permissions[(c["user"], c["vhost"])] = Permission(c["configure"], c["write"], c["read"])
        return None

    def _permission_clear(self, c: dict, fx: Effects) -> Any:
        self.permissions.pop((c["user"], c["vhost"]), None)
        return None

    def _topic_permission_set(self, c: dict, fx: Effects) -> Any:
        if c["user"] not in self.users:
            return AMQPError(NOT_FOUND, f"no user '{c['user']}'")
        if c["vhost"] not in self.vhosts:
            return AMQPError(NOT_FOUND, f"no vhost '{c['vhost']}'")
        per_exchange = self.topic_permissions.setdefault((c["user"], c["vhost"]), {})
        per_exchange[c["exchange"]] = TopicPermission(c["exchange"], c["write"], c["read"])
        return None

    def _topic_permission_clear(self, c: dict, fx: Effects) -> Any:
        """Clear one exchange's topic permission, or all of them when "exchange" is absent."""
        key = (c["user"], c["vhost"])
        exchange = c.get("exchange")
        if exchange is None:
            self.topic_permissions.pop(key, None)
        elif key in self.topic_permissions:
            self.topic_permissions[key].pop(exchange, None)
            if not self.topic_permissions[key]:
                del self.topic_permissions[key]
        return None

    # -- policies -------------------------------------------------------------------------------
    def _policy_set(self, c: dict, fx: Effects) -> Any:
        """Validated by the proposer (meta/policies.py); applying is a plain store."""
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        vhost.policies[c["name"]] = Policy(c["vhost"], c["name"], c["pattern"],
                                           dict(c["definition"]), int(c.get("priority", 0)),
                                           c.get("apply_to", "all"))
        fx.append(("policy.changed", vhost.name))
        return None

    def _policy_clear(self, c: dict, fx: Effects) -> Any:
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        if vhost.policies.pop(c["name"], None) is None:
            return AMQPError(NOT_FOUND, f"no policy '{c['name']}' in vhost '{c['vhost']}'")
        fx.append(("policy.changed", vhost.name))
        return None

    # -- exchanges ----------------------------------------------------------------------------
    def _exchange_declare(self, c: dict, fx: Effects) -> Any:
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        found = vhost.exchanges.get(c["name"])
        if found is not None:
            return found
        x = ExchangeRecord(c["vhost"], c["name"], c["type"], c["durable"], c["auto_delete"],
                           c["internal"], dict(c.get("arguments") or {}))
        vhost.exchanges[x.name] = x
        return x

    def _exchange_delete(self, c: dict, fx: Effects) -> Any:
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        x = vhost.exchanges.get(c["name"])
        if x is None:
            return None
        if c.get("if_unused") and x.router.bindings:
            return AMQPError(PRECONDITION_FAILED,
                             f"exchange '{x.name}' in vhost '{x.vhost}' in use")
        self._delete_exchange(vhost, x, fx)
        return None

    def _delete_exchange(self, vhost: VHost, x: ExchangeRecord, fx: Effects) -> None:
        del vhost.exchanges[x.name]
        for b in list(x.router.bindings):
            self._unindex(vhost, x.name, b)
        # bindings where this exchange is the destination go too
        for source, b in list(vhost.bound_to.get(Dest("exchange", x.name), ())):
            self._remove_binding(vhost, source, b, fx)
        fx.append(("exchange.deleted", x))

    # -- queues ---------------------------------------------------------------------------------
    def _queue_declare(self, c: dict, fx: Effects) -> Any:
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        found = vhost.queues.get(c["name"])
        if found is not None:
            return found
        q = QueueRecord(c["vhost"], c["name"], c["durable"], c.get("exclusive_owner"),
                        c["auto_delete"], dict(c.get("arguments") or {}),
                        c.get("type", "classic"), c.get("id") or f"{c['vhost']}/{c['name']}",
                        c.get("node") or "", list(c.get("members") or []))
        vhost.queues[q.name] = q
        fx.append(("queue.created", q))
        # every queue is bound to the default exchange by its name (implicitly, see route())
        return q

    def _queue_members(self, c: dict, fx: Effects) -> Any:
        """A replicated queue's replica set changed (a policy, grow/shrink, a forgotten node);
        `id` guards against a queue deleted and declared again meanwhile."""
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        q = vhost.queues.get(c["name"])
        if q is None or (c.get("id") and q.id != c["id"]):
            return AMQPError(NOT_FOUND, f"no queue '{c['name']}' in vhost '{c['vhost']}'")
        q.members = list(c["members"])
        fx.append(("queue.members", q))
        return q

    def _queue_delete(self, c: dict, fx: Effects) -> Any:
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        q = vhost.queues.pop(c["name"], None)
        if q is None:
            return None
        for source, b in list(vhost.bound_to.get(Dest("queue", q.name), ())):
            self._remove_binding(vhost, source, b, fx)
        fx.append(("queue.deleted", q))
        return q

    # -- bindings -------------------------------------------------------------------------------
    def _binding_add(self, c: dict, fx: Effects) -> Any:
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        x = vhost.exchanges.get(c["source"])
        if x is None:
            return AMQPError(NOT_FOUND, f"no exchange '{c['source']}' in vhost '{vhost.name}'")
        dest = Dest(c["dest_kind"], c["dest"])
        table = vhost.queues if dest.kind == "queue" else vhost.exchanges
        if dest.name not in table:
            return AMQPError(NOT_FOUND, f"no {dest.kind} '{dest.name}' in vhost '{vhost.name}'")
        b = make_binding(dest, c["routing_key"], c.get("arguments"))
        if x.router.add(b):
            vhost.bound_to.setdefault(dest, set()).add((x.name, b))
        return None

    def _binding_remove(self, c: dict, fx: Effects) -> Any:
        vhost = self._vhost(c)
        if isinstance(vhost, AMQPError):
            return vhost
        dest = Dest(c["dest_kind"], c["dest"])
        b = make_binding(dest, c["routing_key"], c.get("arguments"))
        self._remove_binding(vhost, c["source"], b, fx)
        return None

    def _remove_binding(self, vhost: VHost, source: str, b, fx: Effects) -> None:
        x = vhost.exchanges.get(source)
        if x is None or not x.router.remove(b):
            return
        self._unindex(vhost, source, b)
        if x.auto_delete and not x.router.bindings:
            self._delete_exchange(vhost, x, fx)

    @staticmethod
    def _unindex(vhost: VHost, source: str, b) -> None:
        entries = vhost.bound_to.get(b.dest)
        if entries is not None:
            entries.discard((source, b))
            if not entries:
                del vhost.bound_to[b.dest]

    def _vhost(self, c: dict) -> VHost | AMQPError:
        vhost = self.vhosts.get(c["vhost"])
        if vhost is None:
            return AMQPError(NOT_FOUND, f"no vhost '{c['vhost']}'")
        return vhost
