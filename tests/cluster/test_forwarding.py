"""Any client on any node uses every classic queue: publishes, consumers, basic.get and the
queue methods travel to the queue's home node and back. Black-box: three real
`warren-server` processes joined into a cluster, real clients (pika, aio-pika), real
SIGKILLs.

What is held:
- a publish on one node to a queue of another is confirmed (after the home's fsync when
  persistent) and reaches a consumer on a third node exactly once, in order, within its
  prefetch; acks, nacks, rejects (dead-lettering at the home), channel close and basic.get
  act at the home; queue.declare counts and queue.delete checks are the home's;
- fanout, exclusive queues, single-active consumers and listings work across nodes;
- SIGKILL of the consumer's node requeues its unacknowledged messages at the home (flagged
  redelivered); SIGKILL of the home cancels the consumers on the other nodes
  (basic.cancel, to pika and aio-pika);
- while the home of a durable queue is down, the queue is refused with RabbitMQ 3.10's 404
  text and is unroutable (mandatory publishes come back, confirms still arrive); its
  non-durable queues are deleted (as RabbitMQ's on_node_down does).

All tests share one cluster; `healthy` hands it over with every node running and linked.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator

import aio_pika
import pika
import pika.exceptions
import pytest

from tests.conftest import unique
from tests.support.cluster import connect, listing, revive, running_cluster, wait_cluster
from tests.support.node import Node, launch, wait_for

SEEN_S = 30.0
PERSISTENT = pika.BasicProperties(delivery_mode=2)




def _visible(node: Node, queue: str) -> None:
    """Wait until `node` knows the queue (a metadata change reaches every node shortly
    after the declaring node applied it)."""
    def declared() -> bool:
        with connect(node) as conn:
            try:
                conn.channel().queue_declare(queue, passive=True)
                return True
            except pika.exceptions.ChannelClosedByBroker:
                return False

    wait_for(declared, SEEN_S, interval_s=0.05, what=f"{queue} visible on {node.name}")


def _declare(node: Node, queue: str, others: list[Node], **kwargs) -> None:
    with connect(node) as conn:
        conn.channel().queue_declare(queue, **kwargs)
    for other in others:
        _visible(other, queue)


def _counts(node: Node, queue: str) -> tuple[int, int]:
    with connect(node) as conn:
        ok = conn.channel().queue_declare(queue, passive=True).method
        return ok.message_count, ok.consumer_count


def _publish(node: Node, queue: str, bodies: list[bytes], properties=PERSISTENT) -> None:
    with connect(node) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", queue, body, properties, mandatory=True)


@pytest.fixture(scope="module")
def forwarding_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with running_cluster(tmp_path_factory.mktemp("forwarding"), 3, "join", prefix="f") as nodes:
        yield nodes


@pytest.fixture
def healthy(forwarding_cluster: list[Node]) -> list[Node]:
    return revive(forwarding_cluster, timeout_s=SEEN_S)


# -- publishing and consuming across nodes ------------------------------------------------------
def test_confirmed_publish_on_one_node_reaches_a_consumer_on_another_once_in_order(healthy):
    f1, f2, f3 = healthy
    queue = unique("order")
    _declare(f1, queue, [f2, f3], durable=True)
    bodies = [str(i).encode() for i in range(300)]
    _publish(f2, queue, bodies)  # every publish confirmed (or the client raises)
    assert _counts(f3, queue) == (300, 0)

    prefetch = 10
    got: list[bytes] = []
    with connect(f3) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=prefetch)
        held: list[int] = []
        ch.basic_consume(queue, lambda _c, m, _p, body: (got.append(body),
                                                         held.append(m.delivery_tag)))
        wait_for(lambda: (conn.process_data_events(0.05), len(held) >= prefetch)[1], SEEN_S,
                 what="the first prefetch window")
        # the home answers this after every delivery it sent before it: the window is full,
        # and no more than the prefetch came
        assert ch.queue_declare(queue, passive=True).method.message_count == 300 - prefetch
        conn.process_data_events(0)
        assert len(held) == prefetch
        while len(got) < len(bodies):
            for tag in held:
                ch.basic_ack(tag)
            held.clear()
            wait_for(lambda: (conn.process_data_events(0.05), held or len(got) == 300)[1],
                     SEEN_S, what="more deliveries")
        for tag in held:
            ch.basic_ack(tag)
    assert got == bodies
    wait_for(lambda: _counts(f1, queue) == (0, 0), SEEN_S, what="every ack applied at the home")


def test_nack_requeue_reject_and_basic_get_act_at_the_home(healthy):
    f1, f2, f3 = healthy
    dead = unique("dead")
    queue = unique("nack")
    _declare(f2, dead, [f1, f3])  # where the home dead-letters to: a queue of another node
    _declare(f1, queue, [f2, f3], arguments={"x-dead-letter-exchange": "",
                                             "x-dead-letter-routing-key": dead})
    _publish(f3, queue, [b"a", b"b"])
    with connect(f2) as conn:
        ch = conn.channel()
        method, _, body = ch.basic_get(queue)
        assert (body, method.redelivered, method.message_count) == (b"a", False, 1)
        ch.basic_nack(method.delivery_tag, requeue=True)
        method, _, body = ch.basic_get(queue)
        assert (body, method.redelivered) == (b"a", True)  # back at its place, flagged
        ch.basic_reject(method.delivery_tag, requeue=False)  # dead-lettered by the home
        method, _, body = ch.basic_get(queue, auto_ack=True)
        assert (body, method.redelivered, method.message_count) == (b"b", False, 0)
        assert ch.basic_get(queue) == (None, None, None)
    with connect(f3) as conn:
        method, props, body = conn.channel().basic_get(dead, auto_ack=True)
        assert body == b"a"
        assert props.headers["x-death"][0]["reason"] == "rejected"
        assert props.headers["x-death"][0]["queue"] == queue


def test_a_consumers_channel_closing_requeues_its_deliveries_at_the_home(healthy):
    f1, f2, f3 = healthy
    queue = unique("close")
    _declare(f1, queue, [f2, f3])
    _publish(f2, queue, [b"1", b"2", b"3"])
    with connect(f3) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=2)
        got: list[bytes] = []
        ch.basic_consume(queue, lambda _c, _m, _p, body: got.append(body))
        wait_for(lambda: (conn.process_data_events(0.05), len(got) == 2)[1], SEEN_S,
                 what="two deliveries")
        ch.close()
    wait_for(lambda: _counts(f1, queue) == (3, 0), SEEN_S, what="the deliveries requeued")
    with connect(f2) as conn:
        ch = conn.channel()
        redelivered = [ch.basic_get(queue, auto_ack=True)[0].redelivered for _ in range(3)]
    assert redelivered == [True, True, False]


def test_one_publish_reaches_queues_on_every_node_through_a_fanout(healthy):
    exchange = unique("fan")
    queues = {node.name: unique("fan-q") for node in healthy}
    with connect(healthy[0]) as conn:
        conn.channel().exchange_declare(exchange, "fanout")
    for node in healthy:
        with connect(node) as conn:
            ch = conn.channel()
            ch.queue_declare(queues[node.name], durable=True)
            ch.queue_bind(queues[node.name], exchange)
    for node in healthy:
        for queue in queues.values():
            _visible(node, queue)
    with connect(healthy[1]) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, "", b"to all", PERSISTENT, mandatory=True)
    for node in healthy:  # each queue read on its home and on another node
        assert _counts(node, queues[node.name]) == (1, 0)
    with connect(healthy[2]) as conn:
        ch = conn.channel()
        for queue in queues.values():
            assert ch.basic_get(queue, auto_ack=True)[2] == b"to all"


def test_declare_delete_and_listings_see_the_homes_figures(healthy):
    f1, f2, f3 = healthy
    queue = unique("figures")
    _declare(f1, queue, [f2, f3])
    _publish(f1, queue, [b"x"] * 4)
    with connect(f1) as c1, connect(f3) as c3:
        c1.channel().basic_consume(queue, lambda *_: None)
        ch3 = c3.channel()
        ch3.basic_qos(prefetch_count=1)
        ch3.basic_consume(queue, lambda *_: None)
        # consumers on two nodes; the home counts both (and what is not delivered yet)
        wait_for(lambda: _counts(f2, queue)[1] == 2, SEEN_S, what="two consumers counted")

        def listed() -> bool:
            rows = {r["name"]: r for r in listing(f2, "list_queues", "name", "messages",
                                                     "consumers")}
            return rows.get(queue, {}).get("consumers") == 2 and \
                rows[queue]["messages"] == 4
        wait_for(listed, SEEN_S, interval_s=0.2, what="list_queues on another node")
        with connect(f2) as c2:
            ch = c2.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                ch.queue_delete(queue, if_unused=True)
            assert refused.value.reply_code == 406
            assert refused.value.reply_text == \
                f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' in use"
    with connect(f2) as conn:
        ch = conn.channel()
        wait_for(lambda: _counts(f2, queue) == (4, 0), SEEN_S, what="consumers gone")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            ch.queue_delete(queue, if_empty=True)
        assert refused.value.reply_code == 406
        ch = conn.channel()
        assert ch.queue_delete(queue).method.message_count == 4
        # gone everywhere once delete-ok is in: declaring it again makes a new, empty queue
        assert ch.queue_declare(queue).method.message_count == 0


def test_an_exclusive_queue_is_only_for_its_owner_connection(healthy):
    f1, f2, f3 = healthy
    queue = unique("excl")
    with connect(f1) as owner:
        owner.channel().queue_declare(queue, exclusive=True)
        with connect(f2) as conn:
            def refused() -> bool:
                try:
                    conn.channel().queue_declare(queue, passive=True)
                    return False
                except pika.exceptions.ChannelClosedByBroker as e:
                    return e.reply_code == 405
            wait_for(refused, SEEN_S, what="the exclusive queue locked on another node")
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as locked:
                conn.channel().basic_consume(queue, lambda *_: None)
            assert locked.value.reply_code == 405


def test_single_active_consumer_across_nodes(healthy):
    f1, f2, f3 = healthy
    queue = unique("sac")
    _declare(f1, queue, [f2, f3], arguments={"x-single-active-consumer": True})
    with connect(f2) as first, connect(f3) as second:
        a: list[bytes] = []
        b: list[bytes] = []
        ch_a = first.channel()
        tag_a = ch_a.basic_consume(queue, lambda c, m, _p, body: (a.append(body),
                                                                  c.basic_ack(m.delivery_tag)))
        wait_for(lambda: _counts(f1, queue)[1] == 1, SEEN_S, what="the first consumer")
        ch_b = second.channel()
        ch_b.basic_consume(queue, lambda c, m, _p, body: (b.append(body),
                                                          c.basic_ack(m.delivery_tag)))
        wait_for(lambda: _counts(f1, queue)[1] == 2, SEEN_S, what="the second consumer")
        _publish(f1, queue, [b"1", b"2", b"3"])
        wait_for(lambda: (first.process_data_events(0.05), len(a) == 3)[1], SEEN_S,
                 what="the active consumer's deliveries")
        ch_a.basic_cancel(tag_a)
        _publish(f1, queue, [b"4"])
        wait_for(lambda: (second.process_data_events(0.05), b == [b"4"])[1], SEEN_S,
                 what="the next consumer taking over")
    assert a == [b"1", b"2", b"3"]


# -- nodes going down -------------------------------------------------------------------------
def test_sigkill_of_the_consumers_node_requeues_its_deliveries_at_the_home(healthy):
    f1, f2, f3 = healthy
    queue = unique("consumer-dies")
    _declare(f1, queue, [f2, f3], durable=True)
    _publish(f2, queue, [str(i).encode() for i in range(8)])
    with connect(f3) as conn:  # its node dies under it
        ch = conn.channel()
        ch.basic_qos(prefetch_count=5)
        got: list[bytes] = []
        ch.basic_consume(queue, lambda _c, _m, _p, body: got.append(body))
        wait_for(lambda: (conn.process_data_events(0.05), len(got) == 5)[1], SEEN_S,
                 what="five unacknowledged deliveries")
        f3.stop(signal.SIGKILL)
    wait_for(lambda: _counts(f1, queue) == (8, 0), SEEN_S, what="requeued at the home")
    with connect(f1) as c1:
        ch1 = c1.channel()
        back = [ch1.basic_get(queue, auto_ack=True) for _ in range(8)]
    assert [b for _, _, b in back] == [str(i).encode() for i in range(8)]
    assert [m.redelivered for m, _, _ in back] == [True] * 5 + [False] * 3


def test_sigkill_of_the_home_cancels_consumers_on_other_nodes(healthy):
    f1, f2, f3 = healthy
    queue = unique("home-dies")
    _declare(f1, queue, [f2, f3], durable=True)

    ready, cancelled = threading.Event(), threading.Event()

    def pika_consumer() -> None:  # on f2, in a thread of its own
        with connect(f2) as conn:
            ch = conn.channel()
            ch.add_on_cancel_callback(lambda _frame: cancelled.set())
            ch.basic_consume(queue, lambda *_: None)
            ready.set()
            wait_for(lambda: (conn.process_data_events(0.05), cancelled.is_set())[1], SEEN_S,
                     what="pika's consumer cancelled")

    async def aio_pika_consumer_cancelled() -> str:  # on f3
        conn = await aio_pika.connect(f3.url())
        try:
            channel = await conn.channel()
            got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            underlay = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(
                lambda frame: got.done() or got.set_result(frame.consumer_tag))
            q = await channel.get_queue(queue)

            async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                pass

            tag = await q.consume(ignore)
            await asyncio.to_thread(ready.wait, SEEN_S)
            wait_for(lambda: _counts(f1, queue)[1] == 2, SEEN_S, what="both consumers")
            f1.stop(signal.SIGKILL)
            assert await asyncio.wait_for(got, SEEN_S) == tag
            return tag
        finally:
            await conn.close()

    worker = threading.Thread(target=pika_consumer)
    worker.start()
    try:
        asyncio.run(aio_pika_consumer_cancelled())
    finally:
        worker.join(SEEN_S + 5)
    assert cancelled.is_set()


def test_a_durable_queue_whose_home_is_down_is_refused_and_unroutable(healthy):
    f1, f2, f3 = healthy
    durable, transient = unique("durable"), unique("transient")
    _declare(f1, durable, [f2, f3], durable=True)
    _declare(f1, transient, [f2, f3])
    _publish(f1, durable, [b"kept"])
    f1.stop(signal.SIGKILL)
    wait_cluster([f2, f3], expect_running=[f2.name, f3.name], timeout_s=SEEN_S)
    text = (f"NOT_FOUND - home node '{f1.name}' of durable queue '{durable}' in vhost '/' is "
            "down or inaccessible")
    with connect(f2) as conn:
        for use in (lambda ch: ch.queue_declare(durable, passive=True),
                    lambda ch: ch.queue_declare(durable, durable=True),
                    lambda ch: ch.basic_consume(durable, lambda *_: None),
                    lambda ch: ch.basic_get(durable)):
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                use(conn.channel())
            assert (refused.value.reply_code, refused.value.reply_text) == (404, text)
        # unroutable while down: a mandatory publish comes back, and is confirmed
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.UnroutableError):
            ch.basic_publish("", durable, b"lost", PERSISTENT, mandatory=True)
    # the non-durable queue died with its node (RabbitMQ's on_node_down)
    wait_for(lambda: transient not in {r["name"] for r in listing(f3, "list_queues", "name")},
             SEEN_S, interval_s=0.2, what="the transient queue deleted")

    launch(f1)
    wait_cluster(healthy, timeout_s=SEEN_S)
    wait_for(lambda: _counts(f3, durable) == (1, 0), SEEN_S, what="the queue back, with its "
             "persistent message")
