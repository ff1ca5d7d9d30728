"""The permission matrix: every AMQP operation of RabbitMQ's access-control table, on a real
node with a real client. For each, a user whose configure/write/read patterns allow exactly
what the table asks succeeds, and users missing any one of those grants get 403."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from warrenmq.cluster.control import ControlClient
from warrenmq.cluster.names import parse
from warrenmq.meta.access import hash_password

from .conftest import Ctl

Perms = tuple[str, str, str]  # configure, write, read
Action = Callable[[BlockingChannel, str], None]


@dataclass
class Case:
    name: str
    setup: Action  # run by guest before each attempt: creates what the action needs
    action: Action
    allowed: Perms
    forbidden: list[Perms] = field(default_factory=list)


def _x(ch: BlockingChannel, p: str, *names: str, kind: str = "direct") -> None:
    for n in names:
        ch.exchange_declare(f"{p}{n}", kind)


def _q(ch: BlockingChannel, p: str, *names: str) -> None:
    for n in names:
        ch.queue_declare(f"{p}{n}")


def _publish(exchange: str, key: str) -> Action:
    def act(ch: BlockingChannel, p: str) -> None:
        ch.confirm_delivery()  # the publish waits for its confirm, or the channel's close
        ch.basic_publish(exchange.format(p=p), key.format(p=p), b"body")
    return act


CASES = [
    Case("exchange.declare", lambda ch, p: None,
         lambda ch, p: ch.exchange_declare(f"{p}x", "direct"),
         ("^{p}x$", "", ""), [("^other$", ".*", ".*")]),
    Case("exchange.declare with an alternate exchange", lambda ch, p: _x(ch, p, "ae"),
         lambda ch, p: ch.exchange_declare(f"{p}x", "fanout",
                                           arguments={"alternate-exchange": f"{p}ae"}),
         ("^{p}x$", "^{p}ae$", "^{p}x$"),
         [("^{p}x$", "", "^{p}x$"), ("^{p}x$", "^{p}ae$", ""), ("", ".*", ".*")]),
    Case("exchange.delete", lambda ch, p: _x(ch, p, "x"),
         lambda ch, p: ch.exchange_delete(f"{p}x"),
         ("^{p}x$", "", ""), [("", ".*", ".*")]),
    Case("queue.declare", lambda ch, p: None, lambda ch, p: ch.queue_declare(f"{p}q"),
         ("^{p}q$", "", ""), [("^other$", ".*", ".*")]),
    Case("queue.declare with a dead-letter exchange", lambda ch, p: _x(ch, p, "dlx"),
         lambda ch, p: ch.queue_declare(f"{p}q",
                                        arguments={"x-dead-letter-exchange": f"{p}dlx"}),
         ("^{p}q$", "^{p}dlx$", "^{p}q$"),
         [("^{p}q$", "", "^{p}q$"), ("^{p}q$", "^{p}dlx$", ""), ("", ".*", ".*")]),
    Case("queue.delete", lambda ch, p: _q(ch, p, "q"), lambda ch, p: ch.queue_delete(f"{p}q"),
         ("^{p}q$", "", ""), [("", ".*", ".*")]),
    Case("queue.bind", lambda ch, p: (_q(ch, p, "q"), _x(ch, p, "x")),
         lambda ch, p: ch.queue_bind(f"{p}q", f"{p}x", "k"),
         ("", "^{p}q$", "^{p}x$"), [(".*", "", "^{p}x$"), (".*", "^{p}q$", "")]),
    Case("queue.unbind",
         lambda ch, p: (_q(ch, p, "q"), _x(ch, p, "x"), ch.queue_bind(f"{p}q", f"{p}x", "k")),
         lambda ch, p: ch.queue_unbind(f"{p}q", f"{p}x", "k"),
         ("", "^{p}q$", "^{p}x$"), [(".*", "", "^{p}x$"), (".*", "^{p}q$", "")]),
    Case("exchange.bind", lambda ch, p: _x(ch, p, "src", "dst"),
         lambda ch, p: ch.exchange_bind(destination=f"{p}dst", source=f"{p}src",
                                        routing_key="k"),
         ("", "^{p}dst$", "^{p}src$"), [(".*", "", "^{p}src$"), (".*", "^{p}dst$", "")]),
    Case("exchange.unbind",
         lambda ch, p: (_x(ch, p, "src", "dst"),
                        ch.exchange_bind(destination=f"{p}dst", source=f"{p}src",
                                         routing_key="k")),
         lambda ch, p: ch.exchange_unbind(destination=f"{p}dst", source=f"{p}src",
                                          routing_key="k"),
         ("", "^{p}dst$", "^{p}src$"), [(".*", "", "^{p}src$"), (".*", "^{p}dst$", "")]),
    Case("basic.publish", lambda ch, p: _x(ch, p, "x"), _publish("{p}x", "k"),
         ("", "^{p}x$", ""), [(".*", "", ".*"), (".*", "^other$", ".*")]),
    Case("basic.publish to the default exchange (amq.default)", lambda ch, p: _q(ch, p, "q"),
         _publish("", "{p}q"), ("", "^amq\\.default$", ""),
         [(".*", "^$", ".*"), (".*", "^{p}q$", ".*")]),
    Case("basic.get", lambda ch, p: _q(ch, p, "q"),
         lambda ch, p: ch.basic_get(f"{p}q"), ("", "", "^{p}q$"), [(".*", ".*", "")]),
    Case("basic.consume", lambda ch, p: _q(ch, p, "q"),
         lambda ch, p: ch.basic_consume(f"{p}q", lambda *a: None),
         ("", "", "^{p}q$"), [(".*", ".*", "^other$")]),
    Case("queue.purge", lambda ch, p: _q(ch, p, "q"), lambda ch, p: ch.queue_purge(f"{p}q"),
         ("", "", "^{p}q$"), [(".*", ".*", "")]),
    Case("passive declares need no permission",
         lambda ch, p: (_q(ch, p, "q"), _x(ch, p, "x")),
         lambda ch, p: (ch.queue_declare(f"{p}q", passive=True),
                        ch.exchange_declare(f"{p}x", passive=True)),
         ("", "", ""), []),
]


@pytest.fixture
def control(op_node, ctl: Ctl) -> Iterator[ControlClient]:
    client = ControlClient(parse(ctl.nodename), ctl.cookie_file.read_text()).connect()
    yield client
    client.close()


def _user(control: ControlClient, name: str, perms: Perms, prefix: str) -> None:
    control.call("add_user", {"username": name, "password_hash": hash_password("pw")})
    conf, write, read = (p.replace("{p}", prefix.replace(".", "\\.")) for p in perms)
    control.call("set_permissions", {"vhost": "/", "user": name, "configure": conf,
                                     "write": write, "read": read})


def _attempt(node, user: str, case: Case, prefix: str) -> int | None:
    """Run the case as `user` after guest's setup; None on success, else the reply code."""
    admin = pika.BlockingConnection(pika.URLParameters(node.url()))
    case.setup(admin.channel(), prefix)
    admin.close()
    conn = pika.BlockingConnection(pika.URLParameters(node.url(user=user, password="pw")))
    try:
        case.action(conn.channel(), prefix)
        return None
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code
    finally:
        if conn.is_open:
            conn.close()
        cleanup = pika.BlockingConnection(pika.URLParameters(node.url()))
        ch = cleanup.channel()
        for name in ("q",):
            ch.queue_delete(f"{prefix}{name}")
        for name in ("x", "ae", "dlx", "src", "dst"):
            ch.exchange_delete(f"{prefix}{name}")
        cleanup.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_permission_matrix(op_node, control: ControlClient, case: Case):
    prefix = "m" + str(CASES.index(case)) + "-"
    _user(control, f"{prefix}ok", case.allowed, prefix)
    assert _attempt(op_node, f"{prefix}ok", case, prefix) is None
    for i, perms in enumerate(case.forbidden):
        user = f"{prefix}no{i}"
        _user(control, user, perms, prefix)
        assert _attempt(op_node, user, case, prefix) == 403, f"{perms} should be refused"


def test_topic_permissions_guard_publish_and_bind_on_topic_exchanges(op_node, control, ctl):
    _user(control, "topical", (".*", ".*", ".*"), "")
    ctl.ok("set_topic_permissions", "topical", "amq.topic", "^{username}\\.", "^read\\.")
    conn = pika.BlockingConnection(pika.URLParameters(op_node.url(user="topical",
                                                                  password="pw")))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "topical.news", b"ok")  # {username} expands
    ch.basic_publish("amq.direct", "anything", b"ok")  # not a topic exchange: no check
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        ch.basic_publish("amq.topic", "other.news", b"no")
    assert refused.value.reply_code == 403
    assert "access to topic 'other.news' in exchange 'amq.topic'" in refused.value.reply_text
    ch = conn.channel()
    ch.queue_declare("topical-q", exclusive=True)
    ch.queue_bind("topical-q", "amq.topic", "read.#")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        ch.queue_bind("topical-q", "amq.topic", "secret.#")
    assert refused.value.reply_code == 403
    conn.close()
    assert "topical\tamq.topic\t^{username}\\.\t^read\\." in ctl.ok("list_topic_permissions")


def test_no_permission_on_the_vhost_is_refused_at_connection_open(op_node, control):
    control.call("add_user", {"username": "nobody-here", "password_hash": hash_password("pw")})
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
        pika.BlockingConnection(pika.URLParameters(op_node.url(user="nobody-here",
                                                               password="pw")))
    assert "530" in str(refused.value) and "access to vhost '/' refused" in str(refused.value)


def test_wrong_password_is_access_refused(op_node):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        pika.BlockingConnection(pika.URLParameters(op_node.url(password="wrong")))
    assert "403" in str(refused.value) and "ACCESS_REFUSED" in str(refused.value)
