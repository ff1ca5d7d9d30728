"""A private RabbitMQ node with the management and Prometheus plugins, for recording the
fixtures the API tests compare with (see record_fixtures.py).

Same isolation as tests/support/rabbitmq.py (own HOME, cookie, ports, epmd port, marker in
the environment so stopping it ends exactly its processes), plus the two plugins on ports of
their own on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path

from tests.support.node import wait_for
from tests.support.rabbitmq import (
    MARKER_VAR,
    RABBITMQ_SERVER,
    RabbitNode,
    amqp_handshake_ok,
    free_port,
)


class RabbitMgmtNode(RabbitNode):
    mgmt_port: int = 0
    prometheus_port: int = 0
    nodename: str = ""


def start_rabbitmq_mgmt(tmp: Path, timeout_s: float = 120.0) -> RabbitMgmtNode:
    name = f"wm{uuid.uuid4().hex[:8]}"
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    mgmt_port, prom_port = free_port(), free_port()
    home = tmp / "home"
    for d in (home, tmp / "mnesia", tmp / "log"):
        d.mkdir(parents=True, exist_ok=True)
    (tmp / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\n"
        f"management.tcp.port = {mgmt_port}\nmanagement.tcp.ip = 127.0.0.1\n"
        f"prometheus.tcp.port = {prom_port}\nprometheus.tcp.ip = 127.0.0.1\n"
        # stats every second instead of five, so recording waits less
        "collect_statistics_interval = 1000\n")
    (tmp / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_prometheus].\n")
    env = {
        **os.environ,
        "HOME": str(home),
        "RABBITMQ_NODENAME": f"{name}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(tmp / "mnesia"),
        "RABBITMQ_LOG_BASE": str(tmp / "log"),
        "RABBITMQ_CONFIG_FILE": str(tmp / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp / "enabled_plugins"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_EPMD_PORT": str(epmd_port),
        MARKER_VAR: name,
    }
    log_path = tmp / "server.out"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(RABBITMQ_SERVER)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    node = RabbitMgmtNode("127.0.0.1", port, proc, tmp, log_path)
    node.marker = name
    node.mgmt_port = mgmt_port
    node.prometheus_port = prom_port
    node.nodename = f"{name}@localhost"

    def http_up(p: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {proc.returncode}:\n{node.log()}")
        return amqp_handshake_ok(node.host, port) and http_up(mgmt_port) and http_up(prom_port)

    try:
        wait_for(ready, timeout_s, interval_s=0.25, what="RabbitMQ and its management plugin")
    except BaseException:
        node.stop(signal.SIGKILL, timeout_s=10)
        raise
    return node
