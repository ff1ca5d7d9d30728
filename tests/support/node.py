"""Start and stop real `warren-server` processes for black-box tests.

A node is started on ephemeral loopback ports (port 0) and writes the ports it
bound to a JSON file (`--ports-file`); the test waits for that file with a
deadline instead of sleeping.
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

    def ctl(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        """Run warrenctl against this node (its cookie, its cluster port)."""
        env = {**os.environ, "WARREN_COOKIE_FILE": str(self.cookie_file)}
        return subprocess.run(
            [sys.executable, "-m", "warrenmq.cli.warrenctl", "-n",
             f"{self.name}:{self.ports['dist']}", *args],
            env=env, capture_output=True, text=True, timeout=timeout_s)

    def url(self, vhost: str = "/", user: str | None = None, password: str | None = None) -> str:
        return (
            f"amqp://{user or self.user}:{password or self.password}@{self.host}:{self.port}/"
            f"{quote(vhost, safe='')}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout_s)


def start_node(tmp: Path, name: str = "warren", extra_args: list[str] | None = None,
               env: dict | None = None, timeout_s: float = 20.0) -> Node:
    """Start `warren-server` with every port ephemeral and wait until it serves."""
    data_dir = tmp / f"{name}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    ports_file = tmp / f"{name}-ports.json"
    if ports_file.exists():
        ports_file.unlink()
    log_path = tmp / f"{name}.log"
    args = [
        sys.executable, "-m", "warrenmq.cli.server",
        "--nodename", f"{name}@localhost",
        "--node-port", "0", "--dist-port", "0", "--mgmt-port", "0",
        "--bind", "127.0.0.1",
        "--data-dir", str(data_dir),
        "--ports-file", str(ports_file),
        *(extra_args or []),
    ]
    # every node gets a cookie of its own unless the test says otherwise: tests never read or
    # create the cookie in the home directory
    cookie_env = {"WARREN_COOKIE_FILE": str(tmp / f"{name}.cookie")}
    full_env = {**cookie_env, **os.environ, **(env or {})}
    log = open(log_path, "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    log.close()
    node = Node("127.0.0.1", 0, proc, data_dir, log_path)

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"warren-server exited with {proc.returncode}:\n{node.log()}")
        if ports_file.exists():
            try:
                return json.loads(ports_file.read_text())
            except ValueError:
                return None
        return None

    try:
        node.ports = wait_for(ready, timeout_s, what="warren-server to listen")
    except BaseException:
        node.stop(signal.SIGKILL)
        raise
    node.port = node.ports["amqp"]
    node.cookie_file = Path(full_env["WARREN_COOKIE_FILE"])
    node.name = f"{name}@localhost"
    return node
