"""connection.update-secret (RabbitMQ's extension for credentials that expire) on a real node
with real clients (pika's `BlockingConnection.update_secret`, aio-pika's
`Connection.update_secret`).

The new secret is checked as a login would be, for the connection's user: for an internal
user it must be the current password, so a client whose password was changed with
`warrenctl change_password` may carry on with the new one, and a wrong secret closes the
connection with 530 and RabbitMQ's text for a refusal ("New secret was refused by one of the
backends").

Differential note: RabbitMQ 3.10 (Debian's rabbitmq-server 3.10.8, tried by hand) answers
update-secret-ok to any secret from an internal user, since its internal backend's
credentials never expire (`rabbit_auth_backend_internal:state_can_expire() -> false`, so
`rabbit_access_control:update_state` keeps the old state). The stricter check here is
deliberate: a secret that would not log in is not accepted as the connection's credentials.
"""

from __future__ import annotations

from collections.abc import Iterator

import aio_pika
import aiormq.exceptions
import pika
import pika.exceptions
import pytest

from tests.conftest import unique
from tests.support.node import Node

REFUSED = "NOT_ALLOWED - New secret was refused by one of the backends"


def _ctl(broker: Node, *args: str) -> None:
    r = broker.ctl(*args)
    assert r.returncode == 0, f"warrenctl {' '.join(args)}: {r.stderr}"


@pytest.fixture
def user(broker: Node) -> Iterator[tuple[str, str]]:
    """A fresh internal user with every permission on '/': (name, password)."""
    if broker.proc is None:
        pytest.skip("needs warrenctl on the session node (not an external broker)")
    name, password = unique("secret-user"), unique("pw")
    _ctl(broker, "add_user", name, password)
    _ctl(broker, "set_permissions", "-p", "/", name, ".*", ".*", ".*")
    yield name, password
    _ctl(broker, "delete_user", name)


def _connect(broker: Node, name: str, password: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url(user=name, password=password)))


def _round_trip(conn: pika.BlockingConnection) -> None:
    """The connection still works: declare, publish (confirmed), get."""
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"still here")
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert method is not None and body == b"still here"


def test_the_current_password_is_accepted_and_the_connection_keeps_working(broker, user):
    name, password = user
    conn = _connect(broker, name, password)
    try:
        conn.update_secret(password, "token refreshed")
        _round_trip(conn)
        conn.update_secret(password, "and again")  # as often as the client likes
        _round_trip(conn)
    finally:
        conn.close()


def test_a_wrong_secret_closes_the_connection_with_530(broker, user):
    name, password = user
    conn = _connect(broker, name, password)
    other = _connect(broker, name, password)  # the same user's other connections stay
    try:
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            conn.update_secret("not-" + password, "guessing")
        assert (e.value.reply_code, e.value.reply_text) == (530, REFUSED)
        assert conn.is_closed
        _round_trip(other)
    finally:
        other.close()


def test_after_change_password_the_new_one_is_accepted_and_the_old_one_refused(broker, user):
    name, old = user
    new = unique("new-pw")
    first = _connect(broker, name, old)
    second = _connect(broker, name, old)
    try:
        _ctl(broker, "change_password", name, new)
        # open connections were authenticated before the change and keep working
        _round_trip(first)
        first.update_secret(new, "password rotated")
        _round_trip(first)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            second.update_secret(old, "stale credentials")
        assert (e.value.reply_code, e.value.reply_text) == (530, REFUSED)
    finally:
        if first.is_open:
            first.close()
    # the same holds for a login
    _connect(broker, name, new).close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        _connect(broker, name, old)


async def test_aio_pika_update_secret_accepted_then_refused(broker, user):
    name, password = user
    conn = await aio_pika.connect(broker.url(user=name, password=password), timeout=10)
    try:
        await conn.update_secret(password, reason="refresh", timeout=5)
        ch = await conn.channel()
        q = await ch.declare_queue(exclusive=True)
        assert q.name.startswith("amq.gen-")
        with pytest.raises(aiormq.exceptions.ConnectionNotAllowed) as e:
            await conn.update_secret("wrong", reason="refresh", timeout=5)
        assert REFUSED in str(e.value)
    finally:
        await conn.close()
