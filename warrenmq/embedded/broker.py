"""`Broker`: one real WarrenMQ node for a test suite, started and stopped from Python.

What it guarantees, whatever the mode: it binds only 127.0.0.1 and only ephemeral ports
(AMQP, and the control port `call` uses; never 5672, 25672 or 15672), it reads no config
file and no WARREN_* variable (a developer's environment cannot change what tests get), it
needs no cookie in the home directory (a fresh random one lives in memory, or in a private
run directory for a child process), and `stop()` leaves nothing behind: no thread, no child
process, no temporary file.

In memory (no `data_dir`) the node runs on a temporary data directory deleted at stop, with
fsync off: persistent messages and durable queues behave as on a real node but nothing
survives the broker object. On a given `data_dir` it is a normal durable node (fsync on by
default), and a later Broker on the same directory recovers what was there.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import itertools
import os
import secrets
import shutil
import string
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

from ..config import Config

LOOPBACK = "127.0.0.1"
MODES = ("thread", "process")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 30.0
ENABLED_PLUGINS_FILE = "enabled_plugins"  # the node's plugin list, in its data directory
# Set through Broker's own arguments, never through `settings`: they are what keeps the
# broker private to the test (loopback, ephemeral ports, its own directories).
_RESERVED = {"nodename", "bind", "amqp_port", "dist_port", "mgmt_port", "data_dir",
             "config_file", "ports_file", "pid_file", "log_file", "log_dir", "log_console",
             "default_user", "default_pass"}
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_names = itertools.count(1)
_live: weakref.WeakSet[Broker] = weakref.WeakSet()
_live_lock = threading.Lock()


class BrokerError(Exception):
    """The broker could not start, or a command sent to it failed. `exit_status` is the one
    warrenctl would exit with for the same failure (65 invalid input, 70 internal, ...)."""

    def __init__(self, message: str, exit_status: int = 70) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class Broker:
    """A single WarrenMQ node on an ephemeral loopback port.

    `mode="thread"` (the default) runs it in this process on a thread with its own event
    loop; `mode="process"` runs it as a child process (isolated from the test process's GIL,
    signals and crashes). Use it as a context manager (`with Broker() as broker:`), an async
    context manager (`async with Broker() as broker:`, which never blocks the caller's
    loop), or call `start()` and `stop()`.
    """

    def __init__(self, mode: Literal["thread", "process"] = "thread",
                 data_dir: str | os.PathLike[str] | None = None, *, port: int = 0,
                 fsync: bool | None = None, user: str = "guest", password: str = "guest",
                 management: bool = False, settings: dict[str, Any] | None = None,
                 log_level: str = "warning", start_timeout_s: float = START_TIMEOUT_S) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"port must be 0 (any free port) or a TCP port, not {port!r}")
        if not user or not password:
            raise ValueError("user and password must not be empty")
        if log_level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}, "
                             f"not {log_level!r}")
        self.mode = mode
        self.user = user
        self.password = password
        self.host = LOOPBACK
        self.given_data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.fsync = self.given_data_dir is not None if fsync is None else bool(fsync)
        self.log_level = log_level
        self.management = management
        self.start_timeout_s = start_timeout_s
        self.settings = _check_settings(settings or {})
        self.requested_port = port
        self.nodename = f"embedded-{os.getpid()}-{next(_names)}@localhost"
        self.port = 0  # the AMQP port, once started
        self.ports: dict[str, int] = {}
        self.data_dir: Path | None = None
        self.startup_s: float | None = None  # how long the last start() took
        self._runner: Any = None
        self._temp_dirs: list[Path] = []

    # -- addresses ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """amqp://USER:PASSWORD@127.0.0.1:PORT/ (the default vhost)."""
        return self.url_for("/")

    def url_for(self, vhost: str = "/", user: str | None = None,
                password: str | None = None) -> str:
        """The AMQP URL of `vhost` (percent-encoded, so "/" is the default vhost)."""
        self._require_running()
        user = self.user if user is None else user
        password = self.password if password is None else password
        return (f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:"
                f"{self.port}/{quote(vhost, safe='')}")

    @property
    def mgmt_url(self) -> str | None:
        """http://127.0.0.1:PORT/ of the management HTTP API (with `management=True`)."""
        port = self.ports.get("mgmt")
        return f"http://{self.host}:{port}/" if port else None

    @property
    def running(self) -> bool:
        return self._runner is not None and self._runner.alive

    @property
    def log_path(self) -> Path | None:
        """The child process's log (mode="process"); the thread mode logs through `logging`."""
        return getattr(self._runner, "log_path", None)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> Broker:
        if self._runner is not None:
            raise BrokerError("the broker is already started")
        started = time.monotonic()
        if self.given_data_dir is not None:
            self.given_data_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir = self.given_data_dir
            self.nodename = _stable_nodename(self.data_dir, self.nodename)
        else:
            self.data_dir = self._temp_dir("warrenmq-data-")
        self._write_enabled_plugins(self.data_dir)
        config = self._config(self.data_dir)
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        if self.mode == "thread":
            from .inprocess import ThreadRunner

            self._runner = ThreadRunner(config, cookie, self.fsync)
        else:
            from .child import ProcessRunner

            run_dir = self._temp_dir("warrenmq-run-")
            self._runner = ProcessRunner(config, cookie, self.fsync, run_dir,
                                         list(self._temp_dirs))
        try:
            self._runner.start(self.start_timeout_s)
        except BaseException as e:
            self._cleanup(self.start_timeout_s)
            if isinstance(e, OSError):
                raise BrokerError(f"cannot listen on {self.host}:{self.requested_port}: "
                                  f"{e.strerror or e}") from None
            if isinstance(e, (TimeoutError, RuntimeError)):
                raise BrokerError(f"the broker did not start: {e}") from None
            raise
        self.ports = dict(self._runner.ports)
        self.port = self.ports["amqp"]
        self.startup_s = time.monotonic() - started
        with _live_lock:
            _live.add(self)
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Close client connections (320 CONNECTION_FORCED), stop the node, remove its
        temporary files. Idempotent."""
        with _live_lock:
            _live.discard(self)
        self._cleanup(timeout_s)

    def _cleanup(self, timeout_s: float) -> None:
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                runner.stop(timeout_s)
        finally:
            for path in self._temp_dirs:
                shutil.rmtree(path, ignore_errors=True)
            self._temp_dirs = []
            self.port = 0
            self.ports = {}

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Broker:
        # start() blocks (thread join, child process wait): keep the caller's loop running
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    # -- administration (warrenctl's command table) ------------------------------------------------
    def call(self, command: str, timeout_s: float = CALL_TIMEOUT_S, **args: Any) -> Any:
        """Run a warrenctl command on the node, e.g. call("list_queues", vhost="/"); raises
        BrokerError with warrenctl's exit status if the node refuses it."""
        self._require_running()
        return self._runner.call(command, args, timeout_s)

    def add_vhost(self, name: str) -> None:
        self.call("add_vhost", vhost=name)

    def delete_vhost(self, name: str) -> None:
        self.call("delete_vhost", vhost=name)

    def set_permissions(self, vhost: str, user: str | None = None, configure: str = ".*",
                        write: str = ".*", read: str = ".*") -> None:
        self.call("set_permissions", vhost=vhost, user=self.user if user is None else user,
                  configure=configure, write=write, read=read)

    # -- internals ----------------------------------------------------------------------------------
    def _require_running(self) -> None:
        if self._runner is None:
            raise BrokerError("the broker is not started: call start() or use it as a "
                              "context manager")

    def _write_enabled_plugins(self, data_dir: Path) -> None:
        # A node without the file runs the management plugin (the quick start's console);
        # a test broker runs it only when asked: it costs start-up time and a listener. A
        # given data directory that already has the file keeps its choice.
        path = data_dir / ENABLED_PLUGINS_FILE
        if not path.exists():
            path.write_text("[warren_management].\n" if self.management else "[].\n")

    def _temp_dir(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        self._temp_dirs.append(path)
        return path

    def _config(self, data_dir: Path) -> Config:
        config = Config(nodename=self.nodename, bind=LOOPBACK, amqp_port=self.requested_port,
                        dist_port=0, mgmt_port=0, data_dir=data_dir,
                        default_user=self.user, default_pass=self.password,
                        log_level=self.log_level, log_console=False,
                        pid_file=data_dir / "warren.pid")
        for key, value in self.settings.items():
            setattr(config, key, value)
        return config

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else "stopped"
        return f"<Broker {self.mode} {where} data_dir={self.data_dir}>"


def _check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Config fields to override (heartbeat, frame_max, max_message_size, ...)."""
    defaults = Config()
    known = {f.name for f in dataclasses.fields(Config)}
    for key, value in settings.items():
        if key in _RESERVED:
            raise ValueError(f"setting {key!r} is chosen by Broker itself (see its "
                             "arguments: port, data_dir, user, password, log_level)")
        if key not in known:
            raise ValueError(f"unknown setting {key!r}; settings are the fields of "
                             f"warrenmq.config.Config: {', '.join(sorted(known - _RESERVED))}")
        default = getattr(defaults, key)
        expected: tuple[type, ...] = (int, float) if isinstance(default, float) else (
            (type(default),) if default is not None else (object,))
        if isinstance(value, bool) and not isinstance(default, bool) or not isinstance(
                value, expected):
            raise ValueError(f"setting {key!r} must be of type {type(default).__name__}, "
                             f"not {type(value).__name__}")
    return dict(settings)


@atexit.register
def _stop_forgotten_brokers() -> None:
    # A broker the caller never stopped would leave a child process and temporary files.
    with _live_lock:
        brokers = list(_live)
    for broker in brokers:
        try:
            broker.stop(timeout_s=5.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def _stable_nodename(data_dir: Path, fresh: str) -> str:
    """A data directory belongs to a node name (queues live on a named node, as RabbitMQ's
    data does): a broker restarted on a given directory takes the name it first had."""
    path = data_dir / "embedded.nodename"
    if path.exists():
        return path.read_text().strip() or fresh
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(fresh + "\n")
    return fresh
