"""The stoppable *app*: the AMQP listener, its connections, the journal and the broker state.

The always-up runtime (runtime.py) owns the process (control listener, pid and ports files,
signals) and starts and stops this app at boot, at shutdown and for `warrenctl stop_app` /
`start_app` / `reset`. Every start builds the node afresh from the data directory (recovery
from the journal, or the first-start bootstrap), so a stop/start cycle is what a restart of
the process would be, and `reset` only has to empty the data directory in between.

Start order: journal, recovery or bootstrap, resource monitor, AMQP listener, tick loop.
Stop order: stop accepting, close every connection with 320 CONNECTION_FORCED, wait for them
to go (with a deadline), abort the stragglers, stop the tick loop, close the journal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

from .. import __version__
from ..amqp.constants import CONNECTION_FORCED
from ..amqp.errors import AMQPError
from ..config import Config
from ..core.node import Node
from ..replication.host import RaftHost, UnknownGroup
from ..replication.records import RECORD_KINDS
from ..store.journal import WalJournal
from . import identity
from .cluster import Cluster, classic_formation, read_join_file, write_join_file
from .images import FORK_ABOVE_BYTES, build_image
from .metalog import GROUP, RaftMetaLog, wait
from .protocol import AMQPProtocol
from .quorum import QuorumQueues
from .resources import ResourceMonitor, Watermarks

log = logging.getLogger("warrenmq.server")

TICK_S = 0.5
RAFT_TICK_S = 0.1
FORMATION_TIMEOUT_S = 60.0
COMPACT_AFTER_ENTRIES = 20_000
CLOSE_DEADLINE_S = 3.0


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.node = Node(config)
        self.journal: WalJournal | None = None
        self.host: RaftHost | None = None
        self.metalog: RaftMetaLog | None = None
        self.cluster: Cluster | None = None
        self.quorum: QuorumQueues | None = None
        self.last_members: dict[str, int] = {}  # the cluster as the app last saw it
        self.node_id = 0
        # set by the runtime: the cookie that authenticates cluster links, and the control
        # server on the cluster port that hands links over
        self.cookie = ""
        self.control = None
        self._checkpointing: asyncio.Task | None = None
        self._imaging: set[str] = set()  # groups whose image a forked child is building
        self._imaging_tasks: set[asyncio.Task] = set()
        # replicated queue -> (WAL segment, size) of the last snapshot this node wrote of it
        self._snapshots: dict[str, tuple[int, int]] = {}
        # replicated queue -> WAL segment current when its group was created here (none of
        # its records is older); a group recovered from the WAL counts from segment 0
        self._born: dict[str, int] = {}
        self.monitor: ResourceMonitor | None = None
        self.protocols: set[AMQPProtocol] = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._flush_scheduled = False
        self._servers: list[asyncio.base_events.Server] = []
        self._ticker: asyncio.Task | None = None
        self._timer_task: asyncio.Task | None = None
        # the port to bind: the configured one, or (after a first start on port 0) the port
        # bound then, so clients find a restarted app where it was
        self.amqp_port = config.amqp_port
        self.running = False
        # False only for throwaway nodes (warrenmq.embedded in memory): the log is written
        # but never fsynced, so confirms are fast and nothing survives a crash
        self.journal_sync = True
        self.segment_bytes_max = 64 * 1024 * 1024

    # -- flush: one write per connection per loop turn -----------------------------------------------
    def schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        now = self.loop.time()
        for conn in self.node.flush():
            shell = getattr(conn, "shell", None)
            if shell is not None:
                shell.flush(now)
            # a connection without a socket (a direct session, a test's pipe) is read by
            # its owner

    def check_resources(self) -> None:
        """Readings against the watermarks: raise or clear the memory and disk alarms."""
        if self.monitor is not None:
            for resource, on in self.monitor.check().items():
                self.node.set_alarm(resource, on)
            self.schedule_flush()

    async def _timers(self) -> None:
        """Queue timers (message TTL, queue expiry) at 50 ms resolution."""
        while True:
            await asyncio.sleep(0.05)
            if self.node.timed:
                self.node.tick(time.time() * 1000.0)
                self.schedule_flush()

    async def _tick(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK_S)
            ticks += 1
            now = self.loop.time()
            for proto in list(self.protocols):
                proto.tick(now)
            self.check_resources()
            self.node.check_consumer_timeouts(time.time() * 1000.0)
            if self.journal is not None and ticks % 10 == 0:
                self.journal.maintain()
                self._compact_long_logs()
            self.schedule_flush()

    # -- the store: journal and metadata group -------------------------------------------------------
    async def open_store(self) -> None:
        """Open the data directory: the journal, the metadata group, the queues' messages."""
        self.loop = asyncio.get_running_loop()
        cfg = self.config
        Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
        started = self.loop.time()
        self.journal = WalJournal(Path(cfg.data_dir), self.loop, wake=self.schedule_flush,
                                  sync=self.journal_sync,
                                  segment_bytes_max=self.segment_bytes_max)
        self.node = Node(cfg, self.journal)
        try:
            await self._open_metadata(started)
        except BaseException:
            await self.close_store()
            raise

    async def close_store(self, reason: str = "shutdown") -> None:
        self.node.fail_waiting(AMQPError(CONNECTION_FORCED, f"node stopping ({reason})"))
        if self.quorum is not None:
            await self.quorum.stop()
            self.quorum = None
        if self.cluster is not None:
            self.last_members = self.cluster.members()
            await self.cluster.stop()
            self.cluster = None
        if self._checkpointing is not None:
            self._checkpointing.cancel()
            self._checkpointing = None
        for task in list(self._imaging_tasks):
            task.cancel()
        if self.host is not None:
            await self.host.stop()
            self.host = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    # -- metadata: the "meta" Raft group ---------------------------------------------------------------
    async def _open_metadata(self, started: float) -> None:
        """Recover the log, host the metadata group, bring the metadata up to date (or
        bootstrap a fresh node), then give the durable queues their messages back."""
        cfg = self.config
        node = self.node
        journal = self.journal
        assert journal is not None
        raft_records = journal.scan(RECORD_KINDS)
        node_id = identity.load(Path(cfg.data_dir), cfg.nodename)
        self.node_id = node_id
        joined = read_join_file(Path(cfg.data_dir))  # set by join_cluster before this start
        if not raft_records and not joined and cfg.cluster_nodes:
            members = await classic_formation(self.cookie, cfg.nodename, node_id,
                                              list(cfg.cluster_nodes), FORMATION_TIMEOUT_S)
            if members:
                write_join_file(Path(cfg.data_dir), members)
                joined = {"members": members}
        self.cluster = Cluster(self, node_id, self.cookie)
        if joined:
            self.cluster.initial = {k: int(v) for k, v in joined["members"].items()}
        self.host = RaftHost(node_id, journal.wal, self.cluster.transport,
                             tick_interval_s=RAFT_TICK_S)
        self.host.recover(raft_records)
        self.metalog = RaftMetaLog(self.host, node, self.schedule_flush)
        node.meta_log = self.metalog
        node.on_applied.append(self._applied)
        self.quorum = QuorumQueues(self)
        node.on_quorum_created = self.quorum.created
        node.on_queue_gone.append(self.quorum.gone)
        node.describe_replicas = self.quorum.describe
        fresh = GROUP not in self.host.recovered_groups()
        voters = set(self.cluster.initial.values()) if joined else {node_id}
        self.host.add_group(GROUP, voters, self.metalog.apply, self.metalog.restore)
        await self.host.start()
        await self.cluster.start()
        if fresh and not joined:
            for p in [*node.bootstrap(),
                      node.propose({"op": "member.add", "name": cfg.nodename, "id": node_id,
                                    "cluster_name": cfg.cluster_name or cfg.nodename})]:
                await wait(p)
        elif fresh:
            await self._joined_caught_up()
        else:
            await self._caught_up()
        journal.restore(node)
        journal.request_checkpoint = self._request_checkpoint
        for p in node.remove_transient():
            await wait(p)
        self.quorum.start()
        log.info("node %s: data recovered from %s in %.2fs", cfg.nodename, cfg.data_dir,
                 self.loop.time() - started)

    async def _caught_up(self, timeout_s: float = 60.0) -> None:
        """Wait until the recovered metadata log is applied (a lone node commits its whole
        log once it has elected itself)."""
        raft = self.host.group(GROUP)
        target = raft.log.last_index() if len(raft.voters) == 1 else raft.commit_index
        deadline = self.loop.time() + timeout_s
        while raft.applied_index < target:
            if self.loop.time() > deadline:
                raise RuntimeError(f"metadata log not applied within {timeout_s:g}s "
                                   f"({raft.applied_index} of {target})")
            await asyncio.sleep(0.005)

    async def _joined_caught_up(self, timeout_s: float = 60.0) -> None:
        """A node that just joined has an empty log: wait until the leader has sent it the
        metadata (at least its own member record)."""
        deadline = self.loop.time() + timeout_s
        while self.config.nodename not in self.node.meta.members:
            if self.loop.time() > deadline:
                raise RuntimeError(f"no metadata from the cluster within {timeout_s:g}s: "
                                   f"{self.cluster.describe_unreachable()}")
            await asyncio.sleep(0.02)

    def _applied(self, command: dict) -> None:
        op = command["op"]
        if op.startswith("member.") and self.cluster is not None:
            self.cluster.sync()
        if (op.startswith("member.") or op.startswith("policy.")) and self.quorum is not None \
                and self.running:
            self.quorum.reconcile_all()

    def node_info(self) -> dict:
        cfg = self.config
        listeners = [{"node": cfg.nodename, "interface": cfg.bind, "port": self.amqp_port,
                      "protocol": "amqp", "purpose": "AMQP 0-9-1"}]
        if self.control is not None and self.control.server is not None:
            port = self.control.server.sockets[0].getsockname()[1]
            listeners.append({"node": cfg.nodename, "interface": cfg.bind, "port": port,
                              "protocol": "clustering",
                              "purpose": "inter-node and CLI tool communication"})
        return {"name": cfg.nodename, "version": __version__, "listeners": listeners,
                "alarms": sorted(self.node.alarms), "running": self.running}

    def _compact_long_logs(self) -> None:
        """A replicated queue's log held in memory is cut once it is long: snapshot at the
        applied index (the machine and the live bodies), older entries dropped. A snapshot
        copies every live body, so a deep queue is cut only after twice as many entries as
        it holds messages: each entry then costs at most half a body copy, however deep."""
        if self.host is None or self.quorum is None:
            return
        for gid, q in list(self.quorum.replicas.items()):
            if gid in self._imaging:
                continue
            raft = self.host.group(gid)
            logged = raft.applied_index - raft.log.first_index()
            if logged > max(COMPACT_AFTER_ENTRIES, 2 * len(q.bodies)):
                weight = q.live_bytes()
                if weight <= FORK_ABOVE_BYTES:
                    data = q.snapshot()
                    fut = self.host.compact(gid, data)
                    fut.add_done_callback(partial(self._compacted, gid, len(data)))
                else:
                    task = self.loop.create_task(self._compact_deep(gid, q, weight))
                    self._imaging_tasks.add(task)
                    task.add_done_callback(self._imaging_tasks.discard)

    async def _image(self, gid: str, q: Any, weight: int) -> tuple[bytes, int] | None:
        """The queue's snapshot image and the applied index it is at, or None if its group
        is gone (or an image of it is being built already)."""
        assert self.host is not None
        if gid in self._imaging:
            return None
        try:
            index = self.host.applied_index(gid)
        except UnknownGroup:
            return None
        if weight <= FORK_ABOVE_BYTES:
            return q.snapshot(), index
        self._imaging.add(gid)
        started = self.loop.time()
        try:
            data = await build_image(q.snapshot)
        finally:
            self._imaging.discard(gid)
        log.info("snapshot image of %s at index %d: %d bytes, built in a child in %.2fs",
                 gid, index, len(data), self.loop.time() - started)
        return data, index

    async def _compact_deep(self, gid: str, q: Any, weight: int) -> None:
        try:
            image = await self._image(gid, q, weight)
            if image is None or self.host is None:
                return
            data, index = image
            loc = await self.host.compact(gid, data, index)
            self._snapshots[gid] = (loc.segment_id, len(data))
        except (UnknownGroup, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("compaction of %s failed", gid)

    def group_born(self, gid: str) -> None:
        """A replicated queue's group was just created here (not recovered)."""
        if self.journal is not None:
            self._born[gid] = self.journal.wal.current_segment()

    def _compacted(self, gid: str, size: int, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._snapshots[gid] = (fut.result().segment_id, size)

    def _request_checkpoint(self) -> None:
        """The journal wants old segments gone: snapshot the metadata group after them."""
        if self._checkpointing is None and self.host is not None:
            self._checkpointing = self.loop.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            if self.host is None or self.journal is None or self.metalog is None:
                return
            # each image is taken with its group's applied index, with no await in between
            # (see RaftHost.compact); a deep queue's is built in a forked child (images.py)
            images = [(GROUP, self.metalog.snapshot(), self.host.applied_index(GROUP))]
            pinned: list[int] = []  # segments of snapshots not worth rewriting yet
            replicas = self.quorum.replicas if self.quorum is not None else {}
            for gid in set(self._snapshots) - set(replicas):
                del self._snapshots[gid]
            for gid in set(self._born) - set(replicas):
                del self._born[gid]
            current = self.journal.wal.current_segment()
            for gid, q in replicas.items():
                # A snapshot holds every live body, so it is worth writing only once more log
                # was written since the group's oldest needed record (its last snapshot, or
                # its birth) than the snapshot would weigh (whole segments between the two):
                # a queue that only grows gains nothing from one, and rewriting a deep queue at
                # every checkpoint would grow the log by a snapshot per checkpoint, each
                # rewrite asking for the next. Until then that record's segment stays.
                seg, size = self._snapshots.get(gid, (self._born.get(gid, 0), 0))
                weight = max(size, q.live_bytes())
                if (current - seg - 1) * self.segment_bytes_max < weight:
                    pinned.append(seg)
                    continue
                image = await self._image(gid, q, weight)
                if image is not None:
                    images.append((gid, *image))
            futures = [self.host.compact(gid, data, index) for gid, data, index in images]
            locations = await asyncio.gather(*futures, return_exceptions=True)
            # a queue deleted meanwhile has no group left, and no records to keep
            done = [(gid, data, loc)
                    for (gid, data, _), loc in zip(images, locations, strict=True)
                    if not isinstance(loc, UnknownGroup)]
            failed = [loc for _, _, loc in done if isinstance(loc, BaseException)]
            if failed:
                raise failed[0]
            for gid, data, loc in done:
                if gid != GROUP:
                    self._snapshots[gid] = (loc.segment_id, len(data))
            if self.journal is not None:
                self.journal.checkpoint_segment = min(
                    [loc.segment_id for _, _, loc in done] + pinned)
        except Exception:
            log.exception("checkpoint of the Raft groups failed")
        finally:
            self._checkpointing = None

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> int:
        """Recover (or bootstrap) the node and serve AMQP; returns the bound port."""
        cfg = self.config
        await self.open_store()
        try:
            self.monitor = ResourceMonitor(Path(cfg.data_dir), Watermarks(
                cfg.vm_memory_high_watermark_relative, cfg.vm_memory_high_watermark_absolute,
                cfg.disk_free_limit_absolute))
            server = await self.loop.create_server(lambda: AMQPProtocol(self), cfg.bind,
                                                   self.amqp_port, reuse_address=True,
                                                   backlog=1024)
        except BaseException:
            await self.close_store()
            raise
        self._servers = [server]
        self.amqp_port = server.sockets[0].getsockname()[1]
        self._ticker = self.loop.create_task(self._tick())
        self._timer_task = self.loop.create_task(self._timers())
        self.running = True
        log.info("node %s: AMQP 0-9-1 listening on %s:%d", cfg.nodename, cfg.bind,
                 self.amqp_port)
        return self.amqp_port

    async def stop(self, reason: str = "shutdown") -> None:
        if not self.running:
            return
        self.running = False
        log.info("node %s: stopping the app (%s)", self.config.nodename, reason)
        for server in self._servers:
            server.close()
        for proto in list(self.protocols):
            if proto.conn is not None:
                proto.conn.close(CONNECTION_FORCED, "CONNECTION_FORCED - broker forced "
                                 f"connection closure with reason '{reason}'")
        self.schedule_flush()
        deadline = self.loop.time() + CLOSE_DEADLINE_S
        while self.protocols and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for proto in list(self.protocols):
            if proto.transport is not None:
                proto.transport.abort()
        if self._ticker:
            self._ticker.cancel()
            self._ticker = None
        if self._timer_task:
            self._timer_task.cancel()
            self._timer_task = None
        await self.close_store(reason)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
