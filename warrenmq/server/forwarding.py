"""Forwarding over the cluster links: any client on any node uses every classic queue.

The decisions live in the pure cores: `core/remote.py` (this node using queues of other
nodes: `RemoteQueue`, `Remotes`) and `core/home.py` (other nodes using this node's queues:
`Home`). Both write items into one `Outbox`; this shell carries them:
- once per loop turn, each peer's items leave as one "fwd" link message (or a few, cut at
  about a megabyte), so items keep their order per pair of nodes and a busy publisher costs
  one frame per turn, not one per message;
- incoming batches are handed item by item to the home or the client side, then the home
  confirms the batch's publishes (after the fsync when it journalled them);
- a link going down (or a send finding no link) makes both sides forget the peer: proxies of
  its queues leave routing and their consumers are cancelled, calls waiting for it fail, and
  what its consumers held here is requeued; a link coming up puts its queues back;
- once a second: queue figures to every peer (changes only), calls past their deadline fail,
  proxies are reconciled with the metadata (which a snapshot may have replaced);
- when a link to a peer is over its high-water mark, deliveries to that peer wait until it
  drains;
- direct reply-to (`core/replyto.py`): a reply published here for a requester on another
  node is an item in that node's outbox, so replies keep their order, and questions whether
  a requester is still there travel the same way.

And, as RabbitMQ 3.10 does on a node's going down (rabbit_amqqueue:on_node_down), the
metadata leader deletes the non-durable and exclusive classic queues of a node whose link
dropped; durable ones stay, answering 404 "home node ... is down" until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..cluster.links import PeerLinks, PeerUnavailable, same_node
from ..core.home import HOME_KINDS, Home
from ..core.pending import Pending
from ..core.remote import KIND, Outbox, Remotes
from ..core.replyto import ITEM_KINDS as REPLY_KINDS
from .metalog import GROUP

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("warrenmq.forwarding")

TICK_S = 1.0


class Forwarding:
    def __init__(self, app: App, links: PeerLinks) -> None:
        self.app = app
        self.links = links
        node = app.node
        self.outbox = Outbox(self._wake)
        self.remotes = Remotes(node, self.outbox, links.connected, uuid.uuid4().hex[:12])
        self.home = Home(node, self.outbox, links.writable, self._full)
        # set before the metadata is replayed, so every queue of another node gets its proxy
        node.on_remote_queue = self.remotes.declared
        node.on_queue_gone.append(self.home.queue_gone)
        self.replies = node.reply_channels
        self.replies.send = self._post_to_node
        self._peer_names: dict[str, str] = {}  # node name -> the name its link goes by
        links.on(KIND, self._received)
        links.on_peer_up(self._peer_up)
        links.on_peer_down(self._peer_down)
        self._flush_scheduled = False
        # peers seen going down (and not back): their transient queues are to be deleted
        # by whichever node leads the metadata
        self._gone: set[str] = set()
        self._draining: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self.remotes.reconcile()

    async def stop(self) -> None:
        tasks = [t for t in (self._ticker, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        self._ticker = None
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- out: one message per peer per loop turn --------------------------------------------------
    def _wake(self, peer: str) -> None:  # noqa: ARG002 - every peer is flushed together
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for peer in list(self.outbox.batches):
            for batch in self.outbox.take(peer):
                if not self.links.send(peer, KIND, batch):
                    self._lost(peer)
                    break

    def _post_to_node(self, name: str, item: list, size: int) -> str | None:
        """Post `item` to the node called `name` (however its link spells the name); the
        peer it went to, or None when no link to such a node is up."""
        peer = self._peer_names.get(name)
        if peer is None:
            known = self.links.known()
            peer = name if name in known else next(
                (p for p in known if same_node(p, name)), None)
            if peer is None:
                return None
            if len(self._peer_names) > 1000:  # names come from keys clients publish to
                self._peer_names.clear()
            self._peer_names[name] = peer
        if not self.links.connected(peer):
            return None
        self.outbox.post(peer, item, size)
        return peer

    # -- in ---------------------------------------------------------------------------------------
    def _received(self, peer: str, items: Any) -> None:
        node = self.app.node
        node.now_ms = time.time() * 1000.0
        home, remotes = self.home, self.remotes
        for item in items:
            try:
                if item[0] in HOME_KINDS:
                    home.handle(peer, item)
                elif item[0] in REPLY_KINDS:
                    self.replies.handle(peer, item)
                else:
                    remotes.handle(peer, item)
            except Exception:  # one bad item must not lose the rest of the batch
                log.exception("forwarded item %r from %s failed", item[:2], peer)
        home.end_batch(peer)
        self.app.schedule_flush()

    # -- links ------------------------------------------------------------------------------------
    def _peer_up(self, peer: str) -> None:
        self._gone.discard(peer)
        self.home.peer_up(peer)
        self.remotes.peer_up(peer)
        self.app.schedule_flush()

    def _peer_down(self, peer: str) -> None:
        self._lost(peer)
        if self.app.running:
            self._gone.add(peer)
            self._delete_transient()

    def _lost(self, peer: str) -> None:
        self.outbox.take(peer)
        self.remotes.peer_down(peer)
        self.home.peer_down(peer)
        self.replies.peer_down(peer)
        self.app.schedule_flush()

    def _full(self, peer: str) -> None:
        if peer in self._draining:
            return
        self._draining.add(peer)
        self._spawn(self._drain(peer))

    async def _drain(self, peer: str) -> None:
        try:
            await self.links.drain(peer)
        except PeerUnavailable:
            return  # peer_down has dealt with its consumers
        finally:
            self._draining.discard(peer)
        self.home.resume(peer)
        self.app.schedule_flush()

    def _delete_transient(self) -> None:
        """The metadata leader deletes the non-durable and exclusive classic queues of the
        nodes seen going down (RabbitMQ's on_node_down): they died with them. A node that
        comes to lead later does it then (the tick), for the nodes it saw go down."""
        host = self.app.host
        if not self._gone or host is None or host.leader(GROUP) != host.node_id \
                or not self.app.running:
            return
        gone, self._gone = self._gone, set()
        node = self.app.node
        for vhost in list(node.meta.vhosts.values()):
            for record in list(vhost.queues.values()):
                if record.type != "classic" or record.members or not record.node \
                        or not any(same_node(record.node, peer) for peer in gone):
                    continue
                if record.durable and record.exclusive_owner is None:
                    continue
                log.info("queue '%s' in vhost '%s' died with its node %s: deleting it",
                         record.name, vhost.name, record.node)
                p = node.propose({"op": "queue.delete", "vhost": vhost.name,
                                  "name": record.name})
                p.on_done(_log_refusal)

    # -- once a second ---------------------------------------------------------------------------
    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.remotes.expire()
                self.replies.expire()
                self.remotes.reconcile()
                self._delete_transient()
                self.home.stats(sorted(self.links.peers_up()))
            except Exception:
                log.exception("forwarding tick failed")
            self.app.schedule_flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _log_refusal(p: Pending) -> None:
    if p.error is not None:
        log.warning("a queue of a node that went down was not deleted: %s", p.error)
