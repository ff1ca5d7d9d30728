"""`warren-server`: run a node, in the foreground (the default) or detached (`-detached`).

In the foreground it logs to stderr (and to a file when one is configured); detached, it
daemonises (double fork, new session, stdio on /dev/null), logs to <log dir>/<node>.log and
the launching process exits only once the node serves, or reports why it could not start.
Before anything listens the cookie is checked (created on first start, refused if others
can read it), so a misconfigured node never serves half-secured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..cluster import cookie
from ..cluster.names import NodeNameError, parse
from ..config import Config, ConfigError, load
from ..server.runtime import Runtime

EX_CONFIG = 78
DETACH_DEADLINE_S = 60.0
LOG_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="warren-server", description="Run a WarrenMQ node.")
    p.add_argument("-detached", "--detached", action="store_true",
                   help="run in the background: daemonise, log to a file, write a pid file")
    p.add_argument("--nodename", help="node name, NAME@HOST, or NAME@HOST:PORT to listen for "
                   "peers and warrenctl on PORT (env WARREN_NODENAME)")
    p.add_argument("--node-port", type=int, dest="amqp_port",
                   help="AMQP port, 0 for any free port (env WARREN_NODE_PORT; default 5672)")
    p.add_argument("--dist-port", type=int, help="cluster port (env WARREN_DIST_PORT; the "
                   "node name's port, else 25672)")
    p.add_argument("--mgmt-port", type=int, help="management port (env WARREN_MGMT_PORT; 15672)")
    p.add_argument("--bind", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--data-dir", help="data directory (env WARREN_DATA_DIR)")
    p.add_argument("--config-file", help="config file (env WARREN_CONFIG_FILE)")
    p.add_argument("--ports-file", help="write the bound ports here as JSON once serving")
    p.add_argument("--pid-file", help="pid file (env WARREN_PID_FILE; <data dir>/warren.pid)")
    p.add_argument("--log-dir", help="log directory (env WARREN_LOG_BASE; ~/.warren/log)")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument("--version", action="version", version=f"WarrenMQ {__version__}")
    return p.parse_args(argv)


def log_file_for(config: Config, detached: bool) -> Path | None:
    if config.log_file is not None:
        return config.log_file
    if config.log_dir is not None or detached:
        log_dir = config.log_dir or Path.home() / ".warren" / "log"
        return Path(log_dir) / f"{config.nodename}.log"
    return None


def setup_logging(config: Config, log_file: Path | None, console: bool) -> None:
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    handlers: list[logging.Handler] = []
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    if not handlers:
        handlers.append(logging.NullHandler())
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)


def _run(config: Config, secret: str, log_file: Path | None,
         on_ready: Callable[[], None] | None = None) -> None:
    runner: Callable[..., Any]
    try:
        import uvloop  # type: ignore[import-not-found]
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    # Queued messages are acyclic: a young generation this large keeps the cyclic collector
    # from rescanning millions of queue entries (each full pass is a latency spike).
    gc.set_threshold(100_000, 50, 1000)
    runtime = Runtime(config, secret)
    runtime.log_files = [log_file] if log_file else []
    runtime.on_ready = on_ready
    runner(runtime.run_forever())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = vars(args)
    detached = overrides.pop("detached")
    try:
        config = load(overrides)
        parse(config.nodename)
    except ConfigError as e:
        print(f"warren-server: {e}", file=sys.stderr)
        return 2
    except NodeNameError as e:
        print(f"warren-server: {e}", file=sys.stderr)
        return 2
    try:
        secret = cookie.ensure(cookie.cookie_path())
    except (cookie.CookieError, OSError) as e:
        print(f"warren-server: refusing to start: {e}", file=sys.stderr)
        return EX_CONFIG
    log_file = log_file_for(config, detached)
    if detached:
        return _detach(config, secret, log_file)
    setup_logging(config, log_file, console=config.log_console)
    try:
        _run(config, secret, log_file)
    except OSError as e:
        print(f"warren-server: cannot listen: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _detach(config: Config, secret: str, log_file: Path | None) -> int:
    """Fork a daemon; wait until it reports it serves (or why it could not start)."""
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child:
        os.close(write_fd)
        report = _read_report(read_fd, DETACH_DEADLINE_S)
        os.close(read_fd)
        os.waitpid(child, 0)
        if report.startswith("ok"):
            return 0
        where = f"; see {log_file}" if log_file else ""
        print(f"warren-server: the node did not start: {report or 'it exited'}{where}",
              file=sys.stderr)
        return 1
    # first child: a new session, then fork again so the daemon can never regain a terminal
    os.close(read_fd)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.chdir("/")
    setup_logging(config, log_file, console=False)

    def ready() -> None:
        os.write(write_fd, f"ok {os.getpid()}\n".encode())
        os.close(write_fd)

    try:
        _run(config, secret, log_file, on_ready=ready)
    except BaseException as e:  # tell the waiting parent, then go
        logging.getLogger("warrenmq.server").exception("start-up failed")
        try:
            os.write(write_fd, f"{type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
        os._exit(1)
    os._exit(0)


def _read_report(fd: int, deadline_s: float) -> str:
    deadline = time.monotonic() + deadline_s
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"no report within {deadline_s:g}s"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


if __name__ == "__main__":
    sys.exit(main())
