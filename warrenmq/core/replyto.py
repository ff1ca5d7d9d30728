"""Direct reply-to (`amq.rabbitmq.reply-to`) on any node of a cluster; sans I/O.

Theory of operation. A channel that consumes from the pseudo-queue `amq.rabbitmq.reply-to`
(no-ack) is given a key, and its requests carry `reply_to = amq.rabbitmq.reply-to.KEY`. The
key names the requester's node: it is the base64url encoding (no padding, hence no dots
and nothing a routing key cannot hold) of 16 random bytes followed by the node's name, as
RabbitMQ's key encodes the channel's pid, which names its node. A routing key is a short
string, so node names up to about 150 bytes fit.

A publish on the default exchange with a routing key `amq.rabbitmq.reply-to.KEY`, on any
node, is routed here (`route`) and to no queue:
- a key of this node goes straight to its channel (`Channel.deliver_reply`), if that channel
  still consumes replies with that key;
- a key of another node becomes a `drt` item for that node, sent over the cluster link in
  order with everything else this node says to it (`send`, provided by the shell); the node
  delivers it if the channel is still there;
- anything else (a channel gone, a node that is not a cluster member or is unreachable, a
  key that does not decode) is dropped silently.
This is what RabbitMQ 3.10 does (rabbit_exchange:route hands the delivery to the channel and
routes to no queue): a reply is never refused, so a publisher confirm for it is an ack sent
at once, and with `mandatory` it is also returned (NO_ROUTE), even when it was delivered.
RabbitMQ 3.10 crashes the publishing connection (541) on a key of the form `A.B` that does
not decode; here every malformed key is just dropped.

A queue.declare of `amq.rabbitmq.reply-to.KEY` says whether the requester is still there
(RabbitMQ documents it for servers about to do expensive work): `exists` answers at once
for a key of this node, or asks the key's node (`drt?` -> `drt=`); an unreachable node, a
link lost before the answer, or no answer within ASK_TICKS shell ticks means "not found".
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..amqp import codec
from .message import Message
from .pending import Pending, resolved

if TYPE_CHECKING:
    from .channel import Channel
    from .node import Node

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_PREFIX = REPLY_TO + "."
KEY_RANDOM_BYTES = 16
# link items (carried by server/forwarding.py): a reply for a channel of the receiving node;
# a question whether a key's channel is still there, and its answer
REPLY_ITEM, ASK_ITEM, ANSWER_ITEM = "drt", "drt?", "drt="
ITEM_KINDS = frozenset({REPLY_ITEM, ASK_ITEM, ANSWER_ITEM})
ASK_TICKS = 15

# (node name, item, size in bytes) -> the peer it was posted to, or None if no link to a
# node of that name is up (the shell's cluster links)
Send = Callable[[str, list, int], str | None]


def make_key(node_name: str) -> str:
    raw = os.urandom(KEY_RANDOM_BYTES) + node_name.encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def key_node(key: str) -> str | None:
    """The name of the node whose channel a key belongs to; None for a malformed key."""
    try:
        raw = base64.b64decode(key + "=" * (-len(key) % 4), altchars=b"-_", validate=True)
        name = raw[KEY_RANDOM_BYTES:].decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return name if name else None


class ReplyTo:
    """The reply keys of this node's channels, and the routing of replies to any node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.channels: dict[str, Channel] = {}  # key -> the channel consuming its replies
        self.send: Send | None = None  # set by the shell of a clustered node
        self.ticks = 0
        self._asks: dict[int, tuple[str, Pending, int]] = {}  # ref -> (peer, answer, tick)
        self._next_ref = 0

    # -- this node's channels ---------------------------------------------------------------
    def register(self, channel: Channel) -> str:
        key = make_key(self.node.name)
        self.channels[key] = channel
        return key

    def unregister(self, key: str) -> None:
        self.channels.pop(key, None)

    def _local(self, key: str) -> Channel | None:
        # a channel is registered exactly while it consumes replies: cancelling that
        # consumer and the channel's teardown unregister it
        return self.channels.get(key)

    # -- replies ------------------------------------------------------------------------------
    def route(self, key: str, msg: Message) -> None:
        """A reply published to amq.rabbitmq.reply-to.KEY on this node."""
        ch = self._local(key)
        if ch is not None:
            ch.deliver_reply(msg)
            return
        name = key_node(key)
        if name is None or name == self.node.name or self.send is None:
            return  # malformed, or a channel of this node that is gone: dropped
        body = msg.body if msg.body is not None else self.node.journal.read_body(msg)
        item = [REPLY_ITEM, key, msg.exchange_ss + msg.routing_key_ss, msg.header, body]
        self.send(name, item, msg.size)

    # -- does a key's channel still exist? ----------------------------------------------------
    def exists(self, key: str) -> Pending:
        """A Pending resolved with whether KEY's channel still consumes its replies."""
        if self._local(key) is not None:
            return resolved(True)
        name = key_node(key)
        if name is None or name == self.node.name or self.send is None:
            return resolved(False)
        self._next_ref += 1
        ref = self._next_ref
        peer = self.send(name, [ASK_ITEM, ref, key], 0)
        if peer is None:
            return resolved(False)
        p = Pending()
        self._asks[ref] = (peer, p, self.ticks)
        return p

    # -- items from other nodes ---------------------------------------------------------------
    def handle(self, peer: str, item: list[Any]) -> None:
        kind = item[0]
        if kind == REPLY_ITEM:
            _, key, pair, header, body = item
            ch = self._local(key)
            if ch is None:
                return  # the requester went away: dropped, as RabbitMQ does
            exchange, routing_key, ex_ss, rk_ss = codec.names(pair)
            ch.deliver_reply(Message(exchange, routing_key, ex_ss, rk_ss, header, body))
        elif kind == ASK_ITEM:
            _, ref, key = item
            if self.send is not None:
                self.send(peer, [ANSWER_ITEM, ref, self._local(key) is not None], 0)
        elif kind == ANSWER_ITEM:
            ask = self._asks.pop(item[1], None)
            if ask is not None:
                ask[1].resolve(bool(item[2]))

    # -- links and time -------------------------------------------------------------------------
    def peer_down(self, peer: str) -> None:
        """Questions to a node whose link dropped get "not found" (its channels are out of
        reach, as a dead channel is for RabbitMQ)."""
        for ref in [r for r, (p, _, _) in self._asks.items() if p == peer]:
            self._asks.pop(ref)[1].resolve(False)

    def expire(self) -> None:
        """One shell tick: questions unanswered for ASK_TICKS ticks get "not found"."""
        self.ticks += 1
        for ref in [r for r, (_, _, t) in self._asks.items() if self.ticks - t > ASK_TICKS]:
            self._asks.pop(ref)[1].resolve(False)
