"""One AMQP channel: a handler per method, exactly one place for each decision.

The connection hands the channel decoded methods and raw content frames; the channel checks
permissions and preconditions, proposes metadata commands to the node, routes and enqueues
publishes, tracks deliveries awaiting acknowledgement, confirms, transactions and QoS, and
writes its replies into the connection's output buffer. No I/O happens here.

Errors are raised as `AMQPError`; the connection turns them into channel.close or
connection.close depending on the reply code (HARD_ERRORS), as RabbitMQ does.
"""

from __future__ import annotations

import base64
import bisect
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Generator
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from ..amqp import codec
from ..amqp.constants import (
    ACCESS_REFUSED,
    COMMAND_INVALID,
    FRAME_ERROR,
    NO_ROUTE,
    NOT_ALLOWED,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    RESOURCE_LOCKED,
    UNEXPECTED_FRAME,
)
from ..amqp.errors import AMQPError
from ..meta.access import topic_permitted
from ..meta.policies import effective_policy
from ..queues.quorum.settings import check_declare_arguments as check_quorum_args
from .arguments import check_exchange_equivalence, check_queue_equivalence, validate_queue_args
from .consumer import Consumer
from .exchanges import EXCHANGE_TYPES
from .message import FLAG_EXPIRATION, FLAG_HEADERS, FLAG_USER_ID, Message, sender_selected
from .pending import Pending
from .replicas import policy_replicas
from .replyto import REPLY_PREFIX, REPLY_TO

if TYPE_CHECKING:
    from ..meta.records import ExchangeRecord, QueueRecord
    from ..queues.classic import ClassicQueue
    from .connection import Connection

log = logging.getLogger("warrenmq.channel")

# A handler that proposes metadata commands is a generator: it yields each command's Pending
# and is resumed with the reply (or the error thrown in) once the command is applied. The
# connection reads nothing more until then, so a channel's methods keep their order.
Proposing = Generator[Pending, Any, None]

OPEN, CLOSING = "open", "closing"
_REPLY_TO_SS = bytes((len(REPLY_TO),)) + REPLY_TO.encode()
FLAG_REPLY_TO = 0x0200


def _gen_name(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _expiration_ms(value: Any) -> int:
    """The expiration property: a string of non-negative integer milliseconds."""
    text = value.decode() if isinstance(value, (bytes, bytearray)) else str(value)
    if not text.isdigit():
        raise AMQPError(PRECONDITION_FAILED, f"invalid expiration '{text}': no_integer")
    return int(text)


class Channel:
    def __init__(self, conn: Connection, number: int) -> None:
        self.conn = conn
        self.node = conn.node
        self.number = number
        self.state = OPEN
        self.deliverable = conn.writable
        self.consumers: dict[str, Consumer] = {}
        # delivery_tag -> (queue, entry, consumer or None for basic.get); insertion = tag order
        self.unacked: dict[int, tuple[ClassicQueue, tuple, Consumer | None]] = {}
        self.unacked_count = 0
        self.next_delivery_tag = 0
        self.prefetch = 0  # applied to consumers created later (global=false)
        self.global_prefetch = 0  # shared by the channel's consumers (global=true)
        self.confirm = False
        self.publish_seq = 0
        self.confirmed_seq = 0  # the highest publish seq acked to the client
        self.confirm_target = 0  # the highest publish seq an ack is sent or scheduled for
        self.confirm_needs_sync = False  # a publish since the last flush awaits the disk
        # Confirms that wait for something (the journal's fsync; a replicated or remote
        # queue's answer), oldest first: [seq, outstanding count]; acks go out in order.
        self.confirm_queue: deque[list[int]] = deque()
        # (publish seq, Pending) gathered since the last flush: queues whose enqueue is only
        # confirmed later answer with a Pending (a falsy value means the queue refused it)
        self.confirm_waits: list[tuple[int, Pending]] = []
        self._enqueue_waits: list[Pending] = []
        self.nacks: list[int] = []  # publish seqs refused by a full queue, to nack in order
        self.on_confirmed: Callable[[], None] | None = None  # for in-process sessions
        self.confirm_pending = False
        self.tx = False
        # buffered inside a transaction: ("publish", fn) or ("settle", taken, rejected, requeue)
        self.tx_ops: list[tuple] = []
        self.last_queue = ""
        # (delivery_tag, ms): every tag up to it had gone out by then; for ack timeouts
        self.checkpoints: deque[tuple[int, float]] = deque()
        self.timed_out_tags: set[int] = set()  # acks for these are ignored, not errors
        self.reply_tag: str | None = None  # the direct reply-to consumer, if any
        self.reply_key: str | None = None
        self.flow_active = True
        # content being assembled: the publish method waiting for its header and body
        self._publish: tuple | None = None
        self._header: bytes | None = None
        self._body_size = 0
        self._body_parts: list[bytes] = []
        self._body_received = 0

    # -- frames from the connection -------------------------------------------------------------
    def handle_method(self, class_id: int, method_id: int, payload: bytes) -> None:
        if self._publish is not None:
            what = "body" if self._header is not None else "header"
            raise AMQPError(UNEXPECTED_FRAME, f"expected content {what} for class 60, got "
                            "non content frame instead", 60, 40)
        if class_id == 60:
            if method_id == 40:
                exchange, routing_key, ex_ss, rk_ss, bits = codec.decode_publish(payload)
                if bits & 2:
                    raise AMQPError(NOT_IMPLEMENTED, "immediate=true", 60, 40)
                self._publish = (exchange, routing_key, ex_ss, rk_ss, bool(bits & 1))
                return
            if method_id == 80:
                tag, bits = codec.decode_tag_bits(payload, 80)
                self._guard(60, 80, self.handle_ack, tag, bool(bits & 1))
                return
            if method_id == 120:
                tag, bits = codec.decode_tag_bits(payload, 120)
                self._guard(60, 120, self.handle_nack, tag, bool(bits & 1), bool(bits & 2))
                return
            if method_id == 90:
                tag, bits = codec.decode_tag_bits(payload, 90)
                self._guard(60, 90, self.handle_nack, tag, False, bool(bits & 1))
                return
        method = codec.decode_method(payload)
        handler = _HANDLERS.get((class_id, method_id))
        if handler is None:
            raise AMQPError(COMMAND_INVALID, f"unexpected method {method.name} on a channel",
                            class_id, method_id)
        self._guard(class_id, method_id, handler, self, method)

    def _guard(self, class_id: int, method_id: int, fn: Callable, *args: Any) -> None:
        try:
            result = fn(*args)
            if type(result) is GeneratorType:  # a handler that waits for metadata commands
                self.conn.drive(self, result, class_id, method_id)
        except AMQPError as e:
            raise e.on(class_id, method_id) from None

    def handle_header(self, payload: bytes) -> None:
        if self._publish is None or self._header is not None:
            raise AMQPError(UNEXPECTED_FRAME, "expected method frame, got content header")
        if len(payload) < 14:
            raise AMQPError(FRAME_ERROR, "content header too short")
        class_id, _weight, body_size = codec.CONTENT_HDR.unpack_from(payload, 0)
        if class_id != 60:
            raise AMQPError(UNEXPECTED_FRAME, f"content header for class {class_id}", 60, 40)
        limit = self.node.config.max_message_size
        if body_size > limit:
            self._publish = None
            raise AMQPError(PRECONDITION_FAILED,
                            f"message size {body_size} is larger than configured max size {limit}",
                            60, 40)
        if body_size == 0:
            self._complete(payload, b"")
        else:
            self._header = payload
            self._body_size = body_size

    def handle_body(self, payload: bytes) -> None:
        if self._header is None:
            raise AMQPError(UNEXPECTED_FRAME, "expected method frame, got content body")
        received = self._body_received + len(payload)
        if received > self._body_size:
            raise AMQPError(FRAME_ERROR, f"content body of {received} bytes is larger than the "
                            f"declared body size {self._body_size}")
        if received == self._body_size and not self._body_parts:
            self._complete(self._header, payload)
            return
        self._body_parts.append(payload)
        self._body_received = received
        if received == self._body_size:
            body = b"".join(self._body_parts)
            self._body_parts = []
            self._body_received = 0
            self._complete(self._header, body)

    def _complete(self, header: bytes, body: bytes) -> None:
        exchange, routing_key, ex_ss, rk_ss, mandatory = self._publish  # type: ignore[misc]
        self._publish = None
        self._header = None
        try:
            self.publish(exchange, routing_key, ex_ss, rk_ss, mandatory, header, body)
        except AMQPError as e:
            raise e.on(60, 40) from None

    # -- helpers ----------------------------------------------------------------------------------
    def send(self, method) -> None:
        self.conn.write(codec.encode_method(self.number, method))

    def _vhost_name(self) -> str:
        return self.conn.vhost_name

    def _resource(self, kind: str, name: str) -> str:
        return f"{kind} '{name}' in vhost '{self.conn.vhost_name}'"

    def check_access(self, perm: str, kind: str, name: str) -> None:
        if not self.conn.permitted(perm, kind, name):
            raise AMQPError(ACCESS_REFUSED,
                            f"access to {self._resource(kind, name)} refused for user "
                            f"'{self.conn.user}'")

    def check_topic(self, perm: str, exchange: str, routing_key: str) -> None:
        """Topic authorisation on topic exchanges (publish: write, bind: read)."""
        x = self.conn.vhost.exchanges.get(exchange)
        if x is None or x.type != "topic":
            return
        if not topic_permitted(self.node.meta, self.conn.user, self.conn.vhost_name, exchange,
                               perm, routing_key):
            raise AMQPError(ACCESS_REFUSED,
                            f"access to topic '{routing_key}' in exchange '{exchange}' in vhost "
                            f"'{self.conn.vhost_name}' refused for user '{self.conn.user}'")

    def _exchange(self, name: str) -> ExchangeRecord:
        x = self.conn.vhost.exchanges.get(name)
        if x is None:
            raise AMQPError(NOT_FOUND, f"no {self._resource('exchange', name)}")
        return x

    def _queue_name(self, name: str) -> str:
        if name == "":
            if not self.last_queue:
                raise AMQPError(NOT_FOUND, "no previously declared queue")
            return self.last_queue
        return name

    def _queue(self, name: str) -> ClassicQueue:
        q = self.node.live_queue(self.conn.vhost_name, name)
        if q is None:
            raise self.node.home_down(self.conn.vhost_name, name) or \
                AMQPError(NOT_FOUND, f"no {self._resource('queue', name)}")
        self._check_exclusive(q.record)
        return q

    def _check_exclusive(self, record: QueueRecord, strict: bool = False) -> None:
        owner = record.exclusive_owner
        if not strict and owner is not None and owner.startswith(self.node.name + "/") and \
                owner not in self.node.connections:
            return  # its owner is gone and its deletion is on the way: no longer locked
        if strict or (owner is not None and owner != self.conn.id):
            raise AMQPError(RESOURCE_LOCKED,
                            f"cannot obtain exclusive access to locked {self._resource('queue', record.name)}. "
                            "It could be originally declared on another connection or the "
                            "exclusive property value does not match that of the original "
                            "declaration.")

    @staticmethod
    def _not_default(name: str) -> None:
        if name == "":
            raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange")

    # -- channel --------------------------------------------------------------------------------
    def handle_channel_close(self, m: C.Channel.Close) -> Proposing:
        consumers = list(self.consumers.values())
        self.consumers.clear()
        for consumer in consumers:  # auto-delete queues go before close-ok (see cancel)
            yield from _quietly(self.node.remove_consumer(consumer))
        self.conn.close_channel(self)
        self.send(C.Channel.CloseOk())

    def handle_channel_close_ok(self, m: C.Channel.CloseOk) -> None:
        pass  # only meaningful while closing; the connection handles that state

    def handle_channel_flow(self, m: C.Channel.Flow) -> None:
        if not m.active:
            raise AMQPError(NOT_IMPLEMENTED, "active=false")
        self.send(C.Channel.FlowOk(active=True))

    def handle_channel_flow_ok(self, m: C.Channel.FlowOk) -> None:
        pass

    def handle_channel_open(self, m: C.Channel.Open) -> None:
        raise AMQPError(504, "second 'channel.open' seen")

    # -- exchanges ------------------------------------------------------------------------------
    def handle_exchange_declare(self, m: C.Exchange.Declare) -> Proposing:
        name = m.exchange
        if m.passive:
            self._not_default(name)
            self._exchange(name)
        else:
            if m.exchange_type not in EXCHANGE_TYPES:
                raise AMQPError(COMMAND_INVALID, f"unknown exchange type '{m.exchange_type}'")
            self._not_default(name)
            self.check_access("configure", "exchange", name)
            x = self.conn.vhost.exchanges.get(name)
            args = dict(m.arguments or {})
            ae = args.get("alternate-exchange")
            if isinstance(ae, (str, bytes)):  # access-control table: read x, write its AE
                self.check_access("read", "exchange", name)
                self.check_access("write", "exchange", _text(ae))
            if x is None:
                if name.startswith("amq."):
                    raise AMQPError(ACCESS_REFUSED,
                                    f"exchange name '{name}' contains reserved prefix 'amq.*'")
                x = yield self.node.propose({
                    "op": "exchange.declare", "vhost": self.conn.vhost_name, "name": name,
                    "type": m.exchange_type, "durable": m.durable, "auto_delete": m.auto_delete,
                    "internal": m.internal, "arguments": args})
            check_exchange_equivalence(x, m.exchange_type, m.durable, m.auto_delete, m.internal,
                                       args, self._resource("exchange", name))
        if not m.nowait:
            self.send(C.Exchange.DeclareOk())

    def handle_exchange_delete(self, m: C.Exchange.Delete) -> Proposing:
        name = m.exchange
        self._not_default(name)
        if name.startswith("amq."):
            raise AMQPError(ACCESS_REFUSED,
                            f"deletion of system {self._resource('exchange', name)} not allowed")
        self.check_access("configure", "exchange", name)
        yield self.node.propose({"op": "exchange.delete", "vhost": self.conn.vhost_name,
                                 "name": name, "if_unused": m.if_unused})
        if not m.nowait:
            self.send(C.Exchange.DeleteOk())

    def _exchange_binding(self, m, add: bool) -> Proposing:
        source, dest = m.source, m.destination
        self._not_default(source)
        self._not_default(dest)
        self.check_access("write", "exchange", dest)
        if add:  # RabbitMQ answers unbind-ok even when either end is missing
            self._exchange(dest)
        self.check_access("read", "exchange", source)
        if add:
            self._exchange(source)
        yield self.node.propose({
            "op": "binding.add" if add else "binding.remove", "vhost": self.conn.vhost_name,
            "source": source, "dest_kind": "exchange", "dest": dest,
            "routing_key": m.routing_key, "arguments": dict(m.arguments or {})})

    def handle_exchange_bind(self, m: C.Exchange.Bind) -> Proposing:
        yield from self._exchange_binding(m, True)
        if not m.nowait:
            self.send(C.Exchange.BindOk())

    def handle_exchange_unbind(self, m: C.Exchange.Unbind) -> Proposing:
        yield from self._exchange_binding(m, False)
        if not m.nowait:
            self.send(C.Exchange.UnbindOk())

    # -- queues ---------------------------------------------------------------------------------
    def handle_queue_declare(self, m: C.Queue.Declare) -> Proposing:
        name = m.queue
        vhost = self.conn.vhost_name
        if name.startswith(REPLY_TO):
            yield from self._declare_reply_queue(name, m.nowait)
            return
        if m.passive:
            q = self._queue(name)  # a passive declare does not expand "" to the last queue
        else:
            if name == "":
                name = _gen_name("amq.gen-")
            elif name.startswith("amq."):
                raise AMQPError(ACCESS_REFUSED,
                                f"queue name '{name}' contains reserved prefix 'amq.*'")
            self.check_access("configure", "queue", name)
            args = dict(m.arguments or {})
            dlx = args.get("x-dead-letter-exchange")
            if isinstance(dlx, (str, bytes)):  # access-control table: read q, write its DLX
                self.check_access("read", "queue", name)
                self.check_access("write", "exchange", _text(dlx) or "amq.default")
            q = self.node.live_queue(vhost, name)
            if q is None and (down := self.node.home_down(vhost, name)) is not None:
                raise down  # it exists, on a node that is down: not declared again here
            if q is None:
                validate_queue_args(args, self._resource("queue", name))
                qtype = _text(args.get("x-queue-type") or "classic")
                members = self._quorum_members(m, name, args) if qtype == "quorum" else \
                    self._mirrors(m, name)
                yield self.node.propose({
                    "op": "queue.declare", "vhost": vhost, "name": name, "durable": m.durable,
                    "id": uuid.uuid4().hex, "node": self.node.name, "type": qtype,
                    "members": members,
                    "exclusive_owner": self.conn.id if m.exclusive else None,
                    "auto_delete": m.auto_delete, "arguments": args})
                q = self.node.live_queue(vhost, name)
                if q is None:  # deleted again (or declared elsewhere) before we resumed
                    raise AMQPError(NOT_FOUND, f"{self._resource('queue', name)} was deleted "
                                    "while it was being declared")
            else:
                self._check_exclusive(q.record)
                if (q.record.exclusive_owner is None) == m.exclusive:
                    self._check_exclusive(q.record, strict=True)
                check_queue_equivalence(q.record, m.durable, m.exclusive, m.auto_delete, args,
                                        self._resource("queue", name))
        self.last_queue = name
        q.last_used_ms = self.node.now_ms  # any declare, passive too, renews x-expires
        if not m.nowait:
            fetch_counts = getattr(q, "fetch_counts", None)
            if fetch_counts is not None:  # a queue of another node: its home counts
                message_count, consumer_count = yield fetch_counts()
            else:
                message_count, consumer_count = q.message_count, len(q.consumers)
            self.send(codec.make(C.Queue.DeclareOk, queue=name, message_count=message_count,
                                 consumer_count=consumer_count))

    def _quorum_members(self, m: C.Queue.Declare, name: str, args: dict) -> list[str]:
        """A quorum queue's replicas: this node first, then the other members (sorted), as
        many as x-quorum-initial-group-size asks (default: every node)."""
        check_quorum_args(args, self._resource("queue", name))
        for flag, prop in ((not m.durable, "non-durable"), (m.exclusive, "exclusive-owner"),
                           (m.auto_delete, "auto-delete")):
            if flag:
                raise AMQPError(PRECONDITION_FAILED, f"invalid property '{prop}' for "
                                f"{self._resource('queue', name)}")
        me = self.node.name
        members = [me] + sorted(n for n in self.node.meta.members if n != me)
        size = args.get("x-quorum-initial-group-size")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            members = members[:size]
        return members

    def _mirrors(self, m: C.Queue.Declare, name: str) -> list[str]:
        """A classic queue under an ha-* policy is replicated (as a Raft group, like a quorum
        queue) on the nodes the policy names; exclusive queues never are (as in RabbitMQ)."""
        vhost = self.conn.vhost
        if m.exclusive or not vhost.policies:
            return []
        policy = effective_policy(self.node.meta, vhost.name, "queue", name)
        if policy is None:
            return []
        cluster = sorted(self.node.meta.members) or [self.node.name]
        return policy_replicas(policy.definition, self.node.name, [], cluster) or []

    def _queue_binding(self, m, add: bool) -> Proposing:
        qname = self._queue_name(m.queue)
        self._not_default(m.exchange)
        self.check_access("write", "queue", qname)
        args = dict(m.arguments or {})
        if add:
            self._queue(qname)
            self.check_access("read", "exchange", m.exchange)
            self.check_topic("read", m.exchange, m.routing_key)
            problem = self._exchange(m.exchange).router.validate_binding(args)
            if problem:
                raise AMQPError(PRECONDITION_FAILED, problem)
        else:  # RabbitMQ answers unbind-ok even when the queue or exchange is missing
            q = self.node.live_queue(self.conn.vhost_name, qname)
            if q is not None:
                self._check_exclusive(q.record)
            self.check_access("read", "exchange", m.exchange)
        yield self.node.propose({
            "op": "binding.add" if add else "binding.remove", "vhost": self.conn.vhost_name,
            "source": m.exchange, "dest_kind": "queue", "dest": qname,
            "routing_key": m.routing_key, "arguments": args})

    def handle_queue_bind(self, m: C.Queue.Bind) -> Proposing:
        yield from self._queue_binding(m, True)
        if not m.nowait:
            self.send(C.Queue.BindOk())

    def handle_queue_unbind(self, m: C.Queue.Unbind) -> Proposing:
        yield from self._queue_binding(m, False)
        self.send(C.Queue.UnbindOk())

    def handle_queue_purge(self, m: C.Queue.Purge) -> Proposing:
        qname = self._queue_name(m.queue)
        self.check_access("read", "queue", qname)
        q = self._queue(qname)
        count = q.purge()
        if isinstance(count, Pending):  # a replicated queue answers once committed
            count = yield count
        if not m.nowait:
            self.send(C.Queue.PurgeOk(message_count=count))

    def handle_queue_delete(self, m: C.Queue.Delete) -> Proposing:
        qname = self._queue_name(m.queue)
        self.check_access("configure", "queue", qname)
        q = self.node.live_queue(self.conn.vhost_name, qname)
        count = 0
        if q is None and (down := self.node.home_down(self.conn.vhost_name, qname)):
            raise down
        delete_at_home = getattr(q, "delete_at_home", None)
        if delete_at_home is not None:  # a queue of another node: checked and deleted there
            self._check_exclusive(q.record)
            count = yield delete_at_home(m.if_unused, m.if_empty)
        elif q is not None:
            self._check_exclusive(q.record)
            if m.if_unused and q.consumers:
                raise AMQPError(PRECONDITION_FAILED, f"{self._resource('queue', qname)} in use")
            if m.if_empty and q.message_count:
                raise AMQPError(PRECONDITION_FAILED, f"{self._resource('queue', qname)} not empty")
            count = q.message_count
            yield self.node.delete_queue(q)
        if not m.nowait:
            self.send(C.Queue.DeleteOk(message_count=count))

    # -- basic: consumers -------------------------------------------------------------------------
    def handle_basic_qos(self, m: C.Basic.Qos) -> None:
        if m.prefetch_size:
            raise AMQPError(NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})")
        if m.global_:
            self.global_prefetch = m.prefetch_count
            for q in {c.queue for c in self.consumers.values()}:
                q.dispatch()
        else:
            # RabbitMQ 3.x: a per-consumer qos also lifts a channel-wide limit set before it
            self.prefetch = m.prefetch_count
            self.global_prefetch = 0
        self.send(C.Basic.QosOk())

    def handle_basic_consume(self, m: C.Basic.Consume) -> Proposing:
        if m.queue == REPLY_TO:
            self._consume_replies(m)
            return
        qname = self._queue_name(m.queue)
        self.check_access("read", "queue", qname)
        q = self._queue(qname)
        tag = m.consumer_tag or _gen_name("amq.ctag-")
        if tag in self.consumers:
            raise AMQPError(NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'")
        if q.consumers and (m.exclusive or any(c.exclusive for c in q.consumers)):
            raise AMQPError(ACCESS_REFUSED, f"{self._resource('queue', qname)} in exclusive use")
        q.last_used_ms = self.node.now_ms
        consumer = Consumer(self, tag, codec.shortstr(tag), q, m.no_ack, m.exclusive,
                            self.prefetch, dict(m.arguments or {}))
        self.consumers[tag] = consumer
        if q.deferred_consume:  # consume-ok once the queue (replicated, remote) took it
            try:
                yield q.add_consumer(consumer)
            except AMQPError:
                self.consumers.pop(tag, None)
                raise
            if not m.nowait:
                self.send(codec.make(C.Basic.ConsumeOk, consumer_tag=tag))
            return
        if not m.nowait:
            self.send(codec.make(C.Basic.ConsumeOk, consumer_tag=tag))
        q.add_consumer(consumer)

    # -- direct reply-to (amq.rabbitmq.reply-to): RPC replies with no reply queue ----------------
    def _consume_replies(self, m: C.Basic.Consume) -> None:
        if not m.no_ack:
            raise AMQPError(PRECONDITION_FAILED, "reply consumer cannot acknowledge")
        if self.reply_tag is not None:
            raise AMQPError(PRECONDITION_FAILED, "reply consumer already set")
        tag = m.consumer_tag or _gen_name("amq.ctag-")
        if tag in self.consumers:
            raise AMQPError(NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'")
        self.reply_tag = tag
        self.reply_key = self.node.reply_channels.register(self)
        if not m.nowait:
            self.send(codec.make(C.Basic.ConsumeOk, consumer_tag=tag))

    def _stop_replies(self) -> None:
        if self.reply_key is not None:
            self.node.reply_channels.unregister(self.reply_key)
        self.reply_tag = self.reply_key = None

    def _declare_reply_queue(self, name: str, nowait: bool) -> Proposing:
        """queue.declare (passive or not) of the pseudo-queue, or of a reply address to
        learn whether its requester is still there: RabbitMQ answers 0 messages and 1
        consumer, or 404 once the requester's channel is gone; no permission is checked."""
        if name == REPLY_TO:
            exists = True
        elif name.startswith(REPLY_PREFIX):
            exists = yield self.node.reply_channels.exists(name[len(REPLY_PREFIX):])
        else:
            exists = False
        if not exists:
            raise AMQPError(NOT_FOUND, f"no {self._resource('queue', name)}")
        self.last_queue = name
        if not nowait:
            self.send(codec.make(C.Queue.DeclareOk, queue=name, message_count=0,
                                 consumer_count=1))

    def deliver_reply(self, msg: Message) -> None:
        """A reply published to amq.rabbitmq.reply-to.KEY: straight to the consumer, no
        queue, no acknowledgement."""
        self.next_delivery_tag += 1
        conn = self.conn
        conn.write(codec.deliver_method(self.number, codec.shortstr(self.reply_tag or ""),
                                        self.next_delivery_tag, False, msg.exchange_ss,
                                        msg.routing_key_ss))
        conn.write_many(codec.content_frames(self.number, msg.header, msg.body, conn.frame_max))

    def _reply_to_rewritten(self, msg: Message) -> Message:
        """reply_to = amq.rabbitmq.reply-to becomes this channel's own reply address."""
        props = msg.properties
        if props.reply_to != REPLY_TO:
            return msg
        if self.reply_key is None:
            raise AMQPError(PRECONDITION_FAILED, "fast reply consumer does not exist")
        props.reply_to = f"{REPLY_TO}.{self.reply_key}"
        copy = Message(msg.exchange, msg.routing_key, msg.exchange_ss, msg.routing_key_ss,
                       codec.encode_header_payload(msg.size, props), msg.body, msg.size)
        copy.published_ms, copy.ttl_ms = msg.published_ms, msg.ttl_ms
        return copy

    def handle_basic_cancel(self, m: C.Basic.Cancel) -> Proposing:
        if m.consumer_tag is not None and m.consumer_tag == self.reply_tag:
            self._stop_replies()
            if not m.nowait:
                self.send(codec.make(C.Basic.CancelOk, consumer_tag=m.consumer_tag))
            return
        consumer = self.consumers.pop(m.consumer_tag, None)
        if consumer is not None:
            # an auto-delete queue losing its last consumer is gone before cancel-ok, so a
            # client declaring it again right after gets a fresh queue (as from RabbitMQ)
            yield from _quietly(self.node.remove_consumer(consumer))
        if not m.nowait:
            self.send(codec.make(C.Basic.CancelOk, consumer_tag=m.consumer_tag))

    def handle_basic_get(self, m: C.Basic.Get) -> Proposing:
        qname = self._queue_name(m.queue)
        self.check_access("read", "queue", qname)
        q = self._queue(qname)
        q.last_used_ms = self.node.now_ms
        entry = q.take()
        if isinstance(entry, Pending):  # a replicated queue: once the dequeue is committed
            entry = yield entry
        if entry is None:
            self.send(C.Basic.GetEmpty())
            return
        tag = self._track(q, entry, None, m.no_ack)
        msg = entry[1]
        conn = self.conn
        conn.write(codec.get_ok_method(self.number, tag, entry[2], msg.exchange_ss,
                                       msg.routing_key_ss, q.message_count))
        conn.write_many(codec.content_frames(self.number, msg.header, msg.body, conn.frame_max))

    def _track(self, queue: ClassicQueue, entry: tuple, consumer: Consumer | None,
               no_ack: bool) -> int:
        """A new delivery tag; the delivery awaits its ack unless no_ack settled it now."""
        self.next_delivery_tag += 1
        tag = self.next_delivery_tag
        if queue.counts_deliveries:
            queue.unacked += 1
        if no_ack:
            queue.settle([entry])
        else:
            self.unacked[tag] = (queue, entry, consumer)
            self.unacked_count += 1
            if consumer is not None:
                consumer.unacked += 1
        return tag

    def deliver(self, consumer: Consumer, queue: ClassicQueue, entry: tuple) -> None:
        tag = self._track(queue, entry, consumer, consumer.no_ack)
        msg = entry[1]
        conn = self.conn
        conn.write(codec.deliver_method(self.number, consumer.tag_ss, tag, entry[2],
                                        msg.exchange_ss, msg.routing_key_ss))
        conn.write_many(codec.content_frames(self.number, msg.header, msg.body, conn.frame_max))

    # -- basic: acknowledgements --------------------------------------------------------------------
    def _take(self, tag: int, multiple: bool) -> list[tuple[int, tuple]]:
        """Remove and return (delivery_tag, (queue, entry, consumer)) for an ack/nack/reject."""
        unacked = self.unacked
        if multiple:
            if tag == 0:
                taken = list(unacked.items())
                unacked.clear()
            else:
                keys = []
                for t in unacked:
                    if t > tag:
                        break
                    keys.append(t)
                if not keys and tag not in unacked:
                    raise AMQPError(PRECONDITION_FAILED, f"unknown delivery tag {tag}")
                taken = [(t, unacked.pop(t)) for t in keys]
        else:
            item = unacked.pop(tag, None)
            if item is None:
                raise AMQPError(PRECONDITION_FAILED, f"unknown delivery tag {tag}")
            taken = [(tag, item)]
        self.unacked_count -= len(taken)
        return taken

    def handle_ack(self, tag: int, multiple: bool) -> None:
        if self.timed_out_tags and not multiple and tag in self.timed_out_tags:
            self.timed_out_tags.discard(tag)
            return
        taken = self._take(tag, multiple)
        if self.tx:
            self.tx_ops.append(("settle", taken, False, False))
        else:
            self._settle(taken, False, False)

    def handle_nack(self, tag: int, multiple: bool, requeue: bool) -> None:
        if self.timed_out_tags and not multiple and tag in self.timed_out_tags:
            self.timed_out_tags.discard(tag)
            return
        taken = self._take(tag, multiple)
        if self.tx:
            self.tx_ops.append(("settle", taken, True, requeue))
        else:
            self._settle(taken, True, requeue)

    def _settle(self, taken: list[tuple[int, tuple]], rejected: bool, requeue: bool,
                asked: bool = True) -> None:
        """Ack, reject or requeue what was taken; a requeue `asked` by the client (nack,
        reject, recover) or not (the channel closing, a consumer timing out): a quorum queue
        puts the first behind its other messages, the second first, as RabbitMQ does."""
        touched: dict[Any, list] = {}
        for _tag, (queue, entry, consumer) in taken:
            if consumer is not None:
                consumer.unacked -= 1
            touched.setdefault(queue, []).append(entry)
        for queue, entries in touched.items():
            if rejected and requeue:
                queue.requeue(entries, asked)
            else:
                queue.settle(entries, "rejected" if rejected else None)
        self._refill(touched)

    def _refill(self, touched) -> None:
        """Capacity freed on this channel: let its consumers' queues deliver again."""
        queues = set(touched)
        if self.global_prefetch:
            queues.update(c.queue for c in self.consumers.values())
        for q in queues:
            if q.consumers and not q.deleted:
                q.dispatch()

    def check_ack_timeout(self, now_ms: float) -> None:
        checkpoints = self.checkpoints
        tag = self.next_delivery_tag
        if not checkpoints or checkpoints[-1][0] != tag:
            checkpoints.append((tag, now_ms))
        oldest = next(iter(self.unacked))
        while len(checkpoints) > 1 and checkpoints[0][0] < oldest:
            checkpoints.popleft()
        if checkpoints[0][0] < oldest:
            return
        sent_by = checkpoints[0][1]
        queue, _entry, consumer = self.unacked[oldest]
        timeout = queue.consumer_timeout_ms or self.node.config.consumer_timeout_ms
        if not timeout or now_ms - sent_by <= timeout or consumer is None:
            return
        log.warning("consumer '%s' on channel %d of connection %s did not acknowledge a "
                    "delivery within %d ms: cancelling it and requeueing its deliveries",
                    consumer.tag, self.number, self.conn.id, timeout)
        self.consumers.pop(consumer.tag, None)
        self.node.remove_consumer(consumer)
        if self.conn.capabilities.get("consumer_cancel_notify"):
            self.send(codec.make(C.Basic.Cancel, consumer_tag=consumer.tag, nowait=True))
        mine = [(t, v) for t, v in self.unacked.items() if v[2] is consumer]
        for t, _ in mine:
            del self.unacked[t]
            self.timed_out_tags.add(t)
        self.unacked_count -= len(mine)
        self._settle(mine, True, True, asked=False)

    def handle_basic_recover(self, m) -> None:
        if not m.requeue:
            raise AMQPError(NOT_IMPLEMENTED, "requeue=false")
        self.requeue_all()
        if isinstance(m, C.Basic.Recover):
            self.send(C.Basic.RecoverOk())

    def requeue_all(self, asked: bool = True) -> None:
        taken = list(self.unacked.items())
        self.unacked.clear()
        self.unacked_count = 0
        self._settle(taken, True, True, asked)

    # -- basic: publishing ----------------------------------------------------------------------
    def publish(self, exchange: str, routing_key: str, ex_ss: bytes, rk_ss: bytes,
                mandatory: bool, header: bytes, body: bytes) -> None:
        conn = self.conn
        x = conn.vhost.exchanges.get(exchange)
        if x is None:
            raise AMQPError(NOT_FOUND, f"no {self._resource('exchange', exchange)}")
        if not conn.permitted("write", "exchange", exchange or "amq.default"):
            self.check_access("write", "exchange", exchange or "amq.default")
        if x.type == "topic" and self.node.meta.topic_permissions:
            self.check_topic("write", exchange, routing_key)
        if x.internal:
            raise AMQPError(ACCESS_REFUSED,
                            f"cannot publish to internal {self._resource('exchange', exchange)}")
        if not conn.has_published:
            conn.has_published = True
            if self.node.alarms:
                conn.block(self.node.blocked_reason())
        self.node.msgs_published += 1
        msg = Message(exchange, routing_key, ex_ss, rk_ss, header, body)
        msg.published_ms = self.node.now_ms
        flags = header[12] << 8 | header[13]
        if flags & FLAG_EXPIRATION:
            msg.ttl_ms = _expiration_ms(msg.properties.expiration)
        if flags & FLAG_REPLY_TO and _REPLY_TO_SS in header:
            msg = self._reply_to_rewritten(msg)
        if flags & FLAG_USER_ID:
            user_id = msg.properties.user_id
            if user_id is not None and user_id != conn.user:
                raise AMQPError(PRECONDITION_FAILED, f"user_id property set to '{user_id}' but "
                                f"authenticated user was '{conn.user}'")
        if self.tx:
            self.tx_ops.append(("publish", x, msg, mandatory))
            return
        refused = self._route(x, msg, mandatory)
        if self.confirm:
            self.publish_seq += 1
            if refused:
                self.nacks.append(self.publish_seq)
            if self._enqueue_waits:
                seq = self.publish_seq
                self.confirm_waits += [(seq, p) for p in self._enqueue_waits]
                self._enqueue_waits = []
            if not self.confirm_pending:
                self.confirm_pending = True
                self.node.confirms.append(self)

    def _route(self, x: ExchangeRecord, msg: Message, mandatory: bool) -> bool:
        """Route and enqueue; True when a full queue refused the message (overflow
        reject-publish), which the publisher learns as a nack."""
        if x.name == "" and msg.routing_key.startswith(REPLY_PREFIX):
            # a reply goes to its requester's channel, on whichever node, and to no queue:
            # never refused, and returned when mandatory even if delivered (RabbitMQ 3.10)
            self.node.reply_channels.route(msg.routing_key[len(REPLY_PREFIX):], msg)
            if mandatory:
                self._return_unroutable(msg)
            return False
        extra_keys = None
        if msg.flags & FLAG_HEADERS and (b"\x02CC" in msg.header or b"\x03BCC" in msg.header):
            msg, extra_keys = sender_selected(msg)
        queues = self.node.route(self.conn.vhost_name, x, msg, extra_keys)
        refused = taken = False
        if queues:
            refused, needs_sync, waits, taken = self.node.enqueue(msg, queues)
            if needs_sync:
                self.confirm_needs_sync = True
            if waits and self.confirm:  # kept only when the publisher asked for confirms
                self._enqueue_waits += waits
        if not taken and mandatory:
            self._return_unroutable(msg)
        return refused

    def _return_unroutable(self, msg: Message) -> None:
        conn = self.conn
        conn.write(codec.return_method(self.number, NO_ROUTE, "NO_ROUTE", msg.exchange_ss,
                                       msg.routing_key_ss))
        conn.write_many(codec.content_frames(self.number, msg.header, msg.body,
                                             conn.frame_max))

    def flush_confirms(self) -> None:
        """Confirm everything published so far with one (possibly multiple) ack: at once, or
        once what it waits for is done: the journal's fsync when a persistent message reached
        a durable queue, the answers of replicated or remote queues, and every earlier ack
        (acks go out in order)."""
        self.confirm_pending = False
        if self.state is not OPEN:
            return
        seq = self.publish_seq
        if seq <= self.confirm_target:
            return
        self.confirm_target = seq
        waits, self.confirm_waits = self.confirm_waits, []
        if not (self.confirm_needs_sync or waits or self.confirm_queue):
            self._send_confirm(seq)
            return
        item = [seq, len(waits) + 1]  # +1: released below, once every wait is registered
        self.confirm_queue.append(item)
        for wseq, p in waits:
            p.on_done(lambda p, wseq=wseq: self._confirm_wait_done(item, wseq, p))
        if self.confirm_needs_sync:
            self.confirm_needs_sync = False
            item[1] += 1
            self.node.journal.after_sync(lambda: self._confirm_wait_done(item, 0, None))
        self._confirm_wait_done(item, 0, None)

    def _confirm_wait_done(self, item: list[int], seq: int, p: Pending | None) -> None:
        if p is not None and (p.error is not None or not p.value):
            bisect.insort(self.nacks, seq)  # refused (overflow) or lost: the publisher hears
        item[1] -= 1
        queue = self.confirm_queue
        while queue and queue[0][1] == 0:
            done = queue.popleft()
            if self.state is OPEN:
                self._send_confirm(done[0])

    def _send_confirm(self, seq: int) -> None:
        """Ack everything up to seq, nacking the refused ones on the way, in order."""
        write = self.conn.write
        nacks = self.nacks
        while nacks and nacks[0] <= seq:
            refused = nacks.pop(0)
            if refused - 1 > self.confirmed_seq:
                write(codec.confirm_method(self.number, True, refused - 1,
                                           refused - 1 - self.confirmed_seq > 1))
            write(codec.confirm_method(self.number, False, refused, False))
            self.confirmed_seq = refused
        if seq > self.confirmed_seq:
            write(codec.confirm_method(self.number, True, seq, seq - self.confirmed_seq > 1))
            self.confirmed_seq = seq
        if self.on_confirmed is not None:
            self.on_confirmed()

    def handle_confirm_select(self, m: C.Confirm.Select) -> None:
        if self.tx:
            raise AMQPError(PRECONDITION_FAILED, "cannot switch from tx to confirm mode")
        self.confirm = True
        if not m.nowait:
            self.send(C.Confirm.SelectOk())

    # -- transactions ---------------------------------------------------------------------------
    def handle_tx_select(self, m: C.Tx.Select) -> None:  # noqa: ARG002
        if self.confirm:
            raise AMQPError(PRECONDITION_FAILED, "cannot switch from confirm to tx mode")
        self.tx = True
        self.send(C.Tx.SelectOk())

    def handle_tx_commit(self, m: C.Tx.Commit) -> None:
        if not self.tx:
            raise AMQPError(PRECONDITION_FAILED, "channel is not transactional")
        ops, self.tx_ops = self.tx_ops, []
        for op in ops:
            if op[0] == "publish":
                self._route(op[1], op[2], op[3])  # no confirms inside transactions
            else:
                self._settle(op[1], op[2], op[3])
        self.send(C.Tx.CommitOk())

    def handle_tx_rollback(self, m: C.Tx.Rollback) -> None:
        if not self.tx:
            raise AMQPError(PRECONDITION_FAILED, "channel is not transactional")
        # acks taken inside the transaction go back to being outstanding, in tag order
        ops, self.tx_ops = self.tx_ops, []
        back = [item for op in ops if op[0] == "settle" for item in op[1]]
        if back:
            merged = sorted([*self.unacked.items(), *back], key=lambda kv: kv[0])
            self.unacked = dict(merged)
            self.unacked_count += len(back)
        self.send(C.Tx.RollbackOk())

    # -- teardown -------------------------------------------------------------------------------
    def teardown(self) -> None:
        """The channel is gone: cancel its consumers and requeue what it had not settled."""
        self.state = CLOSING
        self.deliverable = False
        self._stop_replies()
        consumers = list(self.consumers.values())
        self.consumers.clear()
        for consumer in consumers:
            self.node.remove_consumer(consumer)
        self.tx_ops = []
        if self.unacked:
            self.requeue_all(asked=False)


def _quietly(p: Pending | None) -> Proposing:
    """Wait for a side effect's command (an auto-delete) without failing the method."""
    if p is not None:
        try:
            yield p
        except AMQPError as e:
            log.warning("%s", e.reply_text)


_HANDLERS: dict[tuple[int, int], Callable[[Channel, Any], None]] = {
    (20, 20): Channel.handle_channel_flow,
    (20, 21): Channel.handle_channel_flow_ok,
    (20, 40): Channel.handle_channel_close,
    (20, 41): Channel.handle_channel_close_ok,
    (20, 10): Channel.handle_channel_open,
    (40, 10): Channel.handle_exchange_declare,
    (40, 20): Channel.handle_exchange_delete,
    (40, 30): Channel.handle_exchange_bind,
    (40, 40): Channel.handle_exchange_unbind,
    (50, 10): Channel.handle_queue_declare,
    (50, 20): Channel.handle_queue_bind,
    (50, 30): Channel.handle_queue_purge,
    (50, 40): Channel.handle_queue_delete,
    (50, 50): Channel.handle_queue_unbind,
    (60, 10): Channel.handle_basic_qos,
    (60, 20): Channel.handle_basic_consume,
    (60, 30): Channel.handle_basic_cancel,
    (60, 70): Channel.handle_basic_get,
    (60, 100): Channel.handle_basic_recover,
    (60, 110): Channel.handle_basic_recover,
    (85, 10): Channel.handle_confirm_select,
    (90, 10): Channel.handle_tx_select,
    (90, 20): Channel.handle_tx_commit,
    (90, 30): Channel.handle_tx_rollback,
}
