"""The metadata log of a node: the "meta" Raft group on the node's RaftHost.

Every node of a cluster (one on a lone node) is a voter of the group; a command proposed
anywhere reaches the group's leader (directly, or forwarded over the cluster links when the
leader is another node), is committed by a majority and applied on every node in log order
through `Node.committed`. The entry carries the proposer's `origin` and reference, so only
the proposing node answers the waiting channel, command handler or HTTP request, with the
reply its own (deterministic) apply computed: replies never cross the wire.

Failure handling. A proposal refused before it entered any log (no leader known, the leader
said it is not the leader, no link to it) is retried until `timeout_s`; once an entry may
be in a leader's log it is not proposed again (it could be applied twice): the proposer
waits for it to be applied, and past the deadline it is refused with 541 INTERNAL_ERROR
naming the cause (typically: this node cannot reach a majority of the cluster).

Snapshots are the commands that rebuild the current metadata (`snapshot_commands`), so
restoring one replays them into a fresh MetaMachine and reconciles the live queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ..amqp.constants import INTERNAL_ERROR
from ..amqp.errors import AMQPError
from ..core.metalog import MetaLog
from ..core.pending import Pending
from ..meta.machine import MetaMachine
from ..replication.host import RaftHost
from ..store.journal import decode_table, encode_table, snapshot_commands

if TYPE_CHECKING:
    from ..core.node import Node

log = logging.getLogger("warrenmq.metalog")

GROUP = "meta"
TIMEOUT_S = 10.0
RETRY_S = 0.05

Forward = Callable[[int, bytes], "asyncio.Future[Any]"]


class NotLeaderHere(Exception):
    """A forwarded proposal reached a node that does not lead the group."""


def encode_entry(origin: str, ref: int, command: dict) -> bytes:
    return encode_table({"o": origin, "r": ref, "c": command})


def decode_entry(data: bytes) -> tuple[str, int, dict]:
    entry = decode_table(data)
    origin = entry["o"]
    return (origin.decode() if isinstance(origin, bytes) else origin), entry["r"], entry["c"]


class RaftMetaLog(MetaLog):
    def __init__(self, host: RaftHost, node: Node, on_applied: Callable[[], None],
                 timeout_s: float = TIMEOUT_S) -> None:
        self.host = host
        self.node = node
        self.on_applied = on_applied  # the shell flushes what the command's effects wrote
        self.timeout_s = timeout_s
        # forward(leader_id, entry) -> awaitable; set once cluster links exist
        self.forward: Callable[[int, str, bytes], Any] | None = None
        self.describe_unreachable: Callable[[], str] = lambda: "no leader is known"
        self._tasks: set[asyncio.Task] = set()

    # -- proposing ------------------------------------------------------------------------
    def submit(self, node: Node, origin: str, ref: int, command: dict) -> None:
        task = asyncio.get_running_loop().create_task(
            self._submit(ref, encode_entry(origin, ref, command)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, ref: int, data: bytes) -> None:
        waiting = self.node._waiting
        why = await submit(self.host, GROUP, data, self.forward, self.describe_unreachable,
                           self.timeout_s, lambda: ref in waiting)
        if ref in waiting:
            self.node.refused(ref, AMQPError(
                INTERNAL_ERROR, f"metadata change not committed within {self.timeout_s:g}s: "
                f"{why}"))


    # -- the group's state machine ----------------------------------------------------------
    def apply(self, index: int, data: bytes) -> Any:
        origin, ref, command = decode_entry(data)
        try:
            reply = self.node.committed(command, origin, ref)
        except Exception:
            log.exception("metadata command %s at index %d failed to apply", command.get("op"),
                          index)
            reply = None
        self.on_applied()
        return None if isinstance(reply, AMQPError) else True

    def snapshot(self) -> bytes:
        return encode_table({"commands": snapshot_commands(self.node)})

    def restore(self, index: int, data: bytes) -> None:  # noqa: ARG002
        """Replace the metadata by a snapshot's: replay it into a fresh machine, then create
        and delete live queues so that they match."""
        node = self.node
        before = {(q.vhost, q.name, q.record.id) for qs in node.queues.values()
                  for q in qs.values()}
        fresh = MetaMachine()
        for command in decode_table(data)["commands"]:
            fresh.apply(command)
        node.meta = fresh
        keep = set()
        for v in fresh.vhosts.values():
            for rec in v.queues.values():
                if rec.members:  # replicated: the shell hosts (or keeps) its replica
                    if node.name in rec.members:
                        keep.add((v.name, rec.name, rec.id))
                    if node.on_quorum_created is not None:
                        node.on_quorum_created(rec)
                    continue
                if rec.node and rec.node != node.name:
                    continue
                keep.add((v.name, rec.name, rec.id))
                if (v.name, rec.name, rec.id) not in before:
                    node.create_live_queue(rec)
        for vhost, name, _qid in before - keep:
            q = node.queues.get(vhost, {}).pop(name, None)
            if q is not None:
                node._queue_gone(q)
        self.on_applied()


# -- proposing to a group from any node --------------------------------------------------------
async def submit(host: RaftHost, group: str, data: bytes, forward: Any,
                 describe: Callable[[], str], timeout_s: float,
                 waiting: Callable[[], bool], idempotent: bool = False) -> str:
    """Get `data` into `group`'s log: on the leader here, or forwarded to it with
    `forward(leader_id, group, data)`. Retried while nothing can have been appended (no
    leader known, not the leader, no link); once it may be in a log it is not proposed
    again (it could apply twice) unless the group's applier drops duplicates
    (`idempotent`): then an entry not applied when a new term starts here (a new leader,
    which may not have it) is proposed again. The caller learns the outcome when it is
    applied, and `waiting()` says whether that happened. Returns why it gave up, if it did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    appended = False
    appended_term = 0
    why = ""
    while waiting() and loop.time() < deadline:
        if appended and idempotent and _term(host, group) > appended_term:
            appended = False  # the leader it went to may have lost it: send it again
        if not appended:
            leader = host.leader(group)
            appended_term = _term(host, group)
            try:
                if leader == host.node_id:
                    fut = host.propose(group, data)
                    appended = True
                    await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time()))
                    return ""
                if leader and forward is not None:
                    await asyncio.wait_for(forward(leader, group, data),
                                           max(0.0, deadline - loop.time()))
                    appended = True
                    continue
                why = describe()
            except NotLeaderHere:
                why = "the leader changed"
            except TimeoutError:
                break
            except Exception as e:  # noqa: BLE001 - the entry may or may not be in some log
                why = str(e) or type(e).__name__
                if type(e).__name__ not in ("NotLeader", "PeerUnavailable"):
                    appended = True
        await asyncio.sleep(RETRY_S)
    where = describe()
    return f"{why}; {where}" if why and where and where not in why else (why or where)


def _term(host: RaftHost, group: str) -> int:
    try:
        return host.group(group).term
    except KeyError:
        return 0


def propose_forwarded(host: RaftHost, group: str, data: bytes) -> None:
    """A follower's proposal, on the leader: append it (the follower waits for the apply);
    NotLeaderHere if this node does not lead the group."""
    if host.leader(group) != host.node_id:
        raise NotLeaderHere(f"not the leader of {group} (leader is {host.leader(group)})")
    fut = host.propose(group, data)
    # the proposer learns the outcome from the apply on its own node, not from this future
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())


# -- awaiting the core's Pendings in the shell ------------------------------------------------
async def wait(p: Pending) -> Any:
    if not p.done:
        fut = asyncio.get_running_loop().create_future()
        p.on_done(lambda _: fut.done() or fut.set_result(None))
        await fut
    return p.result()


async def finish(handler_result: Any) -> None:
    """Run a channel handler to its end outside a connection (management's direct session):
    a proposing handler yields Pendings, which are awaited here."""
    if not isinstance(handler_result, Generator):
        return
    gen = handler_result
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            p = gen.send(value) if error is None else gen.throw(error)
        except StopIteration:
            return
        try:
            value, error = await wait(p), None
        except BaseException as e:  # noqa: BLE001 - thrown back into the handler
            value, error = None, e
