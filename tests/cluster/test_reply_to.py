"""Direct reply-to across the nodes of a cluster: the requester consumes from
`amq.rabbitmq.reply-to` on one node, the RPC server takes its requests from a queue (classic
or quorum) on another and publishes each reply, to the `reply_to` it received, on that node
or a third one. Black-box: three real `warren-server` processes joined into a cluster, real
pika clients.

What is held, as RabbitMQ 3.10 behaves (checked by hand against Debian's 3.10.8):
- every reply reaches the requester, in the order the server published them, and each is
  confirmed to the server at once;
- a reply routes to no queue: with `mandatory` it is also returned (NO_ROUTE), even though
  it was delivered;
- a reply after the requester's connection closed, or to a key that does not decode or names
  no node of the cluster, is dropped: confirmed, returned if mandatory, and the server's
  channel carries on;
- queue.declare of a reply address, from any node, answers declare-ok (0 messages, 1
  consumer) while the requester is there and 404 once it is gone.

All tests share one cluster; `healthy` hands it over with every node running and linked.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import pytest

from tests.conftest import unique
from tests.support.cluster import connect, revive, running_cluster
from tests.support.node import Node, wait_for

SEEN_S = 30.0
DEADLINE_S = 30.0
REPLY_TO = "amq.rabbitmq.reply-to"
N_REQUESTS = 200




def _pump(conns: list[pika.BlockingConnection], done: Callable[[], bool],
          what: str) -> None:
    """Let every connection's callbacks run until `done()`, or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for conn in conns:
            conn.process_data_events(time_limit=0.01)


def _visible(node: Node, queue: str) -> None:
    """Wait until `node` has applied the queue's declaration."""
    def declared() -> bool:
        with connect(node) as conn:
            try:
                conn.channel().queue_declare(queue, passive=True)
                return True
            except pika.exceptions.ChannelClosedByBroker:
                return False

    wait_for(declared, SEEN_S, interval_s=0.05, what=f"{queue} visible on {node.name}")


def _declare_reply_queue(node: Node, name: str) -> tuple[int, int] | int:
    """queue.declare (passive) of a reply address on `node`: (messages, consumers), or the
    reply code the channel was closed with."""
    with connect(node) as conn:
        try:
            ok = conn.channel().queue_declare(name, passive=True).method
            return ok.message_count, ok.consumer_count
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code


def _take_request(ch, queue: str) -> pika.BasicProperties:
    """basic.get the next request (auto-ack) within the deadline; its properties."""
    got: list[pika.BasicProperties] = []

    def one() -> bool:
        method, props, _ = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            got.append(props)
        return method is not None

    wait_for(one, SEEN_S, what=f"a request on {queue}")
    return got[0]


class Requester:
    """An RPC client: a channel consuming its replies from amq.rabbitmq.reply-to."""

    def __init__(self, conn: pika.BlockingConnection) -> None:
        self.conn = conn
        self.ch = conn.channel()
        self.ch.confirm_delivery()
        self.replies: list[tuple[str, bytes]] = []
        self.ch.basic_consume(REPLY_TO, self._on_reply, auto_ack=True)

    def _on_reply(self, _ch, _method, props, body: bytes) -> None:
        self.replies.append((props.correlation_id, body))

    def request(self, queue: str, correlation_id: str, body: bytes) -> None:
        self.ch.basic_publish("", queue, body, pika.BasicProperties(
            reply_to=REPLY_TO, correlation_id=correlation_id))


class Server:
    """An RPC server: consumes requests on one connection, publishes each reply (confirmed)
    on another, possibly to another node."""

    def __init__(self, consume_on: pika.BlockingConnection, reply_on: pika.BlockingConnection,
                 queue: str) -> None:
        self.requests = consume_on.channel()
        self.requests.basic_qos(prefetch_count=50)
        self.replies = reply_on.channel() if reply_on is not consume_on else self.requests
        self.replies.confirm_delivery()
        self.reply_to: list[str] = []
        self.requests.basic_consume(queue, self._on_request)

    def _on_request(self, ch, method, props, body: bytes) -> None:
        self.reply_to.append(props.reply_to)
        # a confirm channel: basic_publish returns once the reply is acked (or raises)
        self.replies.basic_publish("", props.reply_to, b"re:" + body, pika.BasicProperties(
            correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)


@pytest.fixture(scope="module")
def reply_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with running_cluster(tmp_path_factory.mktemp("reply-to"), 3, "join", prefix="r") as nodes:
        yield nodes


@pytest.fixture
def healthy(reply_cluster: list[Node]) -> list[Node]:
    return revive(reply_cluster, timeout_s=SEEN_S)


@pytest.fixture
def request_queue(healthy: list[Node]) -> Iterator[Callable[[str], str]]:
    """declare(queue_type) -> the name of a durable request queue declared on node 2 and
    visible on node 1; deleted after the test."""
    made: list[str] = []

    def declare(queue_type: str) -> str:
        name = unique(f"rpc-{queue_type}")
        with connect(healthy[1]) as conn:
            conn.channel().queue_declare(name, durable=True,
                                         arguments={"x-queue-type": queue_type})
        made.append(name)
        _visible(healthy[0], name)
        return name

    yield declare
    with connect(healthy[1]) as conn:
        ch = conn.channel()
        for name in made:
            ch.queue_delete(name)


@pytest.mark.parametrize(("queue_type", "reply_node"), [("classic", 1), ("quorum", 2)],
                         ids=["classic-reply-on-node2", "quorum-reply-on-node3"])
def test_every_reply_from_another_node_reaches_the_requester_in_order(
        healthy, request_queue, queue_type, reply_node):
    n1 = healthy[0]
    queue = request_queue(queue_type)
    with connect(n1) as rconn, connect(healthy[1]) as sconn, \
            connect(healthy[reply_node]) as pconn:
        requester = Requester(rconn)
        server = Server(sconn, pconn, queue)
        for i in range(N_REQUESTS):
            requester.request(queue, str(i), f"q{i}".encode())
        _pump([sconn, pconn, rconn], lambda: len(requester.replies) == N_REQUESTS,
              f"{N_REQUESTS} replies")
        assert requester.replies == [(str(i), f"re:q{i}".encode()) for i in range(N_REQUESTS)]
        # one channel, one reply address; it names node 1, however it is spelt
        assert len(set(server.reply_to)) == 1
        address = server.reply_to[0]
        assert address.startswith(REPLY_TO + ".") and "." not in address[len(REPLY_TO) + 1:]
        # the address declares (0 messages, 1 consumer) from every node while it is live
        assert [_declare_reply_queue(node, address) for node in healthy] == [(0, 1)] * 3


def test_a_mandatory_reply_is_delivered_and_returned_as_rabbitmq_does(healthy, request_queue):
    n1, n2 = healthy[0], healthy[1]
    queue = request_queue("classic")
    with connect(n1) as rconn, connect(n2) as sconn:
        requester = Requester(rconn)
        requester.request(queue, "m", b"q")
        ch = sconn.channel()
        ch.confirm_delivery()
        props = _take_request(ch, queue)
        with pytest.raises(pika.exceptions.UnroutableError):
            ch.basic_publish("", props.reply_to, b"answer", pika.BasicProperties(
                correlation_id="m"), mandatory=True)
        _pump([rconn], lambda: requester.replies == [("m", b"answer")], "the reply")


def test_a_reply_after_the_requester_left_is_dropped_and_the_server_carries_on(
        healthy, request_queue):
    n1, n2, n3 = healthy
    queue = request_queue("classic")
    with connect(n2) as sconn:
        ch = sconn.channel()
        ch.confirm_delivery()

        with connect(n1) as gone:
            Requester(gone).request(queue, "old", b"q")
            old = _take_request(ch, queue)
        assert not gone.is_open  # closed: its channel is torn down on node 1
        assert _declare_reply_queue(n2, old.reply_to) == 404
        assert _declare_reply_queue(n3, old.reply_to) == 404

        # dropped, yet confirmed: a reply is never refused
        ch.basic_publish("", old.reply_to, b"late", pika.BasicProperties(correlation_id="old"))
        with pytest.raises(pika.exceptions.UnroutableError):
            ch.basic_publish("", old.reply_to, b"late", mandatory=True)
        # malformed keys, and a well-formed one for a node that is not in the cluster
        ghost = base64.urlsafe_b64encode(os.urandom(16) + b"ghost@nowhere:1").decode()
        for key in ("garbage", "a.b", "", "not base64!", ghost.rstrip("=")):
            ch.basic_publish("", f"{REPLY_TO}.{key}", b"lost")
            assert _declare_reply_queue(n2, f"{REPLY_TO}.{key}") == 404

        # the same channel still serves a new requester, on the third node
        with connect(n3) as rconn:
            requester = Requester(rconn)
            requester.request(queue, "new", b"q")
            new = _take_request(ch, queue)
            assert new.reply_to != old.reply_to
            ch.basic_publish("", new.reply_to, b"fresh", pika.BasicProperties(
                correlation_id="new"))
            _pump([rconn, sconn], lambda: requester.replies == [("new", b"fresh")],
                  "the new requester's reply")
        assert ch.is_open
