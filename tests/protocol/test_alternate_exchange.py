"""Alternate exchanges, by argument and by policy: what an exchange cannot route goes to its
alternate exchange (chains followed, cycles stopped); mandatory returns only what no
alternate exchange could route either."""

from __future__ import annotations

import pika
import pytest

from tests.conftest import unique


@pytest.fixture
def ch(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url()))
    channel = conn.channel()
    channel.confirm_delivery()
    yield channel
    conn.close()


def _get_all(ch, queue: str) -> list[bytes]:
    out = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def test_alternate_exchange_argument_gets_unroutable_messages(ch):
    main, ae, q_main, q_ae = unique("main"), unique("ae"), unique("qm"), unique("qa")
    ch.exchange_declare(ae, "fanout", auto_delete=True)
    ch.exchange_declare(main, "direct", auto_delete=True,
                        arguments={"alternate-exchange": ae})
    for q in (q_main, q_ae):
        ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q_main, main, "known")
    ch.queue_bind(q_ae, ae, "")
    ch.basic_publish(main, "known", b"routed")
    ch.basic_publish(main, "unknown", b"to-ae", mandatory=True)  # no return: the AE took it
    assert _get_all(ch, q_main) == [b"routed"]
    assert _get_all(ch, q_ae) == [b"to-ae"]


def test_alternate_exchange_chain_and_cycle(ch):
    a, b, c, q = unique("a"), unique("b"), unique("c"), unique("q")
    ch.exchange_declare(c, "fanout", auto_delete=True)
    ch.exchange_declare(b, "direct", auto_delete=True, arguments={"alternate-exchange": c})
    ch.exchange_declare(a, "direct", auto_delete=True, arguments={"alternate-exchange": b})
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, c, "")
    ch.basic_publish(a, "x", b"through-two")
    assert _get_all(ch, q) == [b"through-two"]
    x1, x2 = unique("x1"), unique("x2")
    ch.exchange_declare(x2, "direct", auto_delete=True, arguments={"alternate-exchange": x1})
    ch.exchange_declare(x1, "direct", auto_delete=True, arguments={"alternate-exchange": x2})
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(x1, "nowhere", b"cycle", mandatory=True)


def test_alternate_exchange_by_policy(broker, ch, node_factory):
    node = node_factory("ae-policy")
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    c = conn.channel()
    c.confirm_delivery()
    c.exchange_declare("orders", "direct")
    c.exchange_declare("unrouted", "fanout")
    c.queue_declare("lost-orders")
    c.queue_bind("lost-orders", "unrouted", "")
    r = node.ctl("set_policy", "AE", "^orders$", '{"alternate-exchange": "unrouted"}',
                 "--apply-to", "exchanges")
    assert r.returncode == 0, r.stderr
    c.basic_publish("orders", "nobody", b"kept")
    assert _get_all(c, "lost-orders") == [b"kept"]
    assert node.ctl("clear_policy", "AE").returncode == 0
    with pytest.raises(pika.exceptions.UnroutableError):
        c.basic_publish("orders", "nobody", b"dropped", mandatory=True)
    conn.close()
