"""The child-process runner: both sides of `Broker(mode="process")`.

The parent writes everything the child needs into a private run directory (mode 0700): the
node's Config as JSON, the cookie of its control port (so `Broker.call` can reach it like
warrenctl does, and nothing is read from or written to the user's home) and, once the child
serves, the child writes the ports it bound there (`ports.json`), which is what the parent
waits for. The child logs to `broker.log` in the same directory.

The child stops on SIGTERM/SIGINT, and also when its stdin (a pipe from the parent) reaches
EOF: a test process that dies without stopping its broker does not leave the node behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..cluster.control import ControlClient, ControlError, RemoteError
from ..cluster.names import parse
from ..config import Config

CONFIG_FILE = "config.json"
COOKIE_FILE = "cookie"
PORTS_FILE = "ports.json"
LOG_FILE = "broker.log"
LOG_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


# -- the Config across the process boundary ------------------------------------------------------
def config_to_json(config: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else (
            list(value) if isinstance(value, tuple) else value)
    return out


def config_from_json(data: dict[str, Any]) -> Config:
    config = Config()
    for f in dataclasses.fields(config):
        if f.name not in data:
            continue
        value = data[f.name]
        if value is not None and "Path" in str(f.type):
            value = Path(value)
        elif isinstance(value, list):
            value = tuple(value)
        setattr(config, f.name, value)
    return config


# -- parent side --------------------------------------------------------------------------------------
class ProcessRunner:
    def __init__(self, config: Config, cookie: str, fsync: bool, run_dir: Path,
                 temporary: list[Path]) -> None:
        self.config = config
        self.temporary = temporary  # what the child removes if the parent dies first
        self.cookie = cookie
        self.fsync = fsync
        self.run_dir = run_dir
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.log_path = run_dir / LOG_FILE
        config.ports_file = run_dir / PORTS_FILE

    def start(self, timeout_s: float) -> None:
        cookie_file = self.run_dir / COOKIE_FILE
        fd = os.open(cookie_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(self.cookie)
        (self.run_dir / CONFIG_FILE).write_text(json.dumps(
            {"config": config_to_json(self.config), "fsync": self.fsync,
             "temporary": [str(p) for p in self.temporary]}))
        # The child must import this very warrenmq, even when the caller runs from a source
        # tree that is on sys.path but not installed.
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warrenmq.embedded.child", str(self.run_dir)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.run_dir)
        ports_file = self.run_dir / PORTS_FILE
        deadline = time.monotonic() + timeout_s
        delay_s = 0.002
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the broker process exited with status "
                                   f"{self.proc.returncode}: {self.log_tail()}")
            if ports_file.exists():
                try:
                    self.ports = json.loads(ports_file.read_text())
                    return
                except ValueError:
                    pass  # the runtime replaces the file atomically; this is only defensive
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker process did not serve within {timeout_s:g}s: "
                                   f"{self.log_tail()}")
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, command: str, args: dict, timeout_s: float) -> Any:
        from .broker import BrokerError

        node = parse(f"{self.config.nodename}:{self.ports['dist']}")
        try:
            with ControlClient(node, self.cookie, timeout_s) as client:
                return client.call(command, args)
        except RemoteError as e:
            raise BrokerError(f"{command}: {e}", e.exit_status) from None
        except ControlError as e:
            raise BrokerError(f"{command}: {e}", e.exit_status) from None

    def stop(self, timeout_s: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if proc.stdin is not None:
            proc.stdin.close()


# -- child side -----------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    import asyncio

    from ..server.runtime import Runtime

    if len(argv) != 1:
        print("usage: python -m warrenmq.embedded.child RUN_DIR (started by "
              "warrenmq.embedded.Broker)", file=sys.stderr)
        return 64
    run_dir = Path(argv[0])
    spec = json.loads((run_dir / CONFIG_FILE).read_text())
    config = config_from_json(spec["config"])
    cookie = (run_dir / COOKIE_FILE).read_text().strip()
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    runtime = Runtime(config, cookie)
    runtime.app.journal_sync = bool(spec["fsync"])
    orphaned = False

    def watch_parent() -> None:
        loop = runtime.loop

        def stdin_readable() -> None:
            nonlocal orphaned
            if not os.read(0, 4096):
                loop.remove_reader(0)
                orphaned = True
                runtime.request_stop("the parent process went away")

        loop.add_reader(0, stdin_readable)

    runtime.on_ready = watch_parent
    runner: Any = asyncio.run
    try:
        import uvloop  # type: ignore[import-not-found]
        runner = uvloop.run
    except ImportError:
        pass
    try:
        runner(runtime.run_forever())
    except OSError as e:
        print(f"warrenmq embedded broker: cannot listen: {e}", file=sys.stderr)
        return 1
    if orphaned:  # nobody else will remove the temporary directories now
        for path in spec.get("temporary", []):
            shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
