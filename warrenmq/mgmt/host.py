"""Starting and stopping the plugins on a running node.

The host makes the running listeners match the enabled-plugins file whenever asked
(`sync`): at app start, after `warren-plugins enable|disable` (no restart needed), and with
an empty set when the app stops (the management listener is part of the app, as in
RabbitMQ). An ephemeral port (0) is bound once and reused by later starts, so clients and
tests find the listener where it was. The rate sampler runs while any plugin does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from . import plugins
from .router import Context
from .stats import SAMPLE_INTERVAL_S, Sampler

log = logging.getLogger("warrenmq.mgmt")

PROMETHEUS_PORT = 15692
PORT_KEYS = {plugins.MANAGEMENT: "mgmt", plugins.PROMETHEUS: "prometheus"}


class PluginHost:
    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        self.sampler = Sampler(lambda: self.rt.app.node if self.rt.app.running else None)
        self.ctx = Context(runtime, self.sampler)
        self.runners: dict[str, web.AppRunner] = {}
        self.bound: dict[str, int] = {}
        self._sampling: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def enabled(self) -> list[str]:
        return plugins.read_enabled(self.rt.config.data_dir)

    def describe(self) -> dict:
        """What `warren-plugins list` shows: every known plugin, enabled, running."""
        return {"node": self.rt.config.nodename, "enabled": self.enabled(),
                "running": self.running(), "file": str(plugins.path_in(
                    self.rt.config.data_dir)),
                "plugins": [{"name": p.name, "version": plugins.VERSION,
                             "description": p.description} for p in plugins.PLUGINS.values()]}

    async def change(self, action: str, names: list[str]) -> dict:
        """enable / disable plugins (RabbitMQ's names accepted), persisted and applied to
        the running node at once; returns the new state."""
        wanted = plugins.resolve(names)
        enabled = self.enabled()
        if action == "enable":
            new = [p for p in plugins.PLUGINS if p in enabled or p in wanted]
        elif action == "disable":
            new = [p for p in enabled if p not in wanted]
        elif action == "set":
            new = wanted
        else:
            raise plugins.PluginsError(f"unknown action {action!r}")
        await self.set_enabled(new)
        if self.rt.app.running:
            self.rt._write_ports_file()  # tests and scripts find a new listener's port there
        return self.describe()

    def running(self) -> list[str]:
        return [p for p in plugins.PLUGINS if p in self.runners]

    async def set_enabled(self, names: list[str]) -> None:
        plugins.write_enabled(self.rt.config.data_dir, names)
        await self.sync()

    async def sync(self) -> None:
        async with self._lock:
            try:
                want = self.enabled() if self.rt.app.running else []
            except plugins.PluginsError as e:
                # the node keeps serving AMQP; warren-plugins reports the same error
                log.error("node %s: no plugins started: %s", self.rt.config.nodename, e)
                want = []
            for name in [n for n in self.runners if n not in want]:
                await self._stop(name)
            for name in want:
                if name not in self.runners:
                    await self._start(name)
            if self.runners and self._sampling is None:
                self.sampler.sample()
                self._sampling = asyncio.get_running_loop().create_task(self._sample())
            elif not self.runners and self._sampling is not None:
                self._sampling.cancel()
                self._sampling = None

    async def stop(self) -> None:
        async with self._lock:
            for name in list(self.runners):
                await self._stop(name)
            if self._sampling is not None:
                self._sampling.cancel()
                self._sampling = None

    def _port(self, name: str) -> int:
        if name in self.bound:
            return self.bound[name]
        cfg = self.rt.config
        if name == plugins.MANAGEMENT:
            return cfg.mgmt_port
        # there is no separate setting yet: an ephemeral management port (tests) means an
        # ephemeral Prometheus port too, so two nodes on one host never collide
        return 0 if cfg.mgmt_port == 0 else PROMETHEUS_PORT

    async def _start(self, name: str) -> None:
        from . import app, metrics

        application = app.build_app(self.ctx) if name == plugins.MANAGEMENT else \
            metrics.build_app(self.ctx)
        runner = web.AppRunner(application, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.rt.config.bind, self._port(name), reuse_address=True,
                           shutdown_timeout=1.0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        port = runner.addresses[0][1] if runner.addresses else 0
        self.bound[name] = port
        self.runners[name] = runner
        self.rt.ports[PORT_KEYS[name]] = port
        log.info("node %s: plugin %s listening on %s:%d", self.rt.config.nodename, name,
                 self.rt.config.bind, port)

    async def _stop(self, name: str) -> None:
        runner = self.runners.pop(name)
        self.rt.ports.pop(PORT_KEYS[name], None)
        await runner.cleanup()
        log.info("node %s: plugin %s stopped", self.rt.config.nodename, name)

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            try:
                self.sampler.sample()
            except Exception:  # a broken sample must not stop the charts for good
                log.exception("node %s: rate sampling failed", self.rt.config.nodename)
