"""Start and stop real `warren-server` processes for black-box tests.

A node is started on ephemeral loopback ports (port 0) and writes the ports it
bound to a JSON file (`--ports-file`); the test waits for that file with a
deadline instead of sleeping. A node may instead be given a name that carries its
cluster port (`NAME@127.0.0.1:PORT`, what cluster peers need) and a fixed AMQP
port; `Node` keeps the command line and environment it was started with, so
`launch` can start it again on the same data, name and ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Node:
    host: str
    port: int
    proc: subprocess.Popen | None = None
    data_dir: Path | None = None
    log_path: Path | None = None
    ports: dict = field(default_factory=dict)
    user: str = "guest"
    password: str = "guest"
    cookie_file: Path | None = None
    name: str = ""
    ports_file: Path | None = None
    argv: list[str] = field(default_factory=list)  # how it was started, for `launch`
    env: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        """NAME@HOST:PORT: the name with the cluster port, as warrenctl and peers need it."""
        if has_port(self.name):
            return self.name
        return f"{self.name}:{self.ports['dist']}"

    def ctl(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        """Run warrenctl against this node (its cookie, its cluster port)."""
        env = {**os.environ, "WARREN_COOKIE_FILE": str(self.cookie_file)}
        return subprocess.run(
            [sys.executable, "-m", "warrenmq.cli.warrenctl", "-n", self.address, *args],
            env=env, capture_output=True, text=True, timeout=timeout_s)

    def url(self, vhost: str = "/", user: str | None = None, password: str | None = None) -> str:
        return (
            f"amqp://{user or self.user}:{password or self.password}@{self.host}:{self.port}/"
            f"{quote(vhost, safe='')}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def read_ports(self) -> dict | None:
        """The ports the node wrote once serving (rewritten by start_app), None before."""
        if self.ports_file is None or not self.ports_file.exists():
            return None
        try:
            return json.loads(self.ports_file.read_text())
        except ValueError:  # written atomically, but an older node may be mid-write
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout_s)


def has_port(nodename: str) -> bool:
    """True when a node name carries its cluster port (NAME@HOST:PORT, NAME@[::1]:PORT)."""
    host = nodename.partition("@")[2]
    return "]:" in host if host.startswith("[") else ":" in host


def start_node(tmp: Path, name: str = "warren", extra_args: list[str] | None = None,
               env: dict | None = None, timeout_s: float = 20.0, nodename: str | None = None,
               amqp_port: int = 0) -> Node:
    """Start `warren-server` with every port ephemeral and wait until it serves.

    `name` names the node's files under `tmp`; the node is called `name@localhost` unless
    `nodename` is given. A `nodename` with a port (NAME@HOST:PORT) makes that port the
    node's cluster port; without one the cluster port is ephemeral.
    """
    node = prepare_node(tmp, name, extra_args, env, nodename, amqp_port)
    launch(node, timeout_s)
    return node


def prepare_node(tmp: Path, name: str = "warren", extra_args: list[str] | None = None,
                 env: dict | None = None, nodename: str | None = None,
                 amqp_port: int = 0) -> Node:
    """A Node with its command line, environment and files decided, not started yet."""
    data_dir = tmp / f"{name}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    nodename = nodename or f"{name}@localhost"
    # a name with a port says where the cluster port is; the server takes it from there
    dist_args = [] if has_port(nodename) else ["--dist-port", "0"]
    argv = [
        sys.executable, "-m", "warrenmq.cli.server",
        "--nodename", nodename,
        "--node-port", str(amqp_port), *dist_args, "--mgmt-port", "0",
        "--bind", "127.0.0.1",
        "--data-dir", str(data_dir),
        "--ports-file", str(tmp / f"{name}-ports.json"),
        *(extra_args or []),
    ]
    # every node gets a cookie of its own unless the test says otherwise: tests never read or
    # create the cookie in the home directory
    cookie_env = {"WARREN_COOKIE_FILE": str(tmp / f"{name}.cookie")}
    full_env = {**cookie_env, **os.environ, **(env or {})}
    return Node("127.0.0.1", amqp_port, None, data_dir, tmp / f"{name}.log",
                cookie_file=Path(full_env["WARREN_COOKIE_FILE"]), name=nodename,
                ports_file=tmp / f"{name}-ports.json", argv=argv, env=full_env)


def spawn(node: Node) -> None:
    """Start the node's process (again) from its recorded command line; do not wait."""
    assert node.ports_file is not None and node.log_path is not None
    if node.ports_file.exists():
        node.ports_file.unlink()  # its reappearance is the readiness signal
    with open(node.log_path, "ab") as log:
        node.proc = subprocess.Popen(node.argv, stdout=log, stderr=subprocess.STDOUT,
                                     env=node.env)


def wait_ready(node: Node, timeout_s: float = 20.0) -> Node:
    """Wait until the spawned node has written its ports file; SIGKILL it on failure."""
    proc = node.proc
    assert proc is not None

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"warren-server exited with {proc.returncode}:\n{node.log()}")
        return node.read_ports()

    try:
        node.ports = wait_for(ready, timeout_s, what="warren-server to listen")
    except BaseException:
        node.stop(signal.SIGKILL)
        raise
    node.port = node.ports["amqp"]
    return node


def launch(node: Node, timeout_s: float = 20.0) -> Node:
    """Start the node's process and wait until it serves."""
    spawn(node)
    return wait_ready(node, timeout_s)
