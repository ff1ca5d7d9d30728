# Fixtures the protocol tests share: pika and aio-pika connections to the session broker that
# are closed at teardown, unique names whose queues and exchanges are deleted after those
# connections close, and the admin connection for shared queues. Helpers are in helpers.py.

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aio_pika
import pika
import pytest

from .helpers import Admin, Names


@pytest.fixture
def names(broker) -> Iterator[Names]:
    n = Names()
    yield n
    n.delete_all(broker.url())


# The connection fixtures depend on `names` so that they are torn down first: an exclusive
# queue can only be deleted once the connection that owns it is gone.
@pytest.fixture
def pconnect(broker, names) -> Iterator[Callable[[], pika.BlockingConnection]]:
    conns: list[pika.BlockingConnection] = []

    def connect() -> pika.BlockingConnection:
        conns.append(pika.BlockingConnection(pika.URLParameters(broker.url())))
        return conns[-1]

    yield connect
    for c in conns:
        if c.is_open:
            c.close()


@pytest.fixture
def pconn(pconnect) -> pika.BlockingConnection:
    return pconnect()


@pytest.fixture
def conn(pconn) -> pika.BlockingConnection:
    """`pconn` under the name the ack, consume, confirm and content tests use."""
    return pconn


@pytest.fixture
async def aconnect(broker, names
                   ) -> AsyncIterator[Callable[[], Awaitable[aio_pika.abc.AbstractConnection]]]:
    conns: list[aio_pika.abc.AbstractConnection] = []

    async def connect() -> aio_pika.abc.AbstractConnection:
        conns.append(await aio_pika.connect(broker.url(), timeout=10))
        return conns[-1]

    yield connect
    for c in conns:
        await c.close()


@pytest.fixture
async def aconn(aconnect) -> aio_pika.abc.AbstractConnection:
    return await aconnect()


@pytest.fixture
def admin(broker, request: pytest.FixtureRequest) -> Iterator[Admin]:
    """A separate connection that declares shared queues and deletes them afterwards."""
    # queue names start with the module's topic ("acks", "consume", ...) to tell them apart
    a = Admin(broker.url(), request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))
    yield a
    a.close()
