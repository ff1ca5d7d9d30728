"""A replicated queue is used from every node, also from nodes that hold no replica of it.

A quorum queue smaller than the cluster (`x-quorum-initial-group-size`, a node that joined
later), or a classic queue under `ha-mode: exactly`, has members on some nodes only; a client
connected to any other node declares, publishes with confirms, consumes within its prefetch,
gets, purges and deletes it as if it were local (the node goes through one member, whose
replica proposes to the queue's leader). When that member's node dies, another member serves:
the consumer is told with basic.cancel, consumes again, and no confirmed message is lost.

Black-box: real `warren-server` processes joined into clusters, pika clients, a real SIGKILL.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest

from tests.conftest import unique
from tests.support.cluster import connect, ctl_ok, listing, running_cluster
from tests.support.node import Node, wait_for

SEEN_S = 30.0




def _members(node: Node, queue: str) -> list[str]:
    rows = [r for r in listing(node, "list_queues", "name", "members") if r["name"] == queue]
    return list(rows[0]["members"]) if rows else []


def _replicated_on(nodes: list[Node], queue: str, size: int) -> list[str]:
    """Wait until the queue has `size` members and a leader; its members' addresses."""
    def ready() -> bool:
        rows = [r for r in listing(nodes[0], "list_queues", "name", "leader", "members")
                if r["name"] == queue]
        return bool(rows) and len(rows[0]["members"]) == size and bool(rows[0]["leader"])

    wait_for(ready, SEEN_S, interval_s=0.2, what=f"{queue} replicated on {size} nodes")
    return _members(nodes[0], queue)


def _passive_count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with running_cluster(tmp_path_factory.mktemp("replicated-remote"), 3, "join") as nodes:
        yield nodes


@pytest.mark.parametrize("kind", ["quorum", "ha-exactly"])
def test_a_node_without_a_replica_uses_the_queue_fully(three: list[Node], kind: str) -> None:
    queue = unique(kind)
    if kind == "quorum":
        arguments = {"x-queue-type": "quorum", "x-quorum-initial-group-size": 2}
    else:
        ctl_ok(three[0], "set_policy", f"two-{queue}", f"^{queue}$",
               '{"ha-mode":"exactly","ha-params":2}', "--apply-to", "queues")
        arguments = {}
    with connect(three[0]) as conn:
        conn.channel().queue_declare(queue, durable=True, arguments=arguments)
    members = _replicated_on(three, queue, 2)
    outsider = next(n for n in three if n.address not in members)
    insider = next(n for n in three if n.address in members)

    with connect(outsider) as conn:
        ch = conn.channel()
        wait_for(lambda: _visible(outsider, queue), SEEN_S, what=f"{queue} usable here")
        ch.confirm_delivery()
        for i in range(50):  # each basic_publish returns once confirmed (else it raises)
            ch.basic_publish("", queue, f"m{i}".encode(), mandatory=True,
                             properties=pika.BasicProperties(delivery_mode=2))
        assert _passive_count(ch, queue) == 50

        method, _, body = ch.basic_get(queue, auto_ack=False)
        assert body == b"m0" and method.message_count == 49
        ch.basic_ack(method.delivery_tag)

        # prefetch is held for a consumer on this node: 5 unacknowledged at most
        ch.basic_qos(prefetch_count=5)
        held: list[tuple[int, bytes]] = []
        ctag = ch.basic_consume(queue, lambda _c, m, _p, b: held.append((m.delivery_tag, b)))
        wait_for(lambda: conn.process_data_events(0.05) or len(held) >= 5, SEEN_S,
                 what="the first prefetch window")
        conn.process_data_events(0.5)  # were it not held, more would arrive meanwhile
        assert len(held) == 5
        got: list[bytes] = []
        while len(got) < 49:
            if held:
                tag, body = held.pop(0)
                got.append(body)
                ch.basic_ack(tag)
            conn.process_data_events(0.05)
        assert got == [f"m{i}".encode() for i in range(1, 50)]  # once each, in order
        ch.basic_cancel(ctag)

        for i in range(7):
            ch.basic_publish("", queue, f"p{i}".encode())
        assert ch.queue_purge(queue).method.message_count == 7
    with connect(insider) as conn:
        assert _passive_count(conn.channel(), queue) == 0  # the members agree
    with connect(outsider) as conn:
        conn.channel().queue_delete(queue)
    wait_for(lambda: not _members(three[0], queue), SEEN_S, what=f"{queue} deleted")
    if kind == "ha-exactly":
        ctl_ok(three[0], "clear_policy", f"two-{queue}")


def _visible(node: Node, queue: str) -> bool:
    with connect(node) as conn:
        try:
            conn.channel().queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False


def test_another_member_serves_when_the_serving_one_dies(tmp_path) -> None:
    """Four nodes, a three-replica quorum queue: the fourth node goes through a member; that
    member is killed; the consumer is cancelled, consumes again through another member, and
    receives every confirmed message."""
    queue = unique("q")
    with running_cluster(tmp_path, 4, "join") as nodes:
        with connect(nodes[0]) as conn:
            conn.channel().queue_declare(queue, durable=True, arguments={
                "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
        members = _replicated_on(nodes, queue, 3)
        outsider = next(n for n in nodes if n.address not in members)
        wait_for(lambda: _visible(outsider, queue), SEEN_S, what=f"{queue} usable here")

        confirmed: set[bytes] = set()
        received: set[bytes] = set()
        cancels: list[str] = []
        with connect(outsider) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_qos(prefetch_count=20)
            ch.add_on_cancel_callback(lambda frame: cancels.append(frame.method.consumer_tag))

            def on_message(_c, m, _p, body: bytes) -> None:
                received.add(body)
                ch.basic_ack(m.delivery_tag)

            ch.basic_consume(queue, on_message)
            for i in range(100):
                body = f"a{i}".encode()
                ch.basic_publish("", queue, body, properties=pika.BasicProperties(delivery_mode=2))
                confirmed.add(body)
            wait_for(lambda: conn.process_data_events(0.05) or received >= confirmed, SEEN_S,
                     what="the first 100 messages")

            # the member this node goes through is the declaring node (a member): kill it
            serving = nodes[0]
            assert serving.address in members
            serving.stop(signal.SIGKILL)
            wait_for(lambda: conn.process_data_events(0.05) or bool(cancels), SEEN_S,
                     what="basic.cancel from the outsider's node")

            ch.basic_consume(queue, on_message)  # through another member now
            for i in range(100):
                body = f"b{i}".encode()
                with contextlib.suppress(pika.exceptions.NackError):  # resent below if so
                    ch.basic_publish("", queue, body,
                                     properties=pika.BasicProperties(delivery_mode=2))
                    confirmed.add(body)
            wait_for(lambda: conn.process_data_events(0.05) or received >= confirmed, SEEN_S,
                     what="every confirmed message after the failover")
        assert confirmed <= received
