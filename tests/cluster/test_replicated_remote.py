"""A replicated queue is used from every node, also from nodes that hold no replica of it.

A quorum queue smaller than the cluster (`x-quorum-initial-group-size`, a node that joined
later), or a classic queue under `ha-mode: exactly`, has members on some nodes only; a client
connected to any other node declares, publishes with confirms, consumes within its prefetch,
gets, purges and deletes it as if it were local (the node goes through one member, whose
replica proposes to the queue's leader). When that member's node dies, another member serves
and the client is told nothing, as with RabbitMQ: its consumer keeps its subscription, what
it held unacknowledged comes again redelivered, acking the old tags is no error, and no
confirmed message is lost. A consumer that asked for `x-cancel-on-ha-failover` is cancelled.

Black-box: real `warren-server` processes joined into clusters, pika clients, a real SIGKILL.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest

from tests.conftest import unique
from tests.support.cluster import connect, ctl_ok, listing, running_cluster
from tests.support.node import Node, wait_for

SEEN_S = 30.0
PREFETCH = 10
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def _declare_replicated(node: Node, queue: str, kind: str, size: int) -> None:
    """A durable quorum queue of `size` members, or a classic one under ha-mode exactly."""
    if kind == "quorum":
        arguments = {"x-queue-type": "quorum", "x-quorum-initial-group-size": size}
    else:
        ctl_ok(node, "set_policy", f"ha-{queue}", f"^{queue}$",
               f'{{"ha-mode":"exactly","ha-params":{size}}}', "--apply-to", "queues")
        arguments = {}
    with connect(node) as conn:
        conn.channel().queue_declare(queue, durable=True, arguments=arguments)


def _published(ch, queue: str, body: bytes) -> bool:
    """A persistent, mandatory publish in confirm mode: True once confirmed, False when
    nacked (the member it went through died with it in flight). Unroutable raises."""
    try:
        ch.basic_publish("", queue, body, properties=PERSISTENT, mandatory=True)
        return True
    except pika.exceptions.NackError:
        return False


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


@pytest.mark.parametrize("kind", ["quorum", "ha-exactly"])
def test_another_member_serves_when_the_serving_one_dies(tmp_path, kind: str) -> None:
    """Four nodes, a three-replica queue: the fourth node goes through a member, the
    declaring node; that member is killed while the outsider's consumer holds a full prefetch
    unacknowledged. The consumer is not cancelled: the old tags still count against its
    prefetch until acked (no error), then it receives every confirmed message, those it held
    again with redelivered set."""
    queue = unique(kind)
    with running_cluster(tmp_path, 4, "join") as nodes:
        _declare_replicated(nodes[0], queue, kind, 3)
        members = _replicated_on(nodes, queue, 3)
        outsider = next(n for n in nodes if n.address not in members)
        serving = nodes[0]  # the declaring node is a member, and serves while it is up
        assert serving.address in members
        wait_for(lambda: _visible(outsider, queue), SEEN_S, what=f"{queue} usable here")

        confirmed: list[bytes] = []
        deliveries: list[tuple[int, bytes, bool]] = []
        cancels: list[str] = []
        acking = False
        with connect(outsider) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_qos(prefetch_count=PREFETCH)
            ch.add_on_cancel_callback(lambda frame: cancels.append(frame.method.consumer_tag))

            def on_message(_c, m, _p, body: bytes) -> None:
                deliveries.append((m.delivery_tag, body, m.redelivered))
                if acking:
                    ch.basic_ack(m.delivery_tag)

            ctag = ch.basic_consume(queue, on_message)
            for i in range(30):
                body = f"a{i}".encode()
                assert _published(ch, queue, body)
                confirmed.append(body)
            wait_for(lambda: conn.process_data_events(0.05) or len(deliveries) >= PREFETCH,
                     SEEN_S, what="a full prefetch window")
            held = list(deliveries)  # unacknowledged when the member dies

            serving.stop(signal.SIGKILL)
            for i in range(30):  # nacked until the outsider's node has moved to a live member
                body = f"b{i}".encode()
                wait_for(lambda body=body: _published(ch, queue, body), SEEN_S, interval_s=0.1,
                         what=f"{body!r} confirmed through a live member")
                confirmed.append(body)
            conn.process_data_events(0.5)
            assert not cancels
            # the dead member's tags still count against the prefetch, as in RabbitMQ
            assert len(deliveries) == PREFETCH

            for tag, _, _ in held:  # tags of the dead member: accepted, no channel error
                ch.basic_ack(tag)
            acking = True
            wanted = set(confirmed)
            # what the dead member had handed out comes again once the group has returned it
            # (the leader's `down` for that node), marked redelivered
            again = {body for _, body, _ in held}

            def all_in() -> bool:
                later = deliveries[PREFETCH:]
                return (wanted <= {body for _, body, _ in deliveries}
                        and again <= {body for _, body, redelivered in later if redelivered})

            wait_for(lambda: conn.process_data_events(0.05) or all_in(), SEEN_S,
                     what="every confirmed message after the failover, the held ones again")
            assert not cancels
            assert ch.is_open
            assert ch.queue_declare(queue, passive=True).method.consumer_count >= 1
            ch.basic_cancel(ctag)


def test_a_consumer_asking_for_it_is_cancelled_on_failover(tmp_path) -> None:
    """`x-cancel-on-ha-failover: true` (RabbitMQ's opt-in for mirrored queues): basic.cancel
    when the member serving the consumer's node dies. An exclusive consumer of a quorum queue
    served by the same member is not cancelled, though it asked too (ignored on quorum queues): it is taken again once the group has let go
    of the dead member's registration, and consumes on."""
    mirrored, quorum = unique("ha"), unique("qq")
    with running_cluster(tmp_path, 4, "join") as nodes:
        _declare_replicated(nodes[0], mirrored, "ha-exactly", 3)
        _declare_replicated(nodes[0], quorum, "quorum", 3)
        outsiders = {}
        for queue in (mirrored, quorum):
            members = _replicated_on(nodes, queue, 3)
            assert nodes[0].address in members
            outsiders[queue] = next(n for n in nodes if n.address not in members)
            wait_for(lambda queue=queue: _visible(outsiders[queue], queue), SEEN_S,
                     what=f"{queue} usable from a node without a replica")

        cancels: dict[str, list[str]] = {mirrored: [], quorum: []}
        got: list[bytes] = []
        with connect(outsiders[mirrored]) as conn_m, connect(outsiders[quorum]) as conn_q:
            ch_m, ch_q = conn_m.channel(), conn_q.channel()
            for ch, queue in ((ch_m, mirrored), (ch_q, quorum)):
                ch.add_on_cancel_callback(
                    lambda frame, queue=queue: cancels[queue].append(frame.method.consumer_tag))
            tag_m = ch_m.basic_consume(mirrored, lambda *_: None, auto_ack=True,
                                       arguments={"x-cancel-on-ha-failover": True})
            # RabbitMQ ignores the opt-in on a quorum queue: this one is never told
            ch_q.basic_consume(quorum, lambda _c, _m, _p, body: got.append(body),
                               auto_ack=True, exclusive=True,
                               arguments={"x-cancel-on-ha-failover": True})

            def pump() -> None:
                conn_m.process_data_events(0.05)
                conn_q.process_data_events(0.05)

            nodes[0].stop(signal.SIGKILL)
            wait_for(lambda: pump() or bool(cancels[mirrored]), SEEN_S,
                     what="basic.cancel for the consumer that asked for it")
            assert cancels[mirrored] == [tag_m]

            ch_q.confirm_delivery()
            wait_for(lambda: _published(ch_q, quorum, b"after"), SEEN_S, interval_s=0.1,
                     what="a publish confirmed through a live member")
            wait_for(lambda: pump() or b"after" in got, SEEN_S,
                     what="the exclusive consumer served by another member")
            assert not cancels[quorum]
