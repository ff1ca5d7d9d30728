"""Start and stop a private RabbitMQ node for differential tests, and (an option) with the
management and Prometheus plugins for recording what their HTTP APIs answer.

The node gets its own HOME (so its own Erlang cookie), node name, AMQP and
distribution ports, data and log directories, and its own epmd port, so it never
touches another RabbitMQ or epmd on the machine. Every process it spawns carries
a marker in its environment; stopping the node ends exactly those processes
(beam, epmd, port programs), by pid.

`start_rabbitmq_cluster` starts n such nodes that share one HOME (one cookie) and one
epmd we start ourselves, and clusters them with `rabbitmqctl join_cluster`: the reference
the WarrenMQ cluster tests and bench/cluster.py compare with.

RABBITMQ_SERVER overrides the path of the rabbitmq-server script (rabbitmqctl is taken
from the same directory); the `rabbitmq` fixture uses WARREN_TEST_RABBITMQ_URL instead of
a private node when it is set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.support.node import Node, wait_for

RABBITMQ_SERVER = Path(os.environ.get("RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server"))
# the script next to rabbitmq-server, not Debian's /usr/sbin wrapper (which switches user)
RABBITMQCTL = RABBITMQ_SERVER.with_name("rabbitmqctl")
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
    marker: str = ""  # in the environment of the node's processes (and epmd when its own)
    ctl_marker: str = ""  # in the environment of rabbitmqctl runs, when not `marker`
    nodename: str = ""
    mgmt_port: int = 0  # 0: the management plugin is not enabled
    prometheus_port: int = 0
    dist_port: int = 0
    epmd_port: int = 0
    home: Path | None = None  # its HOME: where its Erlang cookie is

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


def _rabbit_env(home: Path, epmd_port: int, marker: str) -> dict[str, str]:
    """What every process of one node (or one cluster) shares: HOME (so the Erlang cookie),
    its private epmd, and the marker that lets us find and stop exactly its processes."""
    return {
        **os.environ,
        "HOME": str(home),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_EPMD_PORT": str(epmd_port),
        MARKER_VAR: marker,
    }


def _spawn_rabbit(base: Path, name: str, home: Path, epmd_port: int, marker: str,
                  management: bool) -> RabbitNode:
    """Start one rabbitmq-server under `base` (config, mnesia, logs) without waiting."""
    port, dist_port = free_port(), free_port()
    for d in (home, base / "mnesia", base / "log"):
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
    (base / "rabbitmq.conf").write_text(conf)
    (base / "enabled_plugins").write_text(f"[{plugins}].\n")
    env = {
        **_rabbit_env(home, epmd_port, marker),
        "RABBITMQ_NODENAME": f"{name}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
    }
    log_path = base / "server.out"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(RABBITMQ_SERVER)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    node = RabbitNode("127.0.0.1", port, proc, base, log_path)
    node.marker = marker
    node.nodename = f"{name}@localhost"
    node.mgmt_port, node.prometheus_port = mgmt_port, prom_port
    node.dist_port, node.epmd_port, node.home = dist_port, epmd_port, home
    return node


def _wait_serving(node: RabbitNode, timeout_s: float) -> None:
    """Wait until the node serves AMQP (and HTTP, with management); SIGKILL it on failure."""
    management = node.mgmt_port != 0
    proc = node.proc
    assert proc is not None

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {proc.returncode}:\n{node.log()}")
        return amqp_handshake_ok(node.host, node.port) and (
            not management or (http_up(node.mgmt_port) and http_up(node.prometheus_port)))

    what = "RabbitMQ and its management plugin" if management else "RabbitMQ"
    try:
        wait_for(ready, timeout_s, interval_s=0.25, what=f"{what} to accept connections")
    except BaseException:
        node.stop(signal.SIGKILL, timeout_s=10)
        raise


def start_rabbitmq(tmp: Path, timeout_s: float = 120.0, management: bool = False) -> RabbitNode:
    """Start a private RabbitMQ node under `tmp` and wait until it serves AMQP.

    With `management`, the management and Prometheus plugins are enabled too, each on a
    loopback port of its own (`mgmt_port`, `prometheus_port`), and the node is ready only
    once both answer HTTP.
    """
    name = f"wt{uuid.uuid4().hex[:8]}"
    # the node's own epmd is started by the node itself and carries its marker
    node = _spawn_rabbit(tmp, name, tmp / "home", free_port(), name, management)
    _wait_serving(node, timeout_s)
    return node


class RabbitCluster(list[RabbitNode]):
    """The nodes of one private RabbitMQ cluster (node 1 first) and the epmd they share.

    `stop()` stops every node, then epmd; it is also what leaving a `with` block does."""

    def __init__(self, nodes: list[RabbitNode], epmd: subprocess.Popen, marker: str) -> None:
        super().__init__(nodes)
        self.epmd = epmd
        self.marker = marker

    def ctl(self, node: RabbitNode, *args: str,
            timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Run `rabbitmqctl -n NODE ...` with the cluster's cookie and epmd."""
        return rabbitmqctl(node, *args, timeout_s=timeout_s)

    def stop(self) -> None:
        # in parallel: each node takes seconds to stop, and they are independent
        with ThreadPoolExecutor(max_workers=max(1, len(self))) as pool:
            list(pool.map(lambda node: node.stop(), self))
        if self.epmd.poll() is None:
            self.epmd.terminate()
            try:
                self.epmd.wait(10)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
                self.epmd.wait(10)
        for pid in _marked_pids(self.marker):  # a CLI node left behind by a killed rabbitmqctl
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> RabbitCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rabbitmqctl(node: RabbitNode, *args: str,
                timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """`rabbitmqctl -n NODE ...` with the node's HOME (cookie) and epmd; never the system's."""
    env = {**_rabbit_env(node.home, node.epmd_port, node.ctl_marker or node.marker)}
    return subprocess.run([str(RABBITMQCTL), "-n", node.nodename, *args], env=env,
                          capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)


def _ctl_ok(node: RabbitNode, *args: str) -> str:
    r = rabbitmqctl(node, *args)
    if r.returncode != 0:
        raise RuntimeError(f"rabbitmqctl -n {node.nodename} {' '.join(args)} exited "
                           f"{r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


def rabbitmq_cluster_status(node: RabbitNode) -> dict:
    """`rabbitmqctl cluster_status --formatter json` of one node, parsed."""
    return json.loads(_ctl_ok(node, "cluster_status", "--formatter", "json"))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def start_rabbitmq_cluster(tmp: Path, n: int = 3, management: bool = False,
                           timeout_s: float = 180.0) -> RabbitCluster:
    """Start n private RabbitMQ nodes under `tmp` and cluster them the operator's way.

    The nodes (`wtXXXXXXXXn1@localhost` ... ) share one HOME, so one Erlang cookie, and one
    epmd on a private port that we start first (so stopping one node never takes the
    others' epmd with it); each has its own AMQP and distribution ports and mnesia and log
    directories under `tmp/nodeN`. Nodes 2..n run `rabbitmqctl stop_app`, `join_cluster
    <node 1>`, `start_app`; we return once `cluster_status` on every node lists them all
    as running. On failure everything started is stopped before the error propagates.
    """
    if n < 1:
        raise ValueError("a cluster has at least one node")
    prefix = f"wt{uuid.uuid4().hex[:8]}"
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    cookie.write_text(uuid.uuid4().hex.upper())
    cookie.chmod(0o400)  # Erlang refuses a cookie others can read
    epmd_port = free_port()
    epmd = subprocess.Popen([_epmd_path(), "-port", str(epmd_port), "-address", "127.0.0.1"],
                            env=_rabbit_env(home, epmd_port, f"{prefix}-epmd"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    cluster = RabbitCluster([], epmd, f"{prefix}-cli")
    try:
        wait_for(lambda: epmd.poll() is None and _port_open(epmd_port), 10.0,
                 what="epmd to listen")
        for i in range(1, n + 1):
            node = _spawn_rabbit(tmp / f"node{i}", f"{prefix}n{i}", home, epmd_port,
                                 f"{prefix}-{i}", management)
            node.ctl_marker = cluster.marker
            cluster.append(node)
        deadline = time.monotonic() + timeout_s
        for node in cluster:
            _wait_serving(node, max(1.0, deadline - time.monotonic()))
        seed = cluster[0]
        for node in cluster[1:]:
            _ctl_ok(node, "stop_app")
            _ctl_ok(node, "join_cluster", seed.nodename)
            _ctl_ok(node, "start_app")
        names = sorted(node.nodename for node in cluster)

        def formed(node: RabbitNode) -> bool:
            return sorted(rabbitmq_cluster_status(node).get("running_nodes", [])) == names

        for node in cluster:
            wait_for(lambda node=node: formed(node), max(1.0, deadline - time.monotonic()),
                     interval_s=0.5, what=f"{node.nodename} to list {names} as running")
        for node in cluster:  # start_app restarted the listeners: serving again?
            _wait_serving(node, max(1.0, deadline - time.monotonic()))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _epmd_path() -> str:
    found = shutil.which("epmd")
    if found is None:
        raise RuntimeError("epmd not found (it comes with Erlang: Debian's erlang-base)")
    return found


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
