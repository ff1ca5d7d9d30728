"""Shared fixtures: real broker processes on ephemeral loopback ports.

`broker` is one `warren-server` shared by the session (tests use unique names);
set WARREN_TEST_EXTERNAL_URL=amqp://user:pass@host:port/ to run the same tests
against another broker, such as RabbitMQ. `node_factory` starts private nodes
for tests that restart, signal or reconfigure them.
"""

from __future__ import annotations

import os
import signal
import uuid
from urllib.parse import unquote, urlparse

import pytest

from tests.support.node import Node, start_node


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Node:
    external = os.environ.get("WARREN_TEST_EXTERNAL_URL")
    if external:
        u = urlparse(external)
        node = Node(u.hostname or "127.0.0.1", u.port or 5672)
        node.user, node.password = unquote(u.username or "guest"), unquote(u.password or "guest")
        yield node
        return
    node = start_node(tmp_path_factory.mktemp("broker"))
    yield node
    node.stop()


@pytest.fixture
def node_factory(tmp_path):
    nodes: list[Node] = []

    def start(name: str = "warren", **kwargs) -> Node:
        node = start_node(tmp_path, name=name, **kwargs)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(signal.SIGKILL) if node.proc and node.proc.poll() is None else None
