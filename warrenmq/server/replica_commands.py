"""Control commands for replicated queues (quorum queues, and classic queues under an ha-mode
policy): what `warren-queues` (rabbitmq-queues' verbs) and warrenctl's list_unresponsive_queues,
sync_queue and cancel_sync_queue send.

Each handler first catches up with the metadata committed so far (`metadata_barrier`: a
command sent here right after another sent elsewhere sees its effect), checks what it can
here (the virtual host, the queue, its type, the node named) and leaves the change itself
to the queue's leader (`quorum_ops.QueueOps.on_leader`), so the command may be sent to any
node of the cluster. Refusals are CommandErrors: 64 for a bad
argument, 65 for what will not work as asked (no such queue, not a member, the last member),
75 for what may work later (no leader reachable, a node down), and 69 for a failed health
check, as rabbitmqctl's exit codes go.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from ..cluster.control import (
    EX_DATAERR,
    EX_TEMPFAIL,
    EX_USAGE,
    CommandError,
)
from ..cluster.links import same_node
from ..cluster.names import NodeNameError
from ..cluster.names import parse as parse_name
from .commands import command
from .listing import amqp_table
from .quorum import group_id
from .quorum_ops import readable

if TYPE_CHECKING:
    from ..meta.records import QueueRecord
    from .quorum import QuorumQueues
    from .runtime import Runtime

STATUS_TIMEOUT_S = 10.0
DEFAULT_QUEUE_TIMEOUT_S = 15.0  # list_unresponsive_queues --queue-timeout, as rabbitmqctl's


# -- helpers -------------------------------------------------------------------------------------------
def _quorum(rt: Runtime) -> QuorumQueues:
    quorum = rt.app.quorum
    if quorum is None:
        raise CommandError("the node's replicated queues are not running", EX_TEMPFAIL)
    return quorum


def _record(rt: Runtime, vhost: str, name: str) -> QueueRecord:
    v = rt.app.node.meta.vhosts.get(vhost)
    if v is None:
        raise CommandError(f'Virtual host "{vhost}" does not exist', EX_DATAERR)
    record = v.queues.get(name)
    if record is None:
        raise CommandError(f"queue '{name}' in vhost '{vhost}' does not exist", EX_DATAERR)
    return record


def _replicated(rt: Runtime, record: QueueRecord) -> QueueRecord:
    if not record.members:
        raise CommandError(f"{readable(record)} is a classic queue that is not replicated: "
                           "declare it with x-queue-type quorum, or give it an ha-mode "
                           "policy", EX_DATAERR)
    return record


def _quorum_only(rt: Runtime, record: QueueRecord) -> QueueRecord:
    _replicated(rt, record)
    if record.type != "quorum":
        raise CommandError(f"{readable(record)} is a classic queue replicated by its policy: "
                           "its members follow the policy's ha-mode and ha-params; change "
                           "the policy instead", EX_DATAERR)
    return record


def _classic_mirrored(rt: Runtime, record: QueueRecord) -> QueueRecord:
    if record.type == "quorum":
        raise CommandError(f"{readable(record)} is a quorum queue: its members always catch "
                           "up by themselves; synchronisation commands apply to classic "
                           "queues under an ha-mode policy", EX_DATAERR)
    if not record.members:
        raise CommandError(f"{readable(record)} is not mirrored (no ha-mode policy applies "
                           "to it)", EX_DATAERR)
    return record


def member_name(rt: Runtime, text: str) -> str:
    """The cluster member `text` names: exactly, or the same node spelled with or without
    its port. A name that is no member is refused with the members listed."""
    try:
        wanted = parse_name(text)
    except NodeNameError as e:
        raise CommandError(str(e), EX_USAGE) from None
    cluster = rt.app.cluster
    members = sorted(cluster.members()) if cluster is not None else [rt.app.node.name]
    if text in members:
        return text
    same = [m for m in members if same_node(m, text)]
    if not same:
        same = [m for m in members if parse_name(m).identity == wanted.identity]
    if len(same) == 1:
        return same[0]
    raise CommandError(f"node {text} is not a member of this cluster (members: "
                       f"{', '.join(members)})", EX_DATAERR)


def _running(rt: Runtime, name: str, why: str) -> None:
    cluster = rt.app.cluster
    running = cluster.running() if cluster is not None else [rt.app.node.name]
    if name not in running:
        raise CommandError(f"node {name} is not running: {why}", EX_TEMPFAIL)


def _pattern(value: str, what: str) -> re.Pattern:
    try:
        return re.compile(value)
    except re.error as e:
        raise CommandError(f"invalid {what} regular expression {value!r}: {e}",
                           EX_USAGE) from None


def _replicated_queues(rt: Runtime, vhost_pattern: str = ".*", queue_pattern: str = ".*"
                       ) -> list[QueueRecord]:
    """Replicated queues whose vhost and name match (anywhere, as rabbitmq-queues does)."""
    vp, qp = _pattern(vhost_pattern, "vhost"), _pattern(queue_pattern, "queue")
    return [r for v in rt.app.node.meta.vhosts.values() if vp.search(v.name)
            for r in v.queues.values() if r.members and qp.search(r.name)]


def _result(error: CommandError | None) -> str:
    return "ok" if error is None else f"error: {error}"


# -- membership --------------------------------------------------------------------------------------
@command("queue_add_member")
async def queue_add_member(rt: Runtime, args: dict) -> dict:
    await _quorum(rt).ops.metadata_barrier()
    record = _quorum_only(rt, _record(rt, args["vhost"], args["queue"]))
    name = member_name(rt, args["node"])
    if name in record.members:
        raise CommandError(f"node {name} already hosts a member of {readable(record)}",
                           EX_DATAERR)
    _running(rt, name, "a new member needs its node up to catch up")
    return await _quorum(rt).ops.on_leader(record, "add_member", {"node": name})


@command("queue_delete_member")
async def queue_delete_member(rt: Runtime, args: dict) -> dict:
    await _quorum(rt).ops.metadata_barrier()
    record = _quorum_only(rt, _record(rt, args["vhost"], args["queue"]))
    name = member_name(rt, args["node"])
    return await _quorum(rt).ops.on_leader(record, "delete_member", {"node": name})


@command("queue_transfer_leadership")
async def queue_transfer_leadership(rt: Runtime, args: dict) -> dict:
    await _quorum(rt).ops.metadata_barrier()
    record = _replicated(rt, _record(rt, args["vhost"], args["queue"]))
    name = member_name(rt, args["node"])
    return await _quorum(rt).ops.on_leader(record, "transfer", {"node": name})


@command("queues_grow")
async def queues_grow(rt: Runtime, args: dict) -> dict:
    await _quorum(rt).ops.metadata_barrier()
    strategy = args["strategy"]
    if strategy not in ("all", "even"):
        raise CommandError(f"strategy '{strategy}' is not recognised.", EX_USAGE)
    name = member_name(rt, args["node"])
    _running(rt, name, "new members need their node up to catch up")
    ops = _quorum(rt).ops
    rows = []
    for record in _replicated_queues(rt, args.get("vhost_pattern") or ".*",
                                     args.get("queue_pattern") or ".*"):
        if record.type != "quorum" or name in record.members:
            continue
        if strategy == "even" and len(record.members) % 2:
            continue
        error, size = None, len(record.members)
        try:
            # the size as the leader left it: this node may not have applied the change yet
            size = len((await ops.on_leader(record, "add_member", {"node": name}))["members"])
        except CommandError as e:
            error = e
        if error is not None or not args.get("errors_only"):
            rows.append([record.vhost, record.name, size, _result(error)])
    return {"columns": ["vhost", "name", "size", "result"], "rows": rows}


@command("queues_shrink")
async def queues_shrink(rt: Runtime, args: dict) -> dict:
    await _quorum(rt).ops.metadata_barrier()
    name = member_name(rt, args["node"])
    ops = _quorum(rt).ops
    rows = []
    for record in _replicated_queues(rt):
        if record.type != "quorum" or name not in record.members:
            continue
        error, size = None, len(record.members)
        if size == 1:
            error = CommandError("the last node cannot be removed")
        else:
            try:
                reply = await ops.on_leader(record, "delete_member", {"node": name})
                size = len(reply["members"])
            except CommandError as e:
                error = e
        if error is not None or not args.get("errors_only"):
            rows.append([record.vhost, record.name, size, _result(error)])
    return {"columns": ["vhost", "name", "size", "result"], "rows": rows}


# -- leaders -----------------------------------------------------------------------------------------
@command("queues_rebalance")
async def queues_rebalance(rt: Runtime, args: dict) -> dict:
    """Spread the leaders of the matching replicated queues over the running nodes, at most
    ceil(queues / running nodes) per node, by leadership transfers to in-sync members (the
    algorithm of RabbitMQ's rabbit_amqqueue:rebalance)."""
    await _quorum(rt).ops.metadata_barrier()
    kind = args["type"]
    if kind not in ("all", "classic", "quorum"):
        raise CommandError(f"type {kind} is not supported. Try one of all, classic, quorum.",
                           EX_USAGE)
    quorum = _quorum(rt)
    records = [r for r in _replicated_queues(rt, args.get("vhost_pattern") or ".*",
                                              args.get("queue_pattern") or ".*")
               if kind == "all" or r.type == kind]
    cluster = rt.app.cluster
    running = cluster.running() if cluster is not None else [rt.app.node.name]
    statuses = await quorum.ops.statuses(records, STATUS_TIMEOUT_S)
    by_gid = {group_id(r): r for r in records}
    by_node: dict[str, list[str]] = {n: [] for n in running}
    for gid, st in statuses.items():
        if "leader" in st:
            by_node.setdefault(st["leader"], []).append(gid)
    led = sum(len(v) for v in by_node.values())
    most = math.ceil(led / len(running)) if running else led
    tried: set[str] = set()
    for node in sorted(by_node, key=lambda n: -len(by_node[n])):
        while len(by_node[node]) > most:
            gid = next((g for g in by_node[node] if g not in tried), None)
            if gid is None:
                break
            tried.add(gid)
            candidates = [n for n in statuses[gid]["in_sync"]
                          if n != node and n in running and len(by_node.get(n, [])) < most]
            if not candidates:
                continue
            dest = min(candidates, key=lambda n: (len(by_node.get(n, [])), n))
            try:
                await quorum.ops.on_leader(by_gid[gid], "transfer", {"node": dest})
            except CommandError:
                continue  # left where it is, as RabbitMQ does with a failed migration
            by_node[node].remove(gid)
            by_node.setdefault(dest, []).append(gid)
    rows = [[n, sum(by_gid[g].type == "quorum" for g in gids),
             sum(by_gid[g].type == "classic" for g in gids)] for n, gids in sorted(by_node.items())]
    return {"columns": ["Node name", "Number of quorum queues",
                        "Number of replicated classic queues"], "rows": rows}


# -- health --------------------------------------------------------------------------------------------
@command("queues_quorum_critical")
async def queues_quorum_critical(rt: Runtime, args: dict) -> dict:
    """Replicated queues with a voting member on this node that would lose their majority
    if this node stopped (those that have lost it already count too)."""
    await _quorum(rt).ops.metadata_barrier()
    me = rt.app.node.name
    records = [r for r in _replicated_queues(rt) if me in r.members]
    statuses = await _quorum(rt).ops.statuses(records, STATUS_TIMEOUT_S)
    critical = []
    for record in records:
        st = statuses.get(group_id(record), {})
        if "leader" in st:
            voters = st["voters"]
            if me not in voters:
                continue  # a member that is not synchronised does not vote
            alive = [n for n in st["alive"] if n != me]
            if len(alive) >= len(voters) // 2 + 1:
                continue
        critical.append({"name": record.name, "virtual_host": record.vhost,
                         "type": record.type, "readable_name": readable(record)})
    return {"queues": critical}


@command("list_unresponsive_queues")
async def list_unresponsive_queues(rt: Runtime, args: dict) -> dict:
    """Queues that do not answer from here within the timeout: a replicated queue whose
    leader cannot be found or does not answer, or whose leader reaches no majority of its
    voters; a classic queue whose node is not running."""
    vhost = args["vhost"]
    v = rt.app.node.meta.vhosts.get(vhost)
    if v is None:
        raise CommandError(f'Virtual host "{vhost}" does not exist', EX_DATAERR)
    me = rt.app.node.name
    timeout_s = float(args.get("queue_timeout") or DEFAULT_QUEUE_TIMEOUT_S)
    records = list(v.queues.values())
    if args.get("local"):
        records = [r for r in records if me in r.members or (not r.members
                                                             and r.node in ("", me))]
    cluster = rt.app.cluster
    running = set(cluster.running()) if cluster is not None else {me}
    statuses = await _quorum(rt).ops.statuses([r for r in records if r.members], timeout_s)
    unresponsive: list[tuple[QueueRecord, str, str]] = []  # record, leader or home, reason
    for record in records:
        if not record.members:
            if record.node and record.node not in running:
                unresponsive.append((record, record.node,
                                     f"its node {record.node} is not running"))
            continue
        st = statuses.get(group_id(record), {})
        if "leader" not in st:
            unresponsive.append((record, "", st.get("error", "no answer")))
        elif len(st["alive"]) * 2 <= len(st["voters"]):
            unresponsive.append((record, st["leader"],
                                 f"its leader {st['leader']} reaches {len(st['alive'])} of "
                                 f"its {len(st['voters'])} voters"))
    known: dict[str, Any] = {
        "name": lambda u: u[0].name,
        "durable": lambda u: u[0].durable,
        "auto_delete": lambda u: u[0].auto_delete,
        "arguments": lambda u: amqp_table(u[0].arguments),
        "pid": lambda u: f"<{u[1] or u[0].node or me}.{u[0].id}>",
        "type": lambda u: u[0].type,
        "reason": lambda u: u[2],
    }
    columns = list(args.get("columns") or ["name"])
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise CommandError(f"Info key(s) {','.join(unknown)} are not supported by "
                           f"list_unresponsive_queues; valid keys: {', '.join(known)}", EX_USAGE)
    return {"columns": columns, "rows": [[known[c](u) for c in columns] for u in unresponsive]}


# -- synchronisation (classic queues under ha-sync-mode: manual) ----------------------------------
@command("sync_queue")
async def sync_queue(rt: Runtime, args: dict) -> dict:
    await _quorum(rt).ops.metadata_barrier()
    record = _classic_mirrored(rt, _record(rt, args["vhost"], args["queue"]))
    return await _quorum(rt).ops.on_leader(record, "sync")


@command("cancel_sync_queue")
async def cancel_sync_queue(rt: Runtime, args: dict) -> dict:
    await _quorum(rt).ops.metadata_barrier()
    record = _classic_mirrored(rt, _record(rt, args["vhost"], args["queue"]))
    return await _quorum(rt).ops.on_leader(record, "cancel_sync")


async def refresh_replicas(rt: Runtime, records: list[QueueRecord]) -> None:
    """Before a listing shows leaders and synchronised members of queues not led here."""
    quorum = rt.app.quorum
    if quorum is not None:
        await quorum.ops.refresh(records)


__all__ = ["member_name", "refresh_replicas"]
