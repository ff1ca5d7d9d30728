"""The node's control command table: one entry per command warrenctl (and, later, another
node) can send over the control transport.

Every entry is `name -> Command(handler, needs_app)`; a handler takes the runtime and the
request's args and returns a plain (msgpack-able) result or raises CommandError with an exit
status. Metadata changes go through `node.propose` only, with anything random (salts) decided
by the caller, and the reply waits until the change is on disk. Node-to-node messages of the
cluster join this table with `@command("cluster.…", needs_app=False)`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..amqp.constants import CONNECTION_FORCED, NOT_FOUND
from ..amqp.errors import AMQPError
from ..cluster.control import (
    EX_DATAERR,
    EX_NOUSER,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_USAGE,
    AuthenticationFailed,
    CommandError,
    ControlError,
)
from ..cluster.links import same_node
from ..cluster.names import NodeNameError
from ..cluster.names import parse as parse_name
from ..meta import definitions, policies
from ..meta.access import check_password
from ..mgmt.plugins import PluginsError
from . import identity, listing
from .cluster import Cluster, ClusterError, call_node, compatible, write_join_file
from .metalog import wait

if TYPE_CHECKING:
    from ..core.node import Node
    from .runtime import Runtime

log = logging.getLogger("warrenmq.server")

SYNC_DEADLINE_S = 30.0
LEAVE_OPEN_TIMEOUT_S = 30.0  # running the metadata group of a node that leaves by reset
LEAVE_TIMEOUT_S = 60.0
REPLICA_COLUMNS = {"leader", "node", "slave_nodes", "synchronised_slave_nodes"}


@dataclass(frozen=True)
class Command:
    handler: Callable[..., Any]
    needs_app: bool = True


COMMANDS: dict[str, Command] = {}


def command(name: str, needs_app: bool = True) -> Callable:
    def register(fn: Callable) -> Callable:
        assert name not in COMMANDS, f"command {name} registered twice"
        COMMANDS[name] = Command(fn, needs_app)
        return fn
    return register


async def dispatch(rt: Runtime, cmd: str, args: dict) -> Any:
    entry = COMMANDS.get(cmd)
    if entry is None:
        raise CommandError(f"the node does not know the command '{cmd}' (is warrenctl newer "
                           "than the node?)", EX_USAGE)
    if entry.needs_app and not rt.app.running:
        raise CommandError(f"this command needs the app running on node {rt.config.nodename},"
                           " which is stopped: start it with 'warrenctl start_app'", EX_TEMPFAIL)
    result = entry.handler(rt, args)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- helpers ---------------------------------------------------------------------------------------------
def _node(rt: Runtime) -> Node:
    return rt.app.node


async def _propose(rt: Runtime, command_: dict, missing_code: int = EX_DATAERR) -> Any:
    """Propose a metadata command and wait until it is durable."""
    try:
        reply = await wait(_node(rt).propose(command_))
    except AMQPError as e:
        text = re.sub(r"^[A-Z_]+ - ", "", e.reply_text)
        raise CommandError(text, missing_code if e.reply_code == NOT_FOUND else EX_DATAERR
                           ) from None
    await _synced(rt)
    return reply


async def _synced(rt: Runtime) -> None:
    journal = rt.app.journal
    if journal is None:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def synced() -> None:
        if not done.done():
            done.set_result(None)

    journal.after_sync(synced)
    rt.app.schedule_flush()
    try:
        await asyncio.wait_for(done, SYNC_DEADLINE_S)
    except TimeoutError:
        raise CommandError("the change was applied but the write-ahead log did not confirm "
                           f"it within {SYNC_DEADLINE_S:g}s (see the node's log)",
                           EX_SOFTWARE) from None


def _cluster(rt: Runtime) -> Cluster:
    cluster = rt.app.cluster
    assert cluster is not None, "a running app has its cluster side"
    return cluster


def _user(rt: Runtime, name: str) -> Any:
    user = _node(rt).meta.users.get(name)
    if user is None:
        raise CommandError(f'User "{name}" does not exist', EX_NOUSER)
    return user


def _vhost(rt: Runtime, name: str) -> Any:
    vhost = _node(rt).meta.vhosts.get(name)
    if vhost is None:
        raise CommandError(f'Virtual host "{name}" does not exist')
    return vhost


def _regex(value: str, what: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        raise CommandError(f"invalid {what} regular expression {value!r}: {e}") from None
    return value


def _close_connections(rt: Runtime, match: Callable[[Any], bool], reason: str) -> int:
    closed = 0
    for conn in list(_node(rt).connections.values()):
        if match(conn):
            conn.close(CONNECTION_FORCED, f"CONNECTION_FORCED - {reason}")
            closed += 1
    if closed:
        rt.app.schedule_flush()
    return closed


# -- node ----------------------------------------------------------------------------------------------------
@command("status", needs_app=False)
def status(rt: Runtime, args: dict) -> dict:
    cfg = rt.config
    node = _node(rt)
    running = rt.app.running
    listeners = [{"node": cfg.nodename, "interface": cfg.bind, "port": rt.ports.get("dist"),
                  "protocol": "clustering",
                  "purpose": "inter-node and CLI tool communication"}]
    if running:
        listeners.append({"node": cfg.nodename, "interface": cfg.bind,
                          "port": rt.ports.get("amqp"), "protocol": "amqp",
                          "purpose": "AMQP 0-9-1"})
    return {
        "node_name": cfg.nodename,
        "pid": os.getpid(),
        "os": platform.system(),
        "uptime": int(time.time() - rt.started_at),
        "product_name": "WarrenMQ",
        "product_version": __version__,
        "runtime_version": f"Python {platform.python_version()}",
        "app_running": running,
        "data_directory": str(cfg.data_dir),
        "config_files": [str(cfg.config_file)] if cfg.config_file else [],
        "log_files": [str(f) for f in rt.log_files],
        "pid_file": str(rt.pid_file),
        "alarms": sorted(node.alarms) if running else [],
        "listeners": listeners,
        "totals": {
            "virtual_host_count": len(node.meta.vhosts) if running else 0,
            "connection_count": len(node.connections) if running else 0,
            "queue_count": sum(len(v.queues) for v in node.meta.vhosts.values())
            if running else 0,
        },
        "disk_free_limit": cfg.disk_free_limit_absolute,
        "vm_memory_high_watermark_setting": {
            "relative": cfg.vm_memory_high_watermark_relative,
            "absolute": cfg.vm_memory_high_watermark_absolute},
        "is_under_maintenance": False,
    }


@command("environment", needs_app=False)
def environment(rt: Runtime, args: dict) -> dict:
    env: dict[str, Any] = {}
    for key, value in sorted(vars(rt.config).items()):
        if key == "default_pass":
            value = "********"
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        env[key] = value
    return env


@command("stop", needs_app=False)
def stop(rt: Runtime, args: dict) -> dict:
    rt.request_stop("shutdown")
    return {"pid": os.getpid()}


@command("stop_app", needs_app=False)
async def stop_app(rt: Runtime, args: dict) -> None:
    await rt.stop_app()


@command("start_app", needs_app=False)
async def start_app(rt: Runtime, args: dict) -> None:
    try:
        await rt.start_app()
    except OSError as e:
        raise CommandError(f"cannot start the app: {e}", EX_SOFTWARE) from None


@command("reset", needs_app=False)
async def reset(rt: Runtime, args: dict) -> dict:
    if rt.app.running:
        raise CommandError("this command requires the app to be stopped on the target node: "
                           "stop it with 'warrenctl stop_app'", EX_TEMPFAIL)
    note = await _leave_cluster(rt, force=bool(args.get("force")))
    rt.reset()
    return {"note": note}


async def _leave_cluster(rt: Runtime, force: bool) -> str:
    """Before a reset: a clustered node asks a running member to remove it (RabbitMQ's reset
    does the same). Meanwhile its metadata group runs (not its AMQP listener), so that it
    votes for its own removal: a cluster of two cannot remove a member without it. With no
    member running, or none able to remove it, it refuses, unless forced."""
    me = rt.config.nodename
    others = sorted(n for n in rt.app.last_members if not same_node(n, me))
    if not others:
        return ""
    my_id = rt.app.last_members.get(me)
    running: list[str] = []
    problems: list[str] = []
    for peer in others:
        try:
            info = await _call_node(rt, peer, "cluster_info", {}, 5.0)
        except ControlError as e:
            problems.append(f"{peer}: {e}")
            continue
        if info.get("running"):
            running.append(peer)
        else:
            problems.append(f"{peer}: its app is stopped")
    if running:
        opened = await _open_store_to_leave(rt)
        try:
            for peer in running:
                try:
                    note = await _call_node(rt, peer, "cluster_forget_id",
                                            {"node": me, "node_id": my_id}, LEAVE_TIMEOUT_S)
                    return str(note or f"left the cluster (removed by {peer})")
                except ControlError as e:
                    problems.append(f"{peer}: {e}")
        finally:
            if opened:
                await rt.app.close_store("leaving the cluster")
    if force:
        return ("no member could remove this node; reset anyway (run 'warrenctl "
                f"forget_cluster_node {me}' on a member)")
    why = "no other member is running" if not running else "no member could remove it"
    raise CommandError(f"cannot leave the cluster: {why} ({'; '.join(problems)}). Start the "
                       "other members and retry, or use force_reset and then 'warrenctl "
                       f"forget_cluster_node {me}' on a member", EX_TEMPFAIL)


async def _open_store_to_leave(rt: Runtime) -> bool:
    """Run the node's metadata group (no listener: the app stays stopped) for its removal;
    False if it cannot, and the members then remove it without its vote."""
    try:
        await asyncio.wait_for(rt.app.open_store(), LEAVE_OPEN_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - a damaged store must not prevent a reset
        log.warning("node %s: cannot run its metadata group to leave the cluster (%s); asking"
                    " the members to remove it without its vote", rt.config.nodename,
                    str(e) or type(e).__name__)
        return False
    return True


async def _call_node(rt: Runtime, node: str, cmd: str, args: dict, timeout_s: float = 30.0
                     ) -> Any:
    return await call_node(rt.cookie, node, cmd, args, timeout_s)


@command("force_reset", needs_app=False)
async def force_reset(rt: Runtime, args: dict) -> dict:
    return await reset(rt, {"force": True})


# -- cluster -------------------------------------------------------------------------------------------------
@command("join_cluster", needs_app=False)
async def join_cluster(rt: Runtime, args: dict) -> dict:
    me = rt.config.nodename
    if rt.app.running:
        raise CommandError("this command requires the app to be stopped on the target node: "
                           "stop it with 'warrenctl stop_app'", EX_TEMPFAIL)
    try:
        target = str(parse_name(args["node"]))
    except NodeNameError as e:
        raise CommandError(str(e), EX_USAGE) from None
    if same_node(target, me):
        raise CommandError(f"node {me} cannot join itself", EX_USAGE)
    others = [n for n in rt.app.last_members if not same_node(n, me)]
    if others and not any(same_node(n, target) for n in others):
        raise CommandError(f"node {me} is already a member of another cluster (with "
                           f"{', '.join(sorted(others))}): run 'warrenctl reset' first",
                           EX_DATAERR)
    try:
        info = await _call_node(rt, target, "cluster_info", {})
    except AuthenticationFailed:
        raise CommandError(f"cannot join {target}: cookie mismatch: {target} refused the "
                           f"cookie of {me}; the nodes of a cluster need the same cookie: copy "
                           f"the cookie file of {target} over this node's and restart it",
                           AuthenticationFailed.exit_status) from None
    except ControlError as e:
        raise CommandError(f"cannot join {target}: {e}", e.exit_status) from None
    if not compatible(info.get("version", "")):
        raise CommandError(f"cannot join {target}: it runs WarrenMQ {info.get('version')} and "
                           f"this node {__version__}; nodes of a cluster run the same "
                           "major.minor version: upgrade the older side first", EX_DATAERR)
    if not info.get("running"):
        raise CommandError(f"cannot join {target}: its app is stopped (warrenctl -n {target} "
                           "start_app)", EX_TEMPFAIL)
    if info.get("majority") is False:
        # refused here, before the reset below: a join that cannot commit would leave this
        # node emptied and alone
        raise CommandError(f"cannot join {target}: its cluster has no majority now "
                           f"({info.get('reachable', '')}); start its members and retry",
                           EX_TEMPFAIL)
    rt.reset()  # joining starts from a virgin node, as RabbitMQ's join_cluster does
    node_id = identity.load(Path(rt.config.data_dir), me)
    try:
        joined = await _call_node(rt, target, "cluster_join",
                                  {"node": me, "node_id": node_id, "version": __version__})
    except ControlError as e:
        raise CommandError(f"cannot join {target}: {e}; this node was reset: it is a fresh "
                           "node of its own now", e.exit_status) from None
    write_join_file(Path(rt.config.data_dir), joined["members"])
    rt.app.last_members = dict(joined["members"])
    return {"members": sorted(joined["members"]), "cluster_name": joined["cluster_name"]}


@command("cluster_info", needs_app=False)
def cluster_info(rt: Runtime, args: dict) -> dict:
    app = rt.app
    info: dict[str, Any] = {"node": rt.config.nodename, "version": __version__,
                            "running": app.running, "members": app.last_members}
    if app.running and app.cluster is not None:
        info["members"] = app.cluster.members()
        info["majority"], info["reachable"] = app.cluster.reachability()
    return info


@command("cluster_join")
async def cluster_join(rt: Runtime, args: dict) -> dict:
    try:
        return await _cluster(rt).join(args["node"], int(args["node_id"]),
                                         str(args.get("version", "")))
    except ClusterError as e:
        raise CommandError(str(e), e.exit_status) from None


@command("cluster_forget_id")
async def cluster_forget_id(rt: Runtime, args: dict) -> str:
    """A member leaving by reset asks to be removed; the answer says what happened."""
    node_id = args.get("node_id")
    try:
        return await _cluster(rt).leave(args["node"],
                                          int(node_id) if node_id is not None else None)
    except ClusterError as e:
        raise CommandError(str(e), e.exit_status) from None


@command("forget_cluster_node")
async def forget_cluster_node(rt: Runtime, args: dict) -> None:
    try:
        await _cluster(rt).forget(args["node"])
    except ClusterError as e:
        raise CommandError(str(e), e.exit_status) from None


@command("cut_cluster_links")
def cut_cluster_links(rt: Runtime, args: dict) -> dict:
    return {"cut": _cluster(rt).cut(args.get("peers") or None)}


@command("heal_cluster_links")
def heal_cluster_links(rt: Runtime, args: dict) -> dict:
    return {"healed": _cluster(rt).heal()}


@command("cluster_status", needs_app=False)
async def cluster_status(rt: Runtime, args: dict) -> dict:
    me = rt.config.nodename
    app = rt.app
    if app.running and app.cluster is not None:
        members = sorted(app.cluster.members())
        info = await app.cluster.gather_info()
        running = sorted(info)
        name = app.node.meta.cluster_name or rt.config.cluster_name or me
    else:
        members = sorted(app.last_members) or [me]
        info, running, name = {}, [], rt.config.cluster_name or me
    return {
        "cluster_name": name,
        "disk_nodes": members,
        "ram_nodes": [],
        "running_nodes": running,
        "versions": {n: {"warrenmq_version": i.get("version", ""),
                         "rabbitmq_version": i.get("version", ""),
                         "runtime_version": f"Python {platform.python_version()}"}
                     for n, i in info.items()},
        "alarms": [{"node": n, "resource": r} for n, i in info.items()
                   for r in i.get("alarms", [])],
        "listeners": {n: i.get("listeners", []) for n, i in info.items()},
        "partitions": {},
        "maintenance_status": {n: "not under maintenance" for n in info},
    }


# -- users ---------------------------------------------------------------------------------------------------
@command("add_user")
async def add_user(rt: Runtime, args: dict) -> None:
    name = args["username"]
    if name in _node(rt).meta.users:
        raise CommandError(f'User "{name}" already exists', EX_SOFTWARE)
    if not name:
        raise CommandError("user name must not be empty", EX_USAGE)
    await _propose(rt, {"op": "user.add", "name": name, "password_hash": args["password_hash"],
                        "tags": [], "hashing_algorithm": "rabbit_password_hashing_sha256"})


@command("delete_user")
async def delete_user(rt: Runtime, args: dict) -> None:
    name = args["username"]
    _user(rt, name)
    await _propose(rt, {"op": "user.delete", "name": name}, EX_NOUSER)
    # RabbitMQ closes the connections of a deleted user
    _close_connections(rt, lambda c: c.user == name, f"user '{name}' was deleted")


@command("change_password")
async def change_password(rt: Runtime, args: dict) -> None:
    _user(rt, args["username"])
    await _propose(rt, {"op": "user.set_password", "name": args["username"],
                        "password_hash": args["password_hash"],
                        "hashing_algorithm": "rabbit_password_hashing_sha256"}, EX_NOUSER)


@command("authenticate_user")
def authenticate_user(rt: Runtime, args: dict) -> dict:
    name = args["username"]
    user = _node(rt).meta.users.get(name)
    if user is None or not check_password(user, args["password"]):
        why = "user not found" if user is None else "invalid credentials"
        raise CommandError(f"failed to authenticate user \"{name}\": {why}", EX_DATAERR)
    return {"user": name, "tags": list(user.tags)}


@command("set_user_tags")
async def set_user_tags(rt: Runtime, args: dict) -> None:
    _user(rt, args["username"])
    await _propose(rt, {"op": "user.set_tags", "name": args["username"],
                        "tags": list(args.get("tags", []))}, EX_NOUSER)


@command("list_users")
def list_users(rt: Runtime, args: dict) -> dict:
    return listing.users(_node(rt))


# -- vhosts ----------------------------------------------------------------------------------------------------
@command("add_vhost")
async def add_vhost(rt: Runtime, args: dict) -> None:
    name = args["vhost"]
    if not name:
        raise CommandError("virtual host name must not be empty", EX_USAGE)
    await _propose(rt, {"op": "vhost.add", "name": name,
                        "description": args.get("description", ""),
                        "tags": list(args.get("tags", []))})


@command("delete_vhost")
async def delete_vhost(rt: Runtime, args: dict) -> None:
    name = args["vhost"]
    _vhost(rt, name)
    _close_connections(rt, lambda c: c.vhost_name == name, f"vhost '{name}' is deleted")
    await _propose(rt, {"op": "vhost.delete", "name": name})


@command("list_vhosts")
def list_vhosts(rt: Runtime, args: dict) -> dict:
    return listing.vhosts(_node(rt), args.get("columns"))


# -- permissions -----------------------------------------------------------------------------------------------
@command("set_permissions")
async def set_permissions(rt: Runtime, args: dict) -> None:
    _vhost(rt, args["vhost"])
    _user(rt, args["user"])
    await _propose(rt, {"op": "permission.set", "user": args["user"], "vhost": args["vhost"],
                        "configure": _regex(args["configure"], "configure"),
                        "write": _regex(args["write"], "write"),
                        "read": _regex(args["read"], "read")})


@command("clear_permissions")
async def clear_permissions(rt: Runtime, args: dict) -> None:
    _vhost(rt, args["vhost"])
    _user(rt, args["user"])
    await _propose(rt, {"op": "permission.clear", "user": args["user"], "vhost": args["vhost"]})


@command("list_permissions")
def list_permissions(rt: Runtime, args: dict) -> dict:
    vhost = args["vhost"]
    _vhost(rt, vhost)
    rows = [[user, p.configure, p.write, p.read]
            for (user, v), p in _node(rt).meta.permissions.items() if v == vhost]
    return {"columns": ["user", "configure", "write", "read"], "rows": rows}


@command("list_user_permissions")
def list_user_permissions(rt: Runtime, args: dict) -> dict:
    name = args["user"]
    _user(rt, name)
    rows = [[v, p.configure, p.write, p.read]
            for (user, v), p in _node(rt).meta.permissions.items() if user == name]
    return {"columns": ["vhost", "configure", "write", "read"], "rows": rows}


@command("set_topic_permissions")
async def set_topic_permissions(rt: Runtime, args: dict) -> None:
    _vhost(rt, args["vhost"])
    _user(rt, args["user"])
    await _propose(rt, {"op": "topic_permission.set", "user": args["user"],
                        "vhost": args["vhost"], "exchange": args["exchange"],
                        "write": _regex(args["write"], "write"),
                        "read": _regex(args["read"], "read")})


@command("clear_topic_permissions")
async def clear_topic_permissions(rt: Runtime, args: dict) -> None:
    _vhost(rt, args["vhost"])
    _user(rt, args["user"])
    cmd = {"op": "topic_permission.clear", "user": args["user"], "vhost": args["vhost"]}
    if args.get("exchange"):
        cmd["exchange"] = args["exchange"]
    await _propose(rt, cmd)


@command("list_topic_permissions")
def list_topic_permissions(rt: Runtime, args: dict) -> dict:
    vhost = args["vhost"]
    _vhost(rt, vhost)
    rows = [[user, tp.exchange, tp.write, tp.read]
            for (user, v), per_x in _node(rt).meta.topic_permissions.items() if v == vhost
            for tp in per_x.values()]
    return {"columns": ["user", "exchange", "write", "read"], "rows": rows}


# -- policies -------------------------------------------------------------------------------------------------
@command("set_policy")
async def set_policy(rt: Runtime, args: dict) -> None:
    _vhost(rt, args["vhost"])
    try:
        definition = policies.parse_definition(args["definition"])
        policies.validate(args["pattern"], definition, args.get("priority", 0),
                          args.get("apply_to", "all"))
    except policies.PolicyError as e:
        raise CommandError(f"Validation failed: {e}") from None
    await _propose(rt, {"op": "policy.set", "vhost": args["vhost"], "name": args["name"],
                        "pattern": args["pattern"], "definition": definition,
                        "priority": args.get("priority", 0),
                        "apply_to": args.get("apply_to", "all")})


@command("clear_policy")
async def clear_policy(rt: Runtime, args: dict) -> None:
    vhost = _vhost(rt, args["vhost"])
    if args["name"] not in vhost.policies:
        raise CommandError(f"policy '{args['name']}' does not exist in vhost '{vhost.name}'")
    await _propose(rt, {"op": "policy.clear", "vhost": args["vhost"], "name": args["name"]})


@command("list_policies")
def list_policies(rt: Runtime, args: dict) -> dict:
    vhost = _vhost(rt, args["vhost"])
    rows = [[p.vhost, p.name, p.pattern, p.apply_to,
             json.dumps(p.definition, sort_keys=True, separators=(",", ":")), p.priority]
            for p in policies.sorted_for_listing(list(vhost.policies.values()))]
    return {"columns": ["vhost", "name", "pattern", "apply-to", "definition", "priority"],
            "rows": rows}


# -- queues, exchanges, bindings ----------------------------------------------------------------------------------
@command("list_queues")
async def list_queues(rt: Runtime, args: dict) -> dict:
    if REPLICA_COLUMNS & set(args.get("columns") or ()):
        vhost = _node(rt).meta.vhosts.get(args["vhost"])
        if vhost is not None:
            # leaders and synchronised members of the queues led elsewhere, from their leaders
            await replica_commands.refresh_replicas(rt, list(vhost.queues.values()))
    return listing.queues(_node(rt), args["vhost"], args.get("columns"))


@command("list_exchanges")
def list_exchanges(rt: Runtime, args: dict) -> dict:
    return listing.exchanges(_node(rt), args["vhost"], args.get("columns"))


@command("list_bindings")
def list_bindings(rt: Runtime, args: dict) -> dict:
    return listing.bindings(_node(rt), args["vhost"], args.get("columns"))


@command("purge_queue")
def purge_queue(rt: Runtime, args: dict) -> dict:
    _vhost(rt, args["vhost"])
    q = _node(rt).live_queue(args["vhost"], args["queue"])
    if q is None:
        raise CommandError(f"queue '{args['queue']}' in vhost '{args['vhost']}' does not exist")
    count = q.purge()
    rt.app.schedule_flush()
    return {"message_count": count}


@command("delete_queue")
async def delete_queue(rt: Runtime, args: dict) -> dict:
    _vhost(rt, args["vhost"])
    q = _node(rt).live_queue(args["vhost"], args["queue"])
    if q is None:
        raise CommandError(f"queue '{args['queue']}' in vhost '{args['vhost']}' does not exist")
    if args.get("if_unused") and q.consumers:
        raise CommandError(f"queue '{q.name}' in vhost '{q.vhost}' is in use (it has "
                           "consumers)")
    if args.get("if_empty") and q.message_count:
        raise CommandError(f"queue '{q.name}' in vhost '{q.vhost}' is not empty")
    count = q.message_count
    await _propose(rt, {"op": "queue.delete", "vhost": q.vhost, "name": q.name})
    rt.app.schedule_flush()
    return {"message_count": count}


# -- connections, channels, consumers ---------------------------------------------------------------------------
@command("list_connections")
def list_connections(rt: Runtime, args: dict) -> dict:
    return listing.connections(_node(rt), args.get("columns"))


@command("list_channels")
def list_channels(rt: Runtime, args: dict) -> dict:
    return listing.channels(_node(rt), args.get("columns"))


@command("list_consumers")
def list_consumers(rt: Runtime, args: dict) -> dict:
    return listing.consumers(_node(rt), args["vhost"], args.get("columns"))


@command("close_connection")
def close_connection(rt: Runtime, args: dict) -> None:
    target = args["connection"]
    node = _node(rt)
    closed = _close_connections(
        rt, lambda c: target in (listing.connection_pid(node, c.id), listing.connection_name(c),
                                 c.id), args.get("reason", "closed via management tool"))
    if not closed:
        raise CommandError(f"no connection '{target}' on node {rt.config.nodename}: see "
                           "'warrenctl list_connections pid name'")


# -- definitions -------------------------------------------------------------------------------------------------
@command("export_definitions")
def export_definitions(rt: Runtime, args: dict) -> dict:
    doc = definitions.export(_node(rt).meta, __version__)
    # binding/queue arguments may hold AMQP types msgpack cannot carry (decimal, timestamp)
    return json.loads(json.dumps(doc, default=str))


@command("import_definitions")
async def import_definitions(rt: Runtime, args: dict) -> dict:
    try:
        commands, notes = definitions.plan_import(_node(rt).meta, args["definitions"])
    except definitions.DefinitionsError as e:
        raise CommandError(f"invalid definitions: {e}") from None
    # pipelined: every command is submitted at once, in order, then each reply is checked
    node = _node(rt)
    pending = [(cmd, node.propose(node.placed(cmd))) for cmd in commands]
    for cmd, p in pending:
        await _checked(cmd, p)
    return {"applied": len(commands), "notes": notes}


async def _checked(command_: dict, p: Any) -> None:
    try:
        await wait(p)
    except AMQPError as e:
        raise CommandError(f"import stopped at {command_['op']} "
                           f"'{command_.get('name', command_.get('dest', ''))}': "
                           f"{e.reply_text}") from None


__all__ = ["COMMANDS", "command", "dispatch"]


# -- resource limits (rabbitmqctl set_vm_memory_high_watermark / set_disk_free_limit) ----------
@command("set_vm_memory_high_watermark")
def set_vm_memory_high_watermark(rt: Runtime, args: dict) -> dict:
    monitor = rt.app.monitor
    assert monitor is not None
    if args.get("absolute") is not None:
        monitor.marks.memory_absolute = int(args["absolute"])
    else:
        relative = float(args["relative"])
        if not 0 <= relative:
            raise CommandError(f"the watermark must be a fraction >= 0, got {relative}",
                               EX_USAGE)
        monitor.marks.memory_absolute = None
        monitor.marks.memory_relative = relative
    rt.app.check_resources()
    return {"limit": monitor.memory_limit, "used": monitor.memory_used,
            "alarms": sorted(_node(rt).alarms)}


@command("set_disk_free_limit")
def set_disk_free_limit(rt: Runtime, args: dict) -> dict:
    monitor = rt.app.monitor
    assert monitor is not None
    monitor.marks.disk_free_absolute = int(args["absolute"])
    rt.app.check_resources()
    return {"limit": monitor.marks.disk_free_absolute, "free": monitor.disk_free,
            "alarms": sorted(_node(rt).alarms)}


# -- plugins (warren-plugins): the listeners start and stop at once, and the choice persists ----
@command("plugins_list", needs_app=False)
def plugins_list(rt: Runtime, args: dict) -> dict:
    try:
        return rt.plugins.describe()
    except PluginsError as e:
        raise CommandError(str(e)) from None


@command("plugins_change", needs_app=False)
async def plugins_change(rt: Runtime, args: dict) -> dict:
    try:
        return await rt.plugins.change(str(args["action"]), list(args["plugins"]))
    except PluginsError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"the plugin is enabled but could not start: {e}",
                           EX_SOFTWARE) from None


# the replicated queues' commands (warren-queues, sync_queue, ...) join this table
from . import replica_commands  # noqa: E402
