"""Start and stop the brokers a benchmark run compares: a private RabbitMQ node and a
WarrenMQ node, each on free loopback ports in its own temporary directory and its own
process group, stopped by pid at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def amqp_answers(port: int) -> bool:
    """True once the port answers an AMQP protocol header with Connection.Start."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            head = sock.recv(7)
            return len(head) == 7 and head[0] == 1
    except OSError:
        return False


def _group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and _state(int(entry)) != "Z":
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat[stat.rindex(")") + 2:].split()[0]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class Broker:
    name: str
    uri: str
    pid: int  # the process whose RSS and CPU are the broker's (beam.smp for RabbitMQ)
    proc: subprocess.Popen[bytes]
    workdir: Path
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.workdir.rglob("*.log"))
        text = "".join(p.read_text(errors="replace") for p in logs)
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM the broker's processes by pid; SIGKILL whatever is left at the deadline."""
        pgid = self.proc.pid
        for pid in {self.pid, self.proc.pid}:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (self.proc.poll() is None or _group_pids(pgid)):
            time.sleep(0.2)
        for pid in _group_pids(pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10.0)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_rabbitmq(server: str = RABBITMQ_SERVER, timeout_s: float = 120.0) -> Broker:
    workdir = Path(tempfile.mkdtemp(prefix="warren-bench-rabbitmq-"))
    port, dist_port = free_port(), free_port()
    conf = workdir / "rabbitmq.conf"
    conf.write_text(f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n")
    plugins = workdir / "enabled_plugins"
    plugins.write_text("[].\n")
    env = {
        "HOME": str(workdir),
        "RABBITMQ_NODENAME": f"bench{os.getpid()}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_CONFIG_FILE": str(conf),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    log = open(workdir / "stdout.log", "ab")
    proc = subprocess.Popen([server], env={**os.environ, **env}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    broker = Broker("RabbitMQ", f"amqp://guest:guest@127.0.0.1:{port}/", proc.pid, proc,
                    workdir, [server], env)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited {proc.returncode}:\n"
                                   f"{broker.log_tail()}")
            return amqp_answers(port)

        wait_for(ready, timeout_s, "RabbitMQ to accept AMQP connections")
        beams = [p for p in _group_pids(proc.pid) if _comm(p) == "beam.smp"]
        if beams:
            broker.pid = beams[0]
    except BaseException:
        broker.stop(10.0)
        raise
    return broker


def start_warren(timeout_s: float = 60.0) -> Broker:
    workdir = Path(tempfile.mkdtemp(prefix="warren-bench-warren-"))
    ports_file = workdir / "ports.json"
    command = [
        sys.executable, "-m", "warrenmq.cli.server",
        "--node-port", "0", "--dist-port", "0", "--mgmt-port", "0",
        "--bind", "127.0.0.1", "--data-dir", str(workdir / "data"),
        "--ports-file", str(ports_file), "--nodename", "bench@localhost",
    ]
    log = open(workdir / "warren.log", "ab")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    broker = Broker("WarrenMQ", "", proc.pid, proc, workdir, command)
    try:
        def ready() -> dict[str, int] | None:
            if proc.poll() is not None:
                raise RuntimeError(f"warren-server exited {proc.returncode}:\n"
                                   f"{broker.log_tail()}")
            try:
                return json.loads(ports_file.read_text()) if ports_file.exists() else None
            except ValueError:
                return None

        ports = wait_for(ready, timeout_s, "warren-server to write its ports file")
        assert isinstance(ports, dict)
        broker.uri = f"amqp://guest:guest@127.0.0.1:{ports['amqp']}/"
    except BaseException:
        broker.stop(10.0)
        raise
    return broker


def replace_between(path: Path, start: str, end: str, text: str) -> None:
    """Replace what stands between two marker lines of a file (the README's result tables)."""
    if not path.exists():
        return
    content = path.read_text()
    if start in content and end in content:
        before, rest = content.split(start, 1)
        _, after = rest.split(end, 1)
        path.write_text(f"{before}{start}\n{text}\n{end}{after}")
