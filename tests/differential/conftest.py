"""Differential fixtures: run one scenario against WarrenMQ (`broker`) and RabbitMQ
(`rabbitmq`) and require the two traces to be equal.

Set WARREN_TEST_RABBITMQ_URL to use a running RabbitMQ instead of a private node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.node import Node
from tests.support.rabbitmq import rabbitmq  # noqa: F401  (the session fixture)

Scenario = Callable[..., Any]


@pytest.fixture
def differential(broker: Node, rabbitmq: Node) -> Callable[..., Any]:  # noqa: F811
    """`differential(scenario, *args, **kwargs)` returns RabbitMQ's trace once WarrenMQ's
    equals it."""

    def run(scenario: Scenario, *args: Any, **kwargs: Any) -> Any:
        expected = scenario(rabbitmq.url(), *args, **kwargs)
        actual = scenario(broker.url(), *args, **kwargs)
        assert actual == expected, f"{scenario.__name__}: WarrenMQ (left) differs from RabbitMQ"
        return expected

    return run
