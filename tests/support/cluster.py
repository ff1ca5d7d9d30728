"""Clusters of real `warren-server` processes on one machine, for black-box cluster tests.

Each node is named with the address its peers reach it on, `wN@127.0.0.1:PORT`, so its
cluster (dist) port is chosen before it starts: the port is part of its name, and a name
with a port makes the server listen there. AMQP ports are chosen up front as well, so a
node keeps its URL across `stop_app`/`start_app` and `restart`. Every node of one cluster
reads the same cookie file, created before any node starts.

Two ways to form a cluster, as with RabbitMQ:
  - "join": start the n nodes, then on nodes 2..n run `warrenctl stop_app`,
    `join_cluster <node 1>`, `start_app`;
  - "classic": start all n at once, each with `cluster_formation.classic_config.nodes.N`
    naming every node in its config file.
Either way `start_cluster` returns once `warrenctl cluster_status --formatter json` on every
node lists all of them as running (keys as rabbitmqctl's: running_nodes, disk_nodes,
partitions, alarms, listeners, versions, cluster_name). A port taken by someone else between
choosing and binding it fails the start; the whole cluster is then started again on fresh
ports, a bounded number of times.

`start_nodes` starts the nodes without forming anything (what a test of the harness or of
the joining itself starts from). `running_cluster` is the context manager tests use: it stops every node it started, even
when forming the cluster fails half-way; `cluster_factory` is the same as a fixture.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pika
import pika.exceptions
import pytest

from tests.support.node import Node, launch, prepare_node, spawn, wait_ready
from warrenmq.cluster import cookie
from warrenmq.cluster.names import NodeNameError, parse

Formation = Literal["join", "classic"]
EX_USAGE = 64  # warrenctl: unknown command or bad arguments; waiting will not help
START_ATTEMPTS = 3
POLL_INTERVAL_S = 0.1


class ClusterError(RuntimeError):
    """The cluster could not be started or formed; the message says which step failed."""


@contextmanager
def connect(node: Node) -> Iterator[pika.BlockingConnection]:
    """A pika connection to `node`, closed on the way out unless its node died meanwhile."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    try:
        yield conn
    finally:
        if conn.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):  # its node may be dead
                conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def identity(nodename: str) -> str:
    """NAME@HOST without the port: how two spellings of one node's name compare."""
    try:
        return parse(nodename).identity
    except NodeNameError:
        return nodename


def node_names(n: int, prefix: str = "w") -> list[tuple[str, int]]:
    """(name, cluster port) for n nodes: `w1@127.0.0.1:PORT` ... on free loopback ports."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return [(f"{prefix}{i}@127.0.0.1:{port}", port) for i, port in enumerate(ports, 1)]


def classic_config(names: Sequence[str]) -> str:
    """The config file lines that make a node form a cluster with `names` at boot."""
    lines = ["cluster_formation.peer_discovery_backend = classic_config"]
    lines += [f"cluster_formation.classic_config.nodes.{i} = {name}"
              for i, name in enumerate(names, 1)]
    return "\n".join(lines) + "\n"


def _prepare(tmp: Path, n: int, formation: Formation, cookie_file: Path,
             extra_args: list[str] | None, prefix: str) -> list[Node]:
    names = [name for name, _ in node_names(n, prefix)]
    nodes = []
    for i, nodename in enumerate(names, 1):
        args = list(extra_args or [])
        if formation == "classic" and n > 1:
            conf = tmp / f"{prefix}{i}.conf"
            conf.write_text(classic_config(names))
            args += ["--config-file", str(conf)]
        nodes.append(prepare_node(tmp, f"{prefix}{i}", args,
                                  {"WARREN_COOKIE_FILE": str(cookie_file)},
                                  nodename=nodename, amqp_port=free_port()))
    return nodes


def _port_taken(node: Node) -> bool:
    text = node.log()
    return "cannot listen" in text or "address already in use" in text.lower()


def ctl_ok(node: Node, *args: str, timeout_s: float = 60.0) -> str:
    """warrenctl's standard output; ClusterError (with its stderr) unless it exited 0."""
    r = node.ctl(*args, timeout_s=timeout_s)
    if r.returncode != 0:
        raise ClusterError(f"warrenctl -n {node.address} {' '.join(args)} exited "
                           f"{r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


def _refresh_port(node: Node) -> None:
    """start_app rewrites the ports file; the AMQP port is fixed, but trust what it says."""
    ports = node.read_ports()
    if ports:
        node.ports, node.port = ports, ports["amqp"]


def join(node: Node, seed: Node, timeout_s: float = 60.0) -> None:
    """`stop_app`, `join_cluster <seed>`, `start_app` on `node`, as an operator would."""
    ctl_ok(node, "stop_app", timeout_s=timeout_s)
    ctl_ok(node, "join_cluster", seed.name, timeout_s=timeout_s)
    ctl_ok(node, "start_app", timeout_s=timeout_s)
    _refresh_port(node)


def listing(node: Node, *args: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """A warrenctl list_* command with `--formatter json`: one dict per row."""
    return json.loads(ctl_ok(node, *args, "--formatter", "json", timeout_s=timeout_s))


def cluster_status(node: Node, timeout_s: float = 30.0) -> dict[str, Any]:
    """`warrenctl cluster_status --formatter json` of one node, parsed."""
    return json.loads(ctl_ok(node, "cluster_status", "--formatter", "json",
                              timeout_s=timeout_s))


def wait_cluster(nodes: Sequence[Node], expect_running: Sequence[str] | None = None,
                 timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """Poll `cluster_status` on every node in `nodes` until each lists exactly
    `expect_running` (default: all of `nodes`) as running_nodes, compared by NAME@HOST.
    Returns each node's last status by node name; TimeoutError says what each last said."""
    expected = {identity(name) for name in (expect_running or [n.name for n in nodes])}
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while True:
        for node in nodes:
            if last.get(node.name, {}).get("_ok"):
                continue
            try:
                r = node.ctl("cluster_status", "--formatter", "json",
                             timeout_s=max(5.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                last[node.name] = {"_error": "warrenctl cluster_status timed out"}
                continue
            if r.returncode == EX_USAGE:
                raise ClusterError(f"warrenctl cluster_status on {node.address}: "
                                   f"{r.stderr.strip()}")
            if r.returncode != 0:
                last[node.name] = {"_error": f"exit {r.returncode}: {r.stderr.strip()}"}
                continue
            try:
                status = json.loads(r.stdout)
            except ValueError:
                last[node.name] = {"_error": f"not JSON: {r.stdout[:200]!r}"}
                continue
            running = {identity(name) for name in status.get("running_nodes", [])}
            last[node.name] = {**status, "_ok": running == expected}
        if all(last.get(node.name, {}).get("_ok") for node in nodes):
            return {name: {k: v for k, v in s.items() if k != "_ok"} for name, s in last.items()}
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout_s}s waiting for running_nodes = {sorted(expected)}; "
                f"last cluster_status per node: {json.dumps(last, default=str)}")
        time.sleep(POLL_INTERVAL_S)


def start_nodes(tmp: Path, n: int = 3, formation: Formation = "join",
                extra_args: list[str] | None = None, timeout_s: float = 60.0,
                prefix: str = "w", cookie_file: Path | None = None) -> list[Node]:
    """Start n named nodes sharing one cookie, all at once, and wait until each serves; do
    not join them (with "classic" their config files name each other, so they may form a
    cluster by themselves). On failure every node started is stopped before the error
    propagates; a port taken between choosing and binding it means a fresh start.

    Nodes are named `{prefix}1`, `{prefix}2`...; the cookie is `cookie_file` (created if
    missing), by default one of their own in `tmp`: two groups of nodes given one file can
    talk to each other, as two clusters of one operator would."""
    if n < 1:
        raise ValueError("a cluster has at least one node")
    if formation not in ("join", "classic"):
        raise ValueError(f"unknown formation {formation!r}: 'join' or 'classic'")
    tmp.mkdir(parents=True, exist_ok=True)
    cookie_file = cookie_file or tmp / "cluster.cookie"
    cookie.ensure(cookie_file)
    for attempt in range(1, START_ATTEMPTS + 1):
        # a retry starts from virgin nodes, in a directory of its own, on fresh ports
        where = tmp if attempt == 1 else tmp / f"retry{attempt}"
        where.mkdir(exist_ok=True)
        nodes = _prepare(where, n, formation, cookie_file, extra_args, prefix)
        try:
            # all at once: with classic formation a node may wait for its peers before it
            # serves, so none can be waited on alone
            for node in nodes:
                spawn(node)
            deadline = time.monotonic() + timeout_s
            for node in nodes:
                wait_ready(node, max(0.0, deadline - time.monotonic()))
            return nodes
        except RuntimeError:
            taken = any(_port_taken(node) for node in nodes)
            stop_cluster(nodes)
            if not taken or attempt == START_ATTEMPTS:
                raise
        except BaseException:
            stop_cluster(nodes)
            raise
    raise AssertionError("unreachable")


def start_cluster(tmp: Path, n: int = 3, formation: Formation = "join",
                  extra_args: list[str] | None = None, timeout_s: float = 60.0,
                  prefix: str = "w", cookie_file: Path | None = None) -> list[Node]:
    """Start n nodes (`start_nodes`) and form a cluster of them (see the module docstring);
    on any failure every node started is stopped before the error propagates. A cluster of
    one is a named node: nothing to join or wait for."""
    nodes = start_nodes(tmp, n, formation, extra_args, timeout_s, prefix, cookie_file)
    try:
        if n > 1:
            if formation == "join":
                for node in nodes[1:]:
                    join(node, nodes[0], timeout_s)
            wait_cluster(nodes, timeout_s=timeout_s)
    except BaseException:
        stop_cluster(nodes)
        raise
    return nodes


def revive(nodes: Sequence[Node], timeout_s: float = 30.0) -> list[Node]:
    """Start again every node of a shared cluster that a test left dead, and wait until all
    of them run and see each other (a module-scoped cluster handed to the next test)."""
    for node in nodes:
        if node.proc is None or node.proc.poll() is not None:
            launch(node)
    wait_cluster(nodes, timeout_s=timeout_s)
    return list(nodes)


def restart(node: Node, timeout_s: float = 30.0) -> Node:
    """SIGTERM the node, then start it again on the same data, name and ports."""
    node.stop()
    return launch(node, timeout_s)


def stop_cluster(nodes: Sequence[Node], timeout_s: float = 15.0) -> None:
    """SIGTERM every node still running (SIGKILL after the deadline); only our own pids."""
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        node.stop(timeout_s=timeout_s)


@contextmanager
def running_cluster(tmp: Path, n: int = 3, formation: Formation = "join",
                    **kwargs: Any) -> Iterator[list[Node]]:
    """A formed cluster for the `with` block; every node is stopped when it ends."""
    nodes = start_cluster(tmp, n, formation, **kwargs)
    try:
        yield nodes
    finally:
        stop_cluster(nodes)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., list[Node]]]:
    """start(n=3, formation="join", ...) -> nodes; every cluster is stopped at teardown."""
    started: list[Node] = []
    count = 0

    def start(n: int = 3, formation: Formation = "join", **kwargs: Any) -> list[Node]:
        nonlocal count
        count += 1
        nodes = start_cluster(tmp_path / f"cluster{count}", n, formation, **kwargs)
        started.extend(nodes)
        return nodes

    yield start
    stop_cluster(started)
