"""The seam between a RaftHost and the network: `Batch`, the `Transport` interface, and
`MemoryNetwork`, an in-process network for tests (several hosts in one event loop, links
that can be cut and healed).

A batch is everything one node sends another in one loop turn: the messages of every
group, tagged with their group id. An empty batch still says "I am alive" (with the
sender's incarnation, so a peer that restarted is told apart from one that never left):
it is the node-level heartbeat the failure detector runs on, instead of one heartbeat
per group.

The real cluster transport (cluster/) will encode batches on the wire; here they travel
as objects, which is why everything in a Message is immutable.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from warrenmq.raft import Message

Deliver = Callable[["Batch"], None]


@dataclass(frozen=True, slots=True)
class Batch:
    from_node: int
    incarnation: int  # changes every time the sending host starts
    messages: tuple[tuple[str, Message], ...] = ()


class Transport(ABC):
    """Carries batches between hosts. Delivery is best effort (Raft retries): a batch may
    be lost, but one that arrives arrives whole, and batches on one link keep their order."""

    @abstractmethod
    def bind(self, node_id: int, deliver: Deliver) -> None:
        """Route batches for `node_id` to `deliver` (called on the host's loop)."""

    @abstractmethod
    def unbind(self, node_id: int) -> None: ...

    @abstractmethod
    def send(self, peer_node: int, batch: Batch) -> None:
        """Queue `batch` for `peer_node`; never blocks."""


@dataclass(slots=True)
class LinkStats:
    batches: int = 0
    messages: int = 0
    dropped: int = 0


@dataclass(slots=True)
class _Endpoint:
    deliver: Deliver | None = None


class MemoryNetwork:
    """Hosts in one event loop; `transport(node_id)` gives each its Transport. Delivery is
    `call_soon`, never inline, so a send never re-enters the receiving host."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._endpoints: dict[int, _Endpoint] = {}
        self._cut: set[frozenset[int]] = set()
        self.links: dict[tuple[int, int], LinkStats] = {}
        self.log: list[tuple[int, int, int]] = []  # (from, to, message count) per batch
        self.recording = False

    def transport(self, node_id: int) -> MemoryTransport:
        self._endpoints.setdefault(node_id, _Endpoint())
        return MemoryTransport(self, node_id)

    # -- faults -------------------------------------------------------------------------
    def cut(self, a: int, b: int) -> None:
        self._cut.add(frozenset((a, b)))

    def isolate(self, node_id: int) -> None:
        for other in self._endpoints:
            if other != node_id:
                self.cut(node_id, other)

    def heal(self) -> None:
        self._cut.clear()

    def connected(self, a: int, b: int) -> bool:
        return frozenset((a, b)) not in self._cut

    # -- carrying -----------------------------------------------------------------------
    def _send(self, from_node: int, to: int, batch: Batch) -> None:
        stats = self.links.setdefault((from_node, to), LinkStats())
        stats.batches += 1
        stats.messages += len(batch.messages)
        if self.recording:
            self.log.append((from_node, to, len(batch.messages)))
        ep = self._endpoints.get(to)
        if ep is None or ep.deliver is None or not self.connected(from_node, to):
            stats.dropped += 1
            return
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(self._arrive, from_node, to, batch)

    def _arrive(self, from_node: int, to: int, batch: Batch) -> None:
        # Checked again on arrival: a link cut (or a host stopped) while the batch was in
        # flight loses it, as a real network would.
        ep = self._endpoints.get(to)
        if ep is None or ep.deliver is None or not self.connected(from_node, to):
            self.links[(from_node, to)].dropped += 1
            return
        ep.deliver(batch)


class MemoryTransport(Transport):
    def __init__(self, network: MemoryNetwork, node_id: int) -> None:
        self.network = network
        self.node_id = node_id

    def bind(self, node_id: int, deliver: Deliver) -> None:
        if node_id != self.node_id:
            raise ValueError(f"this transport belongs to node {self.node_id}, not {node_id}")
        self.network._endpoints[node_id].deliver = deliver

    def unbind(self, node_id: int) -> None:
        ep = self.network._endpoints.get(node_id)
        if ep is not None:
            ep.deliver = None

    def send(self, peer_node: int, batch: Batch) -> None:
        self.network._send(self.node_id, peer_node, batch)
