"""`warren-server`: run a node in the foreground (logging to stderr)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from .. import __version__
from ..config import ConfigError, load
from ..server.app import App


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="warren-server", description="Run a WarrenMQ node.")
    p.add_argument("--nodename", help="node name, NAME@HOST (env WARREN_NODENAME)")
    p.add_argument("--node-port", type=int, dest="amqp_port",
                   help="AMQP port, 0 for any free port (env WARREN_NODE_PORT; default 5672)")
    p.add_argument("--dist-port", type=int, help="cluster port (env WARREN_DIST_PORT; 25672)")
    p.add_argument("--mgmt-port", type=int, help="management port (env WARREN_MGMT_PORT; 15672)")
    p.add_argument("--bind", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--data-dir", help="data directory (env WARREN_DATA_DIR)")
    p.add_argument("--config-file", help="config file (env WARREN_CONFIG_FILE)")
    p.add_argument("--ports-file", help="write the bound ports here as JSON once serving")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument("--version", action="version", version=f"WarrenMQ {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load(vars(args))
    except ConfigError as e:
        print(f"warren-server: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s", stream=sys.stderr)
    try:
        import uvloop  # type: ignore[import-not-found]
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    # Queued messages are acyclic: a young generation this large keeps the cyclic collector
    # from rescanning millions of queue entries (each full pass is a latency spike).
    gc.set_threshold(100_000, 50, 1000)
    app = App(config)
    try:
        runner(app.run_forever())
    except OSError as e:
        print(f"warren-server: cannot listen: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
