"""A private RabbitMQ node with the management plugin, for running the example suite with
--warren-external: warren_vhost creates its vhosts through the management HTTP API, which
the differential tests' node (tests/support/rabbitmq.py) does not enable. Same isolation as
that node: own HOME, node name, ports, epmd and a marker on every process it spawns."""

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


def management_ok(url: str) -> bool:
    req = urllib.request.Request(f"{url}api/overview",
                                 headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})  # guest
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_rabbitmq_with_management(tmp: Path, timeout_s: float = 120.0
                                   ) -> tuple[RabbitNode, str]:
    """Start the node; return it and its management API's base URL."""
    name = f"wm{uuid.uuid4().hex[:8]}"
    port, dist_port, epmd_port, mgmt_port = free_port(), free_port(), free_port(), free_port()
    home = tmp / "home"
    for d in (home, tmp / "mnesia", tmp / "log"):
        d.mkdir(parents=True, exist_ok=True)
    (tmp / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"
        f"management.tcp.port = {mgmt_port}\nmanagement.tcp.ip = 127.0.0.1\n")
    (tmp / "enabled_plugins").write_text("[rabbitmq_management].\n")
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
    node = RabbitNode("127.0.0.1", port, proc, tmp, log_path)
    node.marker = name
    mgmt_url = f"http://127.0.0.1:{mgmt_port}/"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {proc.returncode}:\n{node.log()}")
        return amqp_handshake_ok(node.host, port) and management_ok(mgmt_url)

    try:
        wait_for(ready, timeout_s, interval_s=0.25,
                 what="RabbitMQ to serve AMQP and the management API")
    except BaseException:
        node.stop(signal.SIGKILL, timeout_s=10)
        raise
    return node, mgmt_url
