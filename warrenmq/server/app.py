"""The node's composition root: boot, listeners, the flush and tick loops, shutdown.

Boot order: data directory, metadata bootstrap, AMQP listener, then the ports file (which
tells tests and scripts the node is ready). Shutdown order: stop accepting, close every
connection with 320 CONNECTION_FORCED, wait for them to go (with a deadline), then stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

from ..amqp.constants import CONNECTION_FORCED
from ..config import Config
from ..core.node import Node
from ..store.journal import WalJournal
from .protocol import AMQPProtocol
from .resources import ResourceMonitor, Watermarks

log = logging.getLogger("warrenmq.server")

TICK_S = 0.5


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
        self._stopped: asyncio.Event | None = None
        self._ticker: asyncio.Task | None = None
        self.ports: dict[str, int] = {}

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

    async def _tick(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK_S)
            ticks += 1
            now = self.loop.time()
            for proto in list(self.protocols):
                proto.tick(now)
            if self.monitor is not None:
                for resource, on in self.monitor.check().items():
                    self.node.set_alarm(resource, on)
            if self.journal is not None and ticks % 10 == 0:
                self.journal.maintain()
            self.schedule_flush()

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        cfg = self.config
        Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
        started = self.loop.time()
        self.journal = WalJournal(Path(cfg.data_dir), self.loop, wake=self.schedule_flush)
        self.node = Node(cfg, self.journal)
        if not self.journal.recover(self.node):
            self.node.bootstrap()
        self.node.remove_transient()
        log.info("node %s: data recovered from %s in %.2fs", cfg.nodename, cfg.data_dir,
                 self.loop.time() - started)
        self.monitor = ResourceMonitor(Path(cfg.data_dir), Watermarks(
            cfg.vm_memory_high_watermark_relative, cfg.vm_memory_high_watermark_absolute,
            cfg.disk_free_limit_absolute))
        server = await self.loop.create_server(lambda: AMQPProtocol(self), cfg.bind,
                                               cfg.amqp_port, reuse_address=True, backlog=1024)
        self._servers.append(server)
        self.ports["amqp"] = server.sockets[0].getsockname()[1]
        self._ticker = self.loop.create_task(self._tick())
        log.info("node %s: AMQP 0-9-1 listening on %s:%d", cfg.nodename, cfg.bind,
                 self.ports["amqp"])
        if cfg.ports_file:
            tmp = Path(str(cfg.ports_file) + ".tmp")
            tmp.write_text(json.dumps(self.ports))
            os.replace(tmp, cfg.ports_file)
        log.info("Server startup complete")

    async def stop(self, reason: str = "shutdown") -> None:
        log.info("node %s: stopping (%s)", self.config.nodename, reason)
        for server in self._servers:
            server.close()
        for proto in list(self.protocols):
            if proto.conn is not None:
                proto.conn.close(CONNECTION_FORCED, "CONNECTION_FORCED - broker forced "
                                 f"connection closure with reason '{reason}'")
        self.schedule_flush()
        deadline = self.loop.time() + 3.0
        while self.protocols and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for proto in list(self.protocols):
            if proto.transport is not None:
                proto.transport.abort()
        if self._ticker:
            self._ticker.cancel()
        if self.journal is not None:
            self.journal.close()
        for server in self._servers:
            await server.wait_closed()
        if self.config.ports_file:
            Path(self.config.ports_file).unlink(missing_ok=True)
        assert self._stopped is not None
        self._stopped.set()
        log.info("node %s: stopped", self.config.nodename)

    async def run_forever(self) -> None:
        await self.start()
        assert self._stopped is not None
        stopping: list[asyncio.Task] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(
                sig, lambda: stopping or stopping.append(self.loop.create_task(self.stop())))
        await self._stopped.wait()
