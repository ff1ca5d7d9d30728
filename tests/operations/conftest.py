"""Operator fixtures: a private node with its own cookie, and warrenctl run as a process.

Every node started here gets a cookie file of its own (WARREN_COOKIE_FILE in a temporary
directory), so the tests never read or create the cookie in the home directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.node import Node

WARRENCTL_TIMEOUT_S = 60.0


@dataclass
class Ctl:
    """Runs `warrenctl -n NAME@localhost:PORT ...` against one node."""

    nodename: str
    cookie_file: Path

    def env(self, **extra: str) -> dict:
        return {**os.environ, "WARREN_COOKIE_FILE": str(self.cookie_file), **extra}

    def __call__(self, *args: str, node: str | None = None, stdin: str | None = None,
                 env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "warrenmq.cli.warrenctl", "-n", node or self.nodename,
                *args]
        return subprocess.run(argv, capture_output=True, text=True, input=stdin,
                              env=env or self.env(), timeout=WARRENCTL_TIMEOUT_S)

    def ok(self, *args: str, **kwargs) -> str:
        r = self(*args, **kwargs)
        assert r.returncode == 0, f"warrenctl {' '.join(args)} exited {r.returncode}: {r.stderr}"
        return r.stdout


@pytest.fixture
def cookie_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cookie"
    monkeypatch.setenv("WARREN_COOKIE_FILE", str(path))  # nodes started from here inherit it
    return path


@pytest.fixture
def op_node(node_factory: Callable[..., Node], cookie_file: Path) -> Node:
    return node_factory("op")


@pytest.fixture
def ctl(op_node: Node, cookie_file: Path) -> Iterator[Ctl]:
    yield Ctl(f"op@localhost:{op_node.ports['dist']}", cookie_file)
