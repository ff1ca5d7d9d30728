"""The pytest plugin (entry point `pytest11`, so installing warrenmq is the whole set-up).

Fixtures:
  warren_broker  session: the embedded Broker, or an ExternalBroker with --warren-external
  warren_url     the broker's AMQP URL (its default vhost, or the external URL's vhost)
  warren_vhost   a VirtualHost made for one test (the broker's user may do anything in it),
                 deleted after it with everything in it, so tests cannot see each other's
                 queues; `warren_vhost.url` is its AMQP URL

Options (or the environment variables in brackets, for CI):
  --warren-external URL        run against that broker instead [WARREN_EXTERNAL_URL]
  --warren-external-mgmt URL   its management API, default http://HOST:15672/
                               [WARREN_EXTERNAL_MGMT_URL]
  --warren-shared-vhost        without a management API, warren_vhost is the URL's vhost
  --warren-mode thread|process where the embedded broker runs (default thread)

The broker is started lazily, by the first test that asks for a fixture: a session that
uses none of them starts nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

ENV_EXTERNAL = "WARREN_EXTERNAL_URL"
ENV_EXTERNAL_MGMT = "WARREN_EXTERNAL_MGMT_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("warrenmq", "WarrenMQ broker fixtures")
    group.addoption("--warren-external", metavar="URL", default=None,
                    help="run the warren_* fixtures against this AMQP broker (e.g. RabbitMQ) "
                         f"instead of an embedded WarrenMQ; env {ENV_EXTERNAL}")
    group.addoption("--warren-external-mgmt", metavar="URL", default=None,
                    help="management HTTP API of the external broker, used to create a vhost "
                         "per test (default http://HOST:15672/ with the AMQP credentials); "
                         f"env {ENV_EXTERNAL_MGMT}")
    group.addoption("--warren-shared-vhost", action="store_true", default=False,
                    help="if the external broker has no management API, give warren_vhost "
                         "the URL's own vhost (not isolated) instead of failing")
    group.addoption("--warren-mode", choices=("thread", "process"), default="thread",
                    help="run the embedded broker on a thread of the test process (default) "
                         "or as a child process")


def _external_options(config: pytest.Config) -> tuple[str | None, str | None]:
    url = config.getoption("warren_external") or os.environ.get(ENV_EXTERNAL) or None
    mgmt = config.getoption("warren_external_mgmt") or os.environ.get(ENV_EXTERNAL_MGMT) or None
    return url, mgmt


def pytest_configure(config: pytest.Config) -> None:
    # A bad URL is a usage error before any test runs, not an error in every test.
    url, mgmt = _external_options(config)
    if url is None:
        if mgmt is not None and config.getoption("warren_external_mgmt"):
            raise pytest.UsageError("--warren-external-mgmt needs --warren-external")
        return
    from .vhosts import ExternalBroker

    try:
        ExternalBroker(url, mgmt)
    except ValueError as e:
        raise pytest.UsageError(f"--warren-external: {e}") from None


def pytest_report_header(config: pytest.Config) -> str | None:
    url, _ = _external_options(config)
    if url is None:
        return None
    from .client import Address

    a = Address.from_url(url)
    return f"warrenmq: fixtures use the external broker at {a.host}:{a.port}"


@pytest.fixture(scope="session")
def warren_broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's broker: warrenmq.embedded.Broker, or an ExternalBroker."""
    url, mgmt = _external_options(request.config)
    if url is not None:
        from .vhosts import ExternalBroker

        yield ExternalBroker(url, mgmt, shared=request.config.getoption("warren_shared_vhost"))
        return
    from ..embedded import Broker

    with Broker(request.config.getoption("warren_mode")) as broker:
        yield broker


@pytest.fixture
def warren_url(warren_broker: Any) -> str:
    return str(warren_broker.url)


@pytest.fixture
def warren_vhost(warren_broker: Any) -> Iterator[Any]:
    from .vhosts import ExternalBroker, VirtualHost

    if isinstance(warren_broker, ExternalBroker) and not warren_broker.management_available():
        if warren_broker.shared:
            yield VirtualHost(warren_broker.vhost, warren_broker.url, isolated=False)
            return
        pytest.fail(
            "warren_vhost needs to create a vhost on the external broker, which AMQP cannot "
            f"do: {warren_broker.unavailable_reason()}. Enable the management plugin "
            "(rabbitmq-plugins enable rabbitmq_management) and give a user with the "
            "administrator tag, or point --warren-external-mgmt at the API; or pass "
            "--warren-shared-vhost to share the URL's vhost (name entities with "
            "warren_vhost.unique()).", pytrace=False)
    name = f"warren-test-{uuid.uuid4().hex[:12]}"
    warren_broker.add_vhost(name)
    try:
        warren_broker.set_permissions(name)
        yield VirtualHost(name, warren_broker.url_for(name))
    finally:
        warren_broker.delete_vhost(name)
