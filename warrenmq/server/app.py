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
from pathlib import Path

from ..amqp.constants import CONNECTION_FORCED
from ..config import Config
from ..core.node import Node
from ..store.journal import WalJournal
from .protocol import AMQPProtocol
from .resources import ResourceMonitor, Watermarks

log = logging.getLogger("warrenmq.server")

TICK_S = 0.5
CLOSE_DEADLINE_S = 3.0


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.node = Node(config)
        self.journal: WalJournal | None = None
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
            else:
                conn.take_output()

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
            self.schedule_flush()

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> int:
        """Recover (or bootstrap) the node and serve AMQP; returns the bound port."""
        self.loop = asyncio.get_running_loop()
        cfg = self.config
        Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
        started = self.loop.time()
        self.journal = WalJournal(Path(cfg.data_dir), self.loop, wake=self.schedule_flush,
                                  sync=self.journal_sync)
        self.node = Node(cfg, self.journal)
        try:
            if not self.journal.recover(self.node):
                self.node.bootstrap()
            self.node.remove_transient()
            log.info("node %s: data recovered from %s in %.2fs", cfg.nodename, cfg.data_dir,
                     self.loop.time() - started)
            self.monitor = ResourceMonitor(Path(cfg.data_dir), Watermarks(
                cfg.vm_memory_high_watermark_relative, cfg.vm_memory_high_watermark_absolute,
                cfg.disk_free_limit_absolute))
            server = await self.loop.create_server(lambda: AMQPProtocol(self), cfg.bind,
                                                   self.amqp_port, reuse_address=True,
                                                   backlog=1024)
        except BaseException:
            self.journal.close()
            self.journal = None
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
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
