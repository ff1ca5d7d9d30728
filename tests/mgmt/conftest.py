"""Management fixtures: one private node for the module (the management plugin is enabled
by default on a fresh node) and an API client for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.node import Node, start_node

from .http import Api


@pytest.fixture(scope="module")
def mgmt_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = start_node(tmp_path_factory.mktemp("mgmt"), name="mgmt")
    yield node
    node.stop()


@pytest.fixture
def api(mgmt_node: Node) -> Api:
    return Api(f"http://127.0.0.1:{mgmt_node.ports['mgmt']}")
