"""`ClusterTransport`: the RaftHost's `Transport` over the cluster links.

A batch for node id N is encoded by `wire` and sent as a one-way message of kind "raft" to
the node named `name_of(N)`; a batch that arrives is decoded and handed to the host. The
broker owns the id <-> name map and passes it in as a callable, so the map can grow (a node
joins) without this module knowing how.

Delivery stays best effort, as the `Transport` contract allows, and Raft retries:
- an id the map does not know is dropped (counted);
- a peer with no link right now is dropped, and `connect()`ed so that a link exists by the
  next heartbeat: the transport dials whoever the host talks to;
- a link over its high-water mark drops batches that carry messages, so a slow peer cannot
  make the node buffer without bound; empty batches (the node-level heartbeat) still go,
  so a busy link is not mistaken for a dead node.
On arrival, a batch whose `from_node` the map gives another name than the link's peer is
dropped and logged (two nodes with one id would corrupt every group they share), as is a
batch addressed to another id than ours, or one that does not decode (another version; see
`wire`).

Big snapshots. A SNAPSHOT message whose data is over `chunk_bytes` is taken out of its
batch (the rest of the batch goes as above) and streamed in chunks of kind "raft.snap" by
`snapshots.SnapshotSender`: a snapshot may be larger than a link frame can be, and one
that fits would still fill the link's buffer at once, so that every other group's batch to
that peer was dropped as congested (and the core, presuming the snapshot lost, sent it
again). Chunks only take the spare half of the link's buffer, a few per loop turn, so the
other groups' batches keep flowing; one transfer per peer and group, resends of it
ignored, a newer snapshot replacing it, abandoned when its link drops (Raft resends). The
receiving side (`snapshots.SnapshotReceiver`) admits a transfer by the same checks as a
batch, reassembles it in order and delivers it as a one-message batch, as if it had come
whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warrenmq.replication.transport import Batch, Deliver, Transport

from . import snapshots, wire
from .links import PeerLinks, same_node

log = logging.getLogger("warrenmq.links")

KIND = "raft"
NameOf = Callable[[int], "str | None"]


@dataclass(slots=True)
class TransportStats:
    batches_sent: int = 0
    batches_received: int = 0
    dropped_unknown_id: int = 0  # no name for the peer id
    dropped_no_link: int = 0
    dropped_congested: int = 0
    dropped_bad: int = 0  # arrived but undecodable or from the wrong node
    # snapshots streamed in chunks (`snapshots`): sending ...
    snapshot_transfers_started: int = 0
    snapshot_chunks_sent: int = 0
    snapshot_transfers_sent: int = 0  # every chunk handed to the link
    snapshot_transfers_abandoned: int = 0  # link lost, or replaced by a newer snapshot
    snapshot_resends_ignored: int = 0  # the core's resend of the snapshot in flight
    # ... and receiving
    snapshot_chunks_received: int = 0
    snapshot_transfers_received: int = 0  # reassembled and delivered
    snapshot_transfers_dropped: int = 0  # partial: link lost, out of order, replaced, stale


class ClusterTransport(Transport):
    def __init__(self, links: PeerLinks, name_of: NameOf, *,
                 chunk_bytes: int = snapshots.CHUNK_BYTES,
                 snapshot_bytes_max: int = snapshots.SNAPSHOT_BYTES_MAX) -> None:
        self.links = links
        self.name_of = name_of
        self.stats = TransportStats()
        self._deliver: Deliver | None = None
        self._node_id = 0
        self._complained: set[str] = set()
        self.sender = snapshots.SnapshotSender(links, self.stats, chunk_bytes=chunk_bytes)
        self.receiver = snapshots.SnapshotReceiver(self.stats, self._admit, self._deliver_whole,
                                                   bytes_max=snapshot_bytes_max)
        links.on(KIND, self._arrive)
        links.on(snapshots.KIND, self._arrive_chunk)
        links.on_peer_down(self._peer_down)

    def bind(self, node_id: int, deliver: Deliver) -> None:
        self._node_id = node_id
        self._deliver = deliver

    def unbind(self, node_id: int) -> None:
        if node_id == self._node_id:
            self._deliver = None
            # the host that asked for these is gone, and nobody takes what arrives
            self.sender.abandon_all("the Raft host stopped")
            self.receiver.drop_all("the Raft host stopped")

    def send(self, peer_node: int, batch: Batch) -> None:
        name = self.name_of(peer_node)
        if name is None:
            self.stats.dropped_unknown_id += 1
            return
        links = self.links
        sender = self.sender
        if any(sender.takes(m) for _, m in batch.messages):
            streamed = [(g, m) for g, m in batch.messages if sender.takes(m)]
            batch = Batch(batch.from_node, batch.incarnation,
                          tuple((g, m) for g, m in batch.messages if not sender.takes(m)))
            # without a link, the rest of the batch (empty or not) counts the drop and dials
            if links.connected(name):
                for group_id, m in streamed:
                    sender.start(name, batch.from_node, batch.incarnation, group_id, m)
        if batch.messages and not links.writable(name):
            if links.connected(name):
                self.stats.dropped_congested += 1
            else:
                self._no_link(name)
            return
        # A host sends one batch per peer per turn: written at once, not a loop iteration
        # later, as every Raft hop of a message would otherwise wait for one more iteration
        # of a busy loop (bench/ha.py's producer -> consumer rate rose about 10 %).
        if not links.send(name, KIND, wire.encode_batch(batch), now=True):
            self._no_link(name)
            return
        self.stats.batches_sent += 1

    def _no_link(self, name: str) -> None:
        self.stats.dropped_no_link += 1
        if name not in self.links.known():
            self.links.connect(name)

    def _peer_down(self, name: str) -> None:
        self.sender.peer_down(name)
        self.receiver.peer_down(name)

    def _arrive(self, from_name: str, payload: Any) -> None:
        if self._deliver is None:
            return
        try:
            if not isinstance(payload, bytes):
                raise wire.WireError(f"a raft message must be binary, got "
                                     f"{type(payload).__name__}")
            batch = wire.decode_batch(payload)
        except wire.WireError as e:
            self.stats.dropped_bad += 1
            self._complain(from_name, f"undecodable Raft batch from {from_name}: {e}")
            return
        if self._admit(from_name, batch):
            self._deliver_whole(batch)

    def _arrive_chunk(self, from_name: str, payload: Any) -> None:
        if self._deliver is None:
            return
        try:
            chunk = wire.chunk_from_wire(payload)
        except wire.WireError as e:
            self.stats.dropped_bad += 1
            self._complain(from_name, f"undecodable snapshot chunk from {from_name}: {e}")
            return
        self.receiver.accept(from_name, chunk)

    def _deliver_whole(self, batch: Batch) -> None:
        if self._deliver is None:
            return
        self.stats.batches_received += 1
        self._deliver(batch)

    def _admit(self, from_name: str, batch: Batch) -> bool:
        """Whether `batch` really comes from the link's peer and is for this node."""
        claimed = self.name_of(batch.from_node)
        if claimed is not None and not same_node(claimed, from_name):
            self.stats.dropped_bad += 1
            self._complain(from_name, f"Raft batch from {from_name} claims node id "
                           f"{batch.from_node}, which is {claimed}: dropped")
            return False
        if any(m.to != self._node_id for _, m in batch.messages):
            self.stats.dropped_bad += 1
            self._complain(from_name, f"Raft batch from {from_name} is addressed to another "
                           f"node id than this node's ({self._node_id}): dropped")
            return False
        return True

    def _complain(self, from_name: str, text: str) -> None:
        # Once per peer: a peer on another version would otherwise log every heartbeat.
        if from_name not in self._complained:
            self._complained.add(from_name)
            log.error(text)
        else:
            log.debug(text)
