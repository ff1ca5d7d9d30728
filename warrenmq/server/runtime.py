"""The always-up *runtime* of a node: the process around the stoppable app.

It owns what lives as long as the process: the control listener on the cluster (dist) port,
the pid file, the ports file, signal handling, and the App it starts and stops. `warrenctl`
keeps talking to the runtime while the app is stopped, which is what makes `stop_app`,
`reset` and `start_app` (and, later, `join_cluster`) possible.

Boot order: data directory, pid file, control listener, app, ports file (which tells tests
and scripts the node is ready). Shutdown: app, control listener, ports file, pid file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cluster.control import ControlServer
from ..config import Config
from ..mgmt import plugins
from ..mgmt.host import PluginHost
from .app import App

log = logging.getLogger("warrenmq.server")


class Runtime:
    def __init__(self, config: Config, cookie: str) -> None:
        self.config = config
        self.cookie = cookie
        self.app = App(config)
        self.app.cookie = cookie
        self.control: ControlServer | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.ports: dict[str, int] = {}
        self.started_at = time.time()
        self._stopped: asyncio.Event | None = None
        self._stopping: asyncio.Task | None = None
        self.on_ready: Callable[[], None] | None = None
        self.log_files: list[Path] = []  # set by the CLI that configured logging
        self.plugins = PluginHost(self)  # management and Prometheus listeners (part of the app)

    @property
    def pid_file(self) -> Path:
        return self.config.pid_file or Path(self.config.data_dir) / "warren.pid"

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        from .commands import dispatch

        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        cfg = self.config
        Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
        self.control = ControlServer(cfg.nodename, self.cookie,
                                     lambda cmd, args: dispatch(self, cmd, args))
        self.ports["dist"] = await self.control.start(cfg.bind, cfg.dist_port)
        self.app.control = self.control
        log.info("node %s: control and cluster listener on %s:%d", cfg.nodename, cfg.bind,
                 self.ports["dist"])
        try:
            self.ports["amqp"] = await self.app.start()
            await self.plugins.sync()
        except BaseException:
            await self.plugins.stop()
            await self.app.stop()
            await self.control.close()
            raise
        self._write_pid_file()
        self._write_ports_file()
        log.info("Server startup complete")
        if self.on_ready is not None:
            self.on_ready()

    async def stop(self, reason: str = "shutdown") -> None:
        log.info("node %s: stopping (%s)", self.config.nodename, reason)
        await self.plugins.stop()
        await self.app.stop(reason)
        if self.control is not None:
            await self.control.close()
        if self.config.ports_file:
            Path(self.config.ports_file).unlink(missing_ok=True)
        self._remove_pid_file()
        assert self._stopped is not None
        self._stopped.set()
        log.info("node %s: stopped", self.config.nodename)

    def request_stop(self, reason: str = "shutdown") -> None:
        """Stop soon (after the current control reply has been written); idempotent."""
        if self._stopping is None:
            self._stopping = self.loop.create_task(self.stop(reason))

    async def run_forever(self) -> None:
        await self.start()
        assert self._stopped is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop)
        await self._stopped.wait()

    # -- the app, under warrenctl's control -----------------------------------------------------------
    async def stop_app(self) -> None:
        await self.plugins.stop()
        await self.app.stop("shutdown")

    async def start_app(self) -> None:
        if self.app.running:
            return
        self.ports["amqp"] = await self.app.start()
        await self.plugins.sync()
        self._write_ports_file()

    def reset(self) -> None:
        """Return the stopped node to its virgin state: the next start_app finds an empty data
        directory and bootstraps, as on a first start."""
        assert not self.app.running
        data_dir = Path(self.config.data_dir)
        keep = {self.pid_file.resolve(), plugins.path_in(data_dir).resolve()}
        if self.config.ports_file:
            keep.add(Path(self.config.ports_file).resolve())
        if data_dir.is_dir():
            for entry in data_dir.iterdir():
                if entry.resolve() in keep:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.app.last_members = {}
        log.info("node %s: reset to a virgin state", self.config.nodename)

    # -- files ------------------------------------------------------------------------------------------
    def _write_ports_file(self) -> None:
        if self.config.ports_file:
            _atomic_write(Path(self.config.ports_file), json.dumps(self.ports))

    def _write_pid_file(self) -> None:
        _atomic_write(self.pid_file, f"{os.getpid()}\n")

    def _remove_pid_file(self) -> None:
        try:
            if self.pid_file.read_text().strip() == str(os.getpid()):
                self.pid_file.unlink()
        except OSError:
            pass

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "uptime_s": int(time.time() - self.started_at)}


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
