"""Fixtures for the embedded broker's own tests: pytester (to run the plugin in an inner
pytest session) and a private RabbitMQ with the management plugin for --warren-external."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rabbitmq import RABBITMQ_SERVER, rabbitmq_installed, start_rabbitmq

SUITE = Path(__file__).parent / "suite"


def pytest_configure(config: pytest.Config) -> None:
    # pytester is a plugin pytest ships but does not load; `pytest_plugins` may only be set in
    # the root conftest, so it is registered from here instead.
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture(scope="session")
def rabbitmq_management(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(AMQP URL, management API URL) of a private RabbitMQ with the management plugin."""
    if not rabbitmq_installed():
        pytest.skip(f"RabbitMQ is not installed ({RABBITMQ_SERVER} or erl missing); "
                    "install Debian's rabbitmq-server")
    tmp = tmp_path_factory.mktemp("rabbitmq-mgmt")
    node = start_rabbitmq(tmp, management=True)
    mgmt_url = f"http://127.0.0.1:{node.mgmt_port}/"
    try:
        yield node.url(), mgmt_url
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)
