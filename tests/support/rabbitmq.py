"""Start and stop a private RabbitMQ node for differential tests, and (an option) with the
management and Prometheus plugins for recording what their HTTP APIs answer.

The node gets its own HOME (so its own Erlang cookie), node name, AMQP and
distribution ports, data and log directories, and its own epmd port, so it never
touches another RabbitMQ or epmd on the machine. Every process it spawns carries
a marker in its environment; stopping the node ends exactly those processes
(beam, epmd, port programs), by pid.

RABBITMQ_SERVER overrides the path of the rabbitmq-server script; the `rabbitmq`
fixture uses WARREN_TEST_RABBITMQ_URL instead of a private node when it is set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.support.node import Node, wait_for

RABBITMQ_SERVER = Path(os.environ.get("RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server"))
MARKER_VAR = "WARREN_TEST_RABBITMQ_NODE"


def rabbitmq_installed() -> bool:
    return RABBITMQ_SERVER.exists() and shutil.which("erl") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def amqp_handshake_ok(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True once the node answers the protocol header with connection.start."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            data = s.recv(7)
            return len(data) == 7 and data[0] == 1  # a method frame: connection.start
    except OSError:
        return False


def _marked_pids(marker: str) -> list[int]:
    """Pids of live processes whose environment carries our marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            pids.append(int(entry.name))
    return pids


class RabbitNode(Node):
    marker: str = ""
    nodename: str = ""
    mgmt_port: int = 0  # 0: the management plugin is not enabled
    prometheus_port: int = 0

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the process group, SIGKILL after the deadline, then sweep our strays."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)
        # epmd daemonises into its own session; it and any port program left behind
        # are ours only if they carry our marker.
        for pid in _marked_pids(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.proc.returncode if self.proc else None


def http_up(port: int) -> bool:
    """True once something answers HTTP on the loopback port, whatever the status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_rabbitmq(tmp: Path, timeout_s: float = 120.0, management: bool = False) -> RabbitNode:
    """Start a private RabbitMQ node under `tmp` and wait until it serves AMQP.

    With `management`, the management and Prometheus plugins are enabled too, each on a
    loopback port of its own (`mgmt_port`, `prometheus_port`), and the node is ready only
    once both answer HTTP.
    """
    name = f"wt{uuid.uuid4().hex[:8]}"
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    home = tmp / "home"
    for d in (home, tmp / "mnesia", tmp / "log"):
        d.mkdir(parents=True, exist_ok=True)
    conf = f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"
    plugins = ""
    mgmt_port = prom_port = 0
    if management:
        mgmt_port, prom_port = free_port(), free_port()
        conf += (
            f"management.tcp.port = {mgmt_port}\nmanagement.tcp.ip = 127.0.0.1\n"
            f"prometheus.tcp.port = {prom_port}\nprometheus.tcp.ip = 127.0.0.1\n"
            # stats every second instead of five, so tests reading them wait less
            "collect_statistics_interval = 1000\n")
        plugins = "rabbitmq_management,rabbitmq_prometheus"
    (tmp / "rabbitmq.conf").write_text(conf)
    (tmp / "enabled_plugins").write_text(f"[{plugins}].\n")
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
    node.nodename = f"{name}@localhost"
    node.mgmt_port, node.prometheus_port = mgmt_port, prom_port

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {proc.returncode}:\n{node.log()}")
        return amqp_handshake_ok(node.host, port) and (
            not management or (http_up(mgmt_port) and http_up(prom_port)))

    what = "RabbitMQ and its management plugin" if management else "RabbitMQ"
    try:
        wait_for(ready, timeout_s, interval_s=0.25, what=f"{what} to accept connections")
    except BaseException:
        node.stop(signal.SIGKILL, timeout_s=10)
        raise
    return node


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A RabbitMQ node for the session: WARREN_TEST_RABBITMQ_URL if set, else a private one."""
    external = os.environ.get("WARREN_TEST_RABBITMQ_URL")
    if external:
        u = urlparse(external)
        node = Node(u.hostname or "127.0.0.1", u.port or 5672)
        node.user, node.password = unquote(u.username or "guest"), unquote(u.password or "guest")
        yield node
        return
    if not rabbitmq_installed():
        pytest.skip(f"RabbitMQ is not installed ({RABBITMQ_SERVER} or erl missing); "
                    "install Debian's rabbitmq-server or set WARREN_TEST_RABBITMQ_URL")
    node = start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    yield node
    node.stop()
