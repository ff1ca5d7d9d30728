"""The broker state of one node: metadata, live queues, connections; sans I/O.

`propose` hands a metadata command to the node's metadata log and returns a `Pending`;
the log orders it (a Raft group: one member on a lone node, every node of a cluster) and
calls `committed` on every node, which applies it to the MetaMachine, carries out its
effects on live queues and answers the proposer on the node it came from. Connections
write into their own buffers and register in `dirty`; the shell drains `dirty` after each
batch of input (`flush`), which is what coalesces writes and publisher confirms.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from .. import __version__
from ..amqp import codec
from ..amqp.errors import AMQPError
from ..config import Config
from ..meta.access import check_password, hash_password
from ..meta.machine import MetaMachine
from ..meta.policies import effective_policy, effective_value
from ..queues.classic import ClassicQueue
from .dead_letter import dead_letter_copy, is_cycle
from .journal import Journal, NullJournal
from .metalog import LocalMetaLog, MetaLog
from .pending import Pending
from .queue_settings import apply_queue_settings
from .remote import home_down_error, is_remote_classic
from .replyto import ReplyTo

if TYPE_CHECKING:
    from ..meta.records import ExchangeRecord, QueueRecord
    from .channel import Channel
    from .connection import Connection
    from .consumer import Consumer
    from .message import Message

log = logging.getLogger("warrenmq.node")

LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")


class Node:
    def __init__(self, config: Config, journal: Journal | None = None) -> None:
        self.config = config
        self.journal = journal or NullJournal()
        self.meta = MetaMachine()
        self.queues: dict[str, dict[str, ClassicQueue]] = {}  # vhost -> name -> queue
        self.connections: dict[str, Connection] = {}
        self.dirty: list[Connection] = []
        self.confirms: list[Channel] = []
        self.alarms: set[str] = set()  # resource alarms in force: "memory", "disk"
        self.now_ms = 0.0  # wall-clock milliseconds, set by the shell before each input
        self.timed: set[ClassicQueue] = set()  # queues with TTL or expiry to run
        self.reply_channels = ReplyTo(self)  # direct reply-to keys of this node's channels
        self.msgs_published = 0  # basic.publish accepted (management's publish rate)
        self.name = config.nodename
        self.meta_log: MetaLog = LocalMetaLog()
        # proposals of this node waiting for their command to be applied, by reference;
        # `origin` tells this incarnation's commands from those of an earlier run
        self.origin = f"{self.name}/{id(self):x}"
        self._waiting: dict[int, Pending] = {}
        self._next_ref = 0
        self.on_applied: list = []  # shell hooks run after each committed command
        self.on_resumed: list = []  # shell hooks run when a parked connection resumes
        self.cluster_size = 1  # voters of the metadata group, kept up to date by the shell
        # quorum queues are Raft groups: the shell creates their replicas (record) and
        # removes them (queue) when they are deleted
        self.on_quorum_created = None
        self.describe_replicas = None  # record -> {"leader", "members", "online"} (shell)
        # a classic queue of another node was created: the shell proxies it (core/remote.py)
        self.on_remote_queue: Callable[[QueueRecord], None] | None = None
        self.on_queue_gone: list = []

    # -- boot -------------------------------------------------------------------------------------
    def bootstrap(self) -> list[Pending]:
        """First start: the default vhost and user, as RabbitMQ creates them."""
        cfg = self.config
        return [
            self.propose({"op": "vhost.add", "name": cfg.default_vhost}),
            self.propose({"op": "user.add", "name": cfg.default_user,
                          "password_hash": hash_password(cfg.default_pass),
                          "tags": ["administrator"]}),
            self.propose({"op": "permission.set", "user": cfg.default_user,
                          "vhost": cfg.default_vhost, "configure": ".*", "write": ".*",
                          "read": ".*"}),
        ]

    # -- metadata -----------------------------------------------------------------------------------
    def propose(self, command: dict) -> Pending:
        """Submit a metadata command; the Pending gets its reply once it is applied here (an
        AMQPError reply fails it)."""
        self._next_ref += 1
        ref = self._next_ref
        p = Pending()
        self._waiting[ref] = p
        self.meta_log.submit(self, self.origin, ref, command)
        return p

    def placed(self, command: dict) -> dict:
        """A queue.declare made without a channel (definitions import): the queue lives on
        this node; a quorum queue on every member (as a channel's declare does)."""
        if command.get("op") == "queue.declare" and not command.get("node"):
            command = {**command, "node": self.name}
            if command.get("type") == "quorum" and not command.get("members"):
                command["members"] = [self.name] + sorted(
                    n for n in self.meta.members if n != self.name)
        return command

    def committed(self, command: dict, origin: str = "", ref: int = 0) -> Any:
        """The metadata log committed `command`: apply it, and answer it if it came from here."""
        reply = self.apply(command)
        if origin == self.origin:
            p = self._waiting.pop(ref, None)
            if p is not None:
                if isinstance(reply, AMQPError):
                    p.fail(reply)
                else:
                    p.resolve(reply)
        for hook in self.on_applied:
            hook(command)
        return reply

    def refused(self, ref: int, error: BaseException) -> None:
        """The metadata log could not take command `ref` (no majority, node stopping)."""
        p = self._waiting.pop(ref, None)
        if p is not None:
            p.fail(error)

    def fail_waiting(self, error: BaseException) -> None:
        waiting, self._waiting = self._waiting, {}
        for p in waiting.values():
            p.fail(error)

    def apply(self, command: dict) -> Any:
        """Apply to the MetaMachine and to the live queues of this node."""
        reply, effects = self.meta.apply(command)
        for kind, record in effects:
            if kind == "queue.created":
                if record.members:  # replicated: quorum, or classic under an ha-* policy
                    if self.on_quorum_created is not None:
                        self.on_quorum_created(record)  # the shell hosts its Raft group
                    if self.name not in record.members and self.on_remote_queue is not None:
                        self.on_remote_queue(record)  # no replica here: used through one
                elif not record.node or record.node == self.name:
                    self.create_live_queue(record)  # a classic queue lives where declared
                elif self.on_remote_queue is not None:
                    self.on_remote_queue(record)  # used from here through its home node
            elif kind == "policy.changed":
                for q in self.queues.get(record, {}).values():
                    if q.type_name != "classic":
                        continue
                    apply_queue_settings(q, q.record.arguments, self._queue_policy(q))
                    if q.max_length is not None or q.max_length_bytes is not None:
                        q._drop_overflow()
            elif kind == "queue.members":
                if self.on_quorum_created is not None:
                    self.on_quorum_created(record)  # the shell adds or drops its replica
                if self.on_remote_queue is not None:
                    self.on_remote_queue(record)  # and the proxy, where there is no replica
            elif kind == "queue.deleted":
                q = self.queues.get(record.vhost, {}).pop(record.name, None)
                if q is not None:
                    self._queue_gone(q)
        return reply

    def create_live_queue(self, record: QueueRecord) -> ClassicQueue:
        q = ClassicQueue(record, self.journal, self.config.queue_page_bytes)
        q.on_dead = self.dead_letter
        q.clock = self.clock
        q.on_timed = self.timed.add
        q.last_used_ms = self.now_ms
        apply_queue_settings(q, record.arguments, self._queue_policy(q))
        self.queues.setdefault(record.vhost, {})[record.name] = q
        return q

    def live_queue(self, vhost: str, name: str) -> ClassicQueue | None:
        qs = self.queues.get(vhost)
        return qs.get(name) if qs else None

    def home_down(self, vhost: str, name: str) -> AMQPError | None:
        """The refusal for a classic queue of another node that is not reachable from here
        (its proxy is out of `queues` while its home is down), else None."""
        v = self.meta.vhosts.get(vhost)
        record = v.queues.get(name) if v is not None else None
        if record is None or not is_remote_classic(record, self.name) or \
                self.live_queue(vhost, name) is not None:
            return None
        return home_down_error(record)

    def delete_queue(self, q: ClassicQueue) -> Pending:
        return self.propose({"op": "queue.delete", "vhost": q.vhost, "name": q.name})

    def _queue_gone(self, q: ClassicQueue) -> None:
        q.delete()
        for hook in self.on_queue_gone:
            hook(q)
        consumers = list(q.consumers)
        q.consumers.clear()
        for consumer in consumers:
            ch = consumer.channel
            if ch.consumers.pop(consumer.tag, None) is not None and ch.state == "open":
                if ch.conn.capabilities.get("consumer_cancel_notify"):
                    ch.send(codec.make(C.Basic.Cancel, consumer_tag=consumer.tag, nowait=True))

    def remove_consumer(self, consumer: Consumer) -> Pending | None:
        """Returns the auto-delete of the queue, when its last consumer went."""
        q = consumer.queue
        at_home = q.remove_consumer(consumer)
        q.last_used_ms = self.now_ms
        if at_home is not None:  # a queue of another node: removed (and auto-deleted) there
            return at_home
        if q.record.auto_delete and not q.consumers and q.had_consumers and not q.deleted:
            return self.delete_queue(q)
        return None

    def clock(self) -> float:
        return self.now_ms

    def _queue_policy(self, q: ClassicQueue) -> dict:
        if not self.meta.vhosts[q.vhost].policies:
            return {}
        policy = effective_policy(self.meta, q.vhost, "queue", q.name)
        return policy.definition if policy is not None else {}

    def dead_letter(self, queue: ClassicQueue, messages: list[Message],
                    reason: str) -> list[list[Pending] | None]:
        """Messages died in `queue` (rejected, expired, maxlen): to its dead-letter exchange
        if it has one, else dropped. Returns, per message, None when it went nowhere, else what
        its copies wait for (the targets' confirms, the journal's fsync), which at-least-once
        dead-lettering waits for; classic queues ignore it (at most once)."""
        dlx = queue.dead_letter_exchange
        if dlx is None:
            return [None] * len(messages)
        vhost = self.meta.vhosts.get(queue.vhost)
        x = vhost.exchanges.get(dlx) if vhost is not None else None
        if x is None:
            return [None] * len(messages)
        outcomes: list[list[Pending] | None] = []
        for msg in messages:
            if msg.body is None:
                msg.body = self.journal.read_body(msg)
            rk = queue.dead_letter_routing_key or msg.routing_key
            copy = dead_letter_copy(msg, queue.name, reason, dlx, rk, self.now_ms)
            targets = [q for q in self.route(queue.vhost, x, copy) if not is_cycle(copy, q.name)]
            if not targets:
                outcomes.append(None)
                continue
            waits: list[Pending] = []
            copy.refs = len(targets)
            if copy.persistent:
                durable = [q for q in targets if q.journalled]
                if durable:
                    self.journal.log_message(copy, durable)
                    synced = Pending()
                    self.journal.after_sync(partial(synced.resolve, True))
                    waits.append(synced)
            for q in targets:
                p = q.enqueue(copy)
                if p is not None:  # confirmed later (a replicated or a remote queue)
                    waits.append(p)
            outcomes.append(waits)
        return outcomes

    def enqueue(self, msg: Message, queues: list) -> tuple[bool, bool, list[Pending], bool]:
        """Put a routed message into its queues: full ones (overflow reject-publish) refuse
        it, persistent copies for journalled queues are logged once. Returns (refused by a
        full queue, waits for the journal's fsync, Pendings of queues that confirm later,
        taken by at least one queue)."""
        refused = False
        full = [q for q in queues if q.rejects(msg)]
        if full:
            refused = True
            for q in full:
                if q.overflow == "reject-publish-dlx":
                    q.on_dead(q, [msg], "maxlen")
            queues = [q for q in queues if q not in full]
        needs_sync = False
        waits: list[Pending] = []
        if queues:
            msg.refs = len(queues)
            if msg.persistent:
                durable = [q for q in queues if q.journalled]
                if durable:
                    self.journal.log_message(msg, durable)
                    needs_sync = True
            for q in queues:
                p = q.enqueue(msg)
                if p is not None:  # confirmed later (a replicated or a remote queue)
                    waits.append(p)
        return refused, needs_sync, waits, bool(queues)

    def check_consumer_timeouts(self, now_ms: float) -> None:
        """Deliveries unacknowledged past the consumer timeout: that consumer is cancelled
        (with a notification) and its deliveries requeued; the channel stays open (the
        behaviour RabbitMQ 4.3 adopted, rather than closing the channel)."""
        self.now_ms = now_ms
        for conn in list(self.connections.values()):
            for ch in list(conn.channels.values()):
                if ch.unacked:
                    ch.check_ack_timeout(now_ms)

    def tick(self, now_ms: float) -> None:
        """Timers of the queues: message TTL at the head, and unused queues' expiry."""
        self.now_ms = now_ms
        expired = []
        for q in list(self.timed):
            if q.deleted:
                self.timed.discard(q)
                continue
            if q.has_expiring:
                q.expire(now_ms)
            if q.expires_ms is not None:
                if not q.consumers and now_ms - q.last_used_ms >= q.expires_ms:
                    expired.append(q)
            elif not q.has_expiring:
                self.timed.discard(q)
        for q in expired:
            if not q.deleted:
                self.delete_queue(q)

    # -- routing ------------------------------------------------------------------------------------
    def route(self, vhost: str, x: ExchangeRecord, msg: Message,
              extra_keys: list[str] | None = None) -> list[ClassicQueue]:
        """The queues a message published to `x` goes to (with sender-selected CC/BCC keys,
        the union over every key); when there are none, the exchange's alternate exchange
        (argument first, then policy) gets it, following chains once."""
        out = self._route(vhost, x, msg, msg.routing_key)
        for key in extra_keys or ():
            out += self._route(vhost, x, msg, key)
        if extra_keys:
            out = list(dict.fromkeys(out))
        if out:
            return out
        seen = {x.name}
        while True:
            ae = x.arguments.get("alternate-exchange")
            if ae is None and self.meta.vhosts[vhost].policies:
                ae = effective_value(self.meta, vhost, "exchange", x.name, "alternate-exchange")
            if isinstance(ae, bytes):
                ae = ae.decode()
            if not ae or ae in seen:
                return []
            seen.add(ae)
            nx = self.meta.vhosts[vhost].exchanges.get(ae)
            if nx is None:
                log.warning("alternate exchange '%s' of exchange '%s' in vhost '%s' does not "
                            "exist", ae, x.name, vhost)
                return []
            out = self._route(vhost, nx, msg, msg.routing_key)
            if out:
                return out
            x = nx

    def _route(self, vhost: str, x: ExchangeRecord, msg: Message,
               routing_key: str) -> list[ClassicQueue]:
        qs = self.queues.get(vhost)
        if not qs:
            return []
        if x.name == "":
            q = qs.get(routing_key)
            return [q] if q is not None else []
        dests = x.router.route(routing_key, msg.headers)
        if not dests:
            return []
        out: list[ClassicQueue] = []
        follow = None
        for d in dests:
            if d.kind == "queue":
                q = qs.get(d.name)
                if q is not None:
                    out.append(q)
            else:
                (follow := follow or []).append(d.name)
        if follow:
            exchanges = self.meta.vhosts[vhost].exchanges
            seen = {x.name}
            while follow:
                name = follow.pop()
                if name in seen:
                    continue
                seen.add(name)
                nx = exchanges.get(name)
                if nx is None:
                    continue
                for d in nx.router.route(routing_key, msg.headers):
                    if d.kind == "queue":
                        q = qs.get(d.name)
                        if q is not None:
                            out.append(q)
                    elif d.name not in seen:
                        follow.append(d.name)
            out = list(dict.fromkeys(out))
        return out

    # -- connections ----------------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, peer: tuple | None) -> str | None:
        """None if the login is accepted, else the reason it is refused (for the log)."""
        user = self.meta.users.get(username)
        if user is None:
            return f"user '{username}' not found"
        if not check_password(user, password):
            return f"invalid credentials for user '{username}'"
        if username in self.config.loopback_users and peer is not None:
            if not str(peer[0]).startswith(LOOPBACK_PREFIXES):
                return f"user '{username}' can only connect via localhost"
        return None

    def server_properties(self) -> dict:
        return {
            "capabilities": {
                "publisher_confirms": True,
                "exchange_exchange_bindings": True,
                "basic.nack": True,
                "consumer_cancel_notify": True,
                "connection.blocked": True,
                "consumer_priorities": True,
                "authentication_failure_close": True,
                "per_consumer_qos": True,
                "direct_reply_to": True,
            },
            "cluster_name": self.config.cluster_name or self.config.nodename,
            "copyright": "Copyright (c) the WarrenMQ authors",
            "information": "Licensed under the Apache License 2.0",
            "platform": f"Python {platform.python_version()}",
            "product": "WarrenMQ",
            "version": __version__,
        }

    # -- resource alarms ------------------------------------------------------------------------------
    def set_alarm(self, resource: str, active: bool) -> None:
        """Memory or disk alarm raised or cleared: publishing connections are blocked (no
        longer read) while any alarm is in force; consumers keep draining (RabbitMQ's rule)."""
        if active == (resource in self.alarms):
            return
        if active:
            self.alarms.add(resource)
            log.warning("%s resource limit alarm set on node %s; publishers will be blocked",
                        resource, self.config.nodename)
            for conn in list(self.connections.values()):
                if conn.has_published:
                    conn.block(self.blocked_reason())
        else:
            self.alarms.discard(resource)
            log.warning("%s resource limit alarm cleared on node %s", resource,
                        self.config.nodename)
            if not self.alarms:
                for conn in list(self.connections.values()):
                    conn.unblock()
            else:
                for conn in list(self.connections.values()):
                    if conn.blocked:
                        conn.block(self.blocked_reason())

    def blocked_changed(self, conn: Connection) -> None:
        """Hook for the shell: stop or restart reading from a connection."""
        shell = getattr(conn, "shell", None)
        if shell is not None:
            shell.update_reading()

    def resumed(self, conn: Connection) -> None:
        """A parked connection got its metadata reply: the shell flushes and reads again."""
        shell = getattr(conn, "shell", None)
        if shell is not None:
            shell.update_reading()
        else:  # no socket to pace the reading (in-process tests): handle what is buffered
            conn.pump()
        for hook in self.on_resumed:
            hook(conn)

    def blocked_reason(self) -> str:
        return "low on " + " and ".join(sorted(self.alarms))

    def connection_opened(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def connection_closed(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        # exclusive queues die with their connection
        for qs in list(self.queues.values()):
            for q in [q for q in qs.values() if q.record.exclusive_owner == conn.id]:
                self.delete_queue(q)

    def flush(self) -> list[Connection]:
        """Finish a batch of input: emit pending confirms; return connections with output."""
        if self.confirms:
            channels, self.confirms = self.confirms, []
            for ch in channels:
                ch.flush_confirms()
        self.journal.flush()
        dirty, self.dirty = self.dirty, []
        return dirty

    def remove_transient(self) -> list[Pending]:
        """After a restart of this node: what was not durable did not survive it (RabbitMQ's
        rule: non-durable and exclusive queues of this node; non-durable exchanges, unless
        other nodes are running and still use them)."""
        out = []
        for vhost in list(self.meta.vhosts.values()):
            for q in list(vhost.queues.values()):
                if q.node and q.node != self.name:
                    continue
                if not q.durable or q.exclusive_owner is not None:
                    out.append(self.propose({"op": "queue.delete", "vhost": vhost.name,
                                             "name": q.name}))
            if self.cluster_size > 1:
                continue
            for x in list(vhost.exchanges.values()):
                if not x.durable:
                    out.append(self.propose({"op": "exchange.delete", "vhost": vhost.name,
                                             "name": x.name}))
        return out


def encode_close(reply_code: int, reply_text: str) -> bytes:
    return codec.encode_method(0, C.Connection.Close(reply_code=reply_code, reply_text=reply_text,
                                                      class_id=0, method_id=0))
