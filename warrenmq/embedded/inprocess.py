"""The in-process runner: a node's Runtime on its own event loop, on a thread of the caller.

The thread owns the loop from start to close; other threads reach the node only through
`asyncio.run_coroutine_threadsafe`, so the broker keeps its single-threaded model (no locks)
and a test's blocking client on the main thread cannot stall it. The loop is uvloop's when
installed, as in warren-server. Nothing process-wide is touched: no signal handlers (only
the main thread may install them), no logging configuration, no gc thresholds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from ..cluster.control import CommandError
from ..config import Config
from ..server.runtime import Runtime


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ThreadRunner:
    def __init__(self, config: Config, cookie: str, fsync: bool) -> None:
        self.runtime = Runtime(config, cookie)
        self.runtime.app.journal_sync = fsync
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self._run, name=f"warrenmq {config.nodename}",
                                       daemon=True)
        self.ports: dict[str, int] = {}
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # -- the broker thread ------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            try:
                self.loop.run_until_complete(self.runtime.start())
            except BaseException as e:  # reported to the thread that called start()
                self._start_error = e
                return
            finally:
                self._started.set()
            self.loop.run_forever()
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        # Tasks still pending (a connection task mid-close) are cancelled so none leaks into a
        # later loop and the loop closes without "Task was destroyed" warnings.
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        with contextlib.suppress(RuntimeError):
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    # -- called from other threads --------------------------------------------------------------
    def start(self, timeout_s: float) -> None:
        self.thread.start()
        if not self._started.wait(timeout_s):
            # the loop is stuck in start-up: stopping it is all that can be done from here
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise TimeoutError(f"the node did not start within {timeout_s:g}s")
        if self._start_error is not None:
            self.thread.join(timeout_s)
            raise self._start_error
        self.ports = dict(self.runtime.ports)

    def submit(self, coro: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, command: str, args: dict, timeout_s: float) -> Any:
        from ..server.commands import dispatch

        try:
            return self.submit(dispatch(self.runtime, command, args), timeout_s)
        except CommandError as e:
            raise _command_failed(command, str(e), e.exit_status) from None

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout_s: float) -> None:
        if not self.thread.is_alive():
            return
        try:
            self.submit(self.runtime.stop("shutdown"), timeout_s)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise TimeoutError(f"the broker thread did not end within {timeout_s:g}s")


def _command_failed(command: str, text: str, exit_status: int) -> Exception:
    from .broker import BrokerError

    return BrokerError(f"{command}: {text}", exit_status)
