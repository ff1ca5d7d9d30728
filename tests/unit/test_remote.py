"""Forwarding between nodes, sans I/O: two `Node`s share one metadata log, their
`Remotes` and `Home` sides are joined by an in-memory network that moves each node's
outbox to the other when pumped, and clients talk to them through byte pipes. Every step
is deterministic, so credit (prefetch at the home), held deliveries, cancels racing
deliveries and a link going down can be checked exactly."""

from __future__ import annotations

from pamqp import commands as C

from tests.unit.pipe import Pipe
from warrenmq.config import Config
from warrenmq.core.home import HOME_KINDS, Home
from warrenmq.core.metalog import MetaLog
from warrenmq.core.node import Node
from warrenmq.core.remote import Outbox, RemoteQueue, Remotes

PERSISTENT = C.Basic.Properties(delivery_mode=2)


class SharedLog(MetaLog):
    """Every node applies every command at once, in one order (a Raft group's effect)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def submit(self, node: Node, origin: str, ref: int, command: dict) -> None:
        for n in self.nodes:
            n.committed(command, origin, ref)


class Member:
    def __init__(self, net: Net, name: str) -> None:
        self.name = name
        self.node = Node(Config(nodename=name))
        self.node.meta_log = net.log
        net.log.nodes.append(self.node)
        self.outbox = Outbox(lambda peer: None)
        self.remotes = Remotes(self.node, self.outbox, lambda peer: net.linked(name, peer),
                               token=name)
        self.home = Home(self.node, self.outbox, lambda peer: True, lambda peer: None)
        self.node.on_remote_queue = self.remotes.declared
        self.node.on_queue_gone.append(self.home.queue_gone)


class Net:
    def __init__(self) -> None:
        self.log = SharedLog()
        self.a = Member(self, "a@h")
        self.b = Member(self, "b@h")
        self.members = {m.name: m for m in (self.a, self.b)}
        self.cut: set[frozenset[str]] = set()
        self.a.node.bootstrap()

    def linked(self, x: str, y: str) -> bool:
        return frozenset((x, y)) not in self.cut

    def pump(self) -> None:
        """Carry every outbox to its peer until nothing is left to say."""
        moved = True
        while moved:
            moved = False
            for member in self.members.values():
                for peer in list(member.outbox.batches):
                    batches = member.outbox.take(peer)
                    if not self.linked(member.name, peer):
                        continue
                    moved = True
                    to = self.members[peer]
                    for batch in batches:
                        for item in batch:
                            side = to.home if item[0] in HOME_KINDS else to.remotes
                            side.handle(member.name, item)
                        to.home.end_batch(member.name)

    def link_down(self) -> None:
        self.cut.add(frozenset((self.a.name, self.b.name)))
        for member, other in ((self.a, self.b), (self.b, self.a)):
            member.remotes.peer_down(other.name)
            member.home.peer_down(other.name)

    def link_up(self) -> None:
        self.cut.clear()
        for member, other in ((self.a, self.b), (self.b, self.a)):
            member.home.peer_up(other.name)
            member.remotes.peer_up(other.name)


def client(member: Member, name: str) -> Pipe:
    pipe = Pipe(member.node, name)
    pipe.open()
    pipe.send(1, C.Channel.Open())
    return pipe


def deliveries(frames: list) -> list[tuple[int, bool, bytes]]:
    """(delivery_tag, redelivered, body) of each Basic.Deliver among `frames`."""
    out = []
    for i, (_, f) in enumerate(frames):
        if isinstance(f, C.Basic.Deliver):
            out.append((f.delivery_tag, f.redelivered, frames[i + 2][1].value))
    return out


def of(frames: list, kind: type) -> list:
    return [f for _, f in frames if isinstance(f, kind)]


def setup(queue: str = "q", messages: int = 0, **declare) -> tuple[Net, Pipe, Pipe]:
    net = Net()
    on_a, on_b = client(net.a, "ca"), client(net.b, "cb")
    on_a.send(1, C.Queue.Declare(queue=queue, **declare))
    for i in range(messages):
        on_a.publish(1, "", queue, str(i).encode())
    assert isinstance(net.b.node.live_queue("/", queue), RemoteQueue)
    return net, on_a, on_b


def test_a_remote_consumer_never_gets_more_than_its_prefetch_and_gets_it_in_order():
    net, _, on_b = setup(messages=10)
    on_b.send(1, C.Basic.Qos(prefetch_count=3))
    assert of(on_b.send(1, C.Basic.Consume(queue="q", consumer_tag="t")), C.Basic.ConsumeOk) \
        == []  # consume-ok waits for the home
    net.pump()
    frames = on_b.read()
    assert of(frames, C.Basic.ConsumeOk)
    got = deliveries(frames)
    assert [body for _, _, body in got] == [b"0", b"1", b"2"]
    home_q = net.a.node.live_queue("/", "q")
    assert (home_q.message_count, home_q.unacked) == (7, 3)
    on_b.send(1, C.Basic.Ack(delivery_tag=got[0][0]))
    net.pump()
    more = deliveries(on_b.read())
    assert [body for _, _, body in more] == [b"3"]  # one ack, one more: never four out
    assert (home_q.message_count, home_q.unacked) == (6, 3)


def test_a_global_prefetch_holds_deliveries_beyond_it_until_the_client_acks():
    net = Net()
    on_a, on_b = client(net.a, "ca"), client(net.b, "cb")
    for queue in ("q1", "q2"):
        on_a.send(1, C.Queue.Declare(queue=queue))
        for i in range(5):
            on_a.publish(1, "", queue, f"{queue}-{i}".encode())
    on_b.send(1, C.Basic.Qos(prefetch_count=4, global_=True))
    on_b.send(1, C.Basic.Consume(queue="q1", consumer_tag="t1"))
    on_b.send(1, C.Basic.Consume(queue="q2", consumer_tag="t2"))
    net.pump()
    got = deliveries(on_b.read())
    assert len(got) == 4  # the channel's limit, over both queues
    held = on_b.send(1, C.Basic.Ack(delivery_tag=got[-1][0], multiple=True))
    assert len(deliveries(held)) == 4  # at once: they were waiting here, not at the home
    net.pump()
    assert deliveries(on_b.read()) == []  # and no more than the limit
    # the other two are ready at the home or have come here to wait (held)
    left = [net.a.node.live_queue("/", q).message_count for q in ("q1", "q2")]
    held = [len(s.held) for q in ("q1", "q2")
            for s in net.b.node.live_queue("/", q).subs.values()]
    assert sum(left) + sum(held) == 2


def test_cancel_sends_in_flight_deliveries_back_and_auto_delete_happens_before_cancel_ok():
    net, on_a, on_b = setup(messages=2, auto_delete=True)
    on_b.send(1, C.Basic.Consume(queue="q", consumer_tag="t", no_ack=False))
    net.pump()
    on_b.read()  # consume-ok and both deliveries
    on_a.publish(1, "", "q", b"in flight")
    # the home sends it; the cancel crosses it: it comes back to the queue, not to the client
    frames = on_b.send(1, C.Basic.Cancel(consumer_tag="t"))
    assert of(frames, C.Basic.CancelOk) == []
    net.pump()
    frames = on_b.read()
    assert of(frames, C.Basic.CancelOk) and deliveries(frames) == []
    # its last consumer went: the auto-delete queue is gone on both nodes before cancel-ok
    assert net.a.node.live_queue("/", "q") is None
    assert net.b.node.live_queue("/", "q") is None


def test_acks_nacks_and_gets_are_the_homes():
    net, _, on_b = setup(messages=2, durable=True)
    on_b.send(1, C.Basic.Get(queue="q"))
    net.pump()
    frames = on_b.read()
    (get_ok,) = of(frames, C.Basic.GetOk)
    assert (get_ok.message_count, get_ok.redelivered) == (1, False)
    on_b.send(1, C.Basic.Nack(delivery_tag=get_ok.delivery_tag, requeue=True))
    on_b.send(1, C.Basic.Get(queue="q"))  # ordered after the nack: the same message back
    net.pump()
    (again,) = of(on_b.read(), C.Basic.GetOk)
    assert (again.redelivered, again.message_count) == (True, 1)
    on_b.send(1, C.Basic.Ack(delivery_tag=again.delivery_tag))
    on_b.send(1, C.Queue.Declare(queue="q", passive=True))
    net.pump()
    (ok,) = of(on_b.read(), C.Queue.DeclareOk)
    assert (ok.message_count, ok.consumer_count) == (1, 0)


def test_confirms_wait_for_the_home_and_a_lost_home_nacks_what_it_did_not_confirm():
    net, _, on_b = setup(durable=True)
    on_b.send(1, C.Confirm.Select())
    on_b.read()
    on_b.publish(1, "", "q", b"one", properties=PERSISTENT)
    assert of(on_b.read(), C.Basic.Ack) == []  # not before the home has it
    net.pump()
    assert [a.delivery_tag for a in of(on_b.read(), C.Basic.Ack)] == [1]
    on_b.publish(1, "", "q", b"two", properties=PERSISTENT)
    net.link_down()  # before the home answered
    frames = on_b.read()
    assert [n.delivery_tag for n in of(frames, C.Basic.Nack)] == [2]
    # while the home is down the queue is unroutable: returned (mandatory) and acked
    frames = on_b.publish(1, "", "q", b"three", mandatory=True, properties=PERSISTENT)
    (returned,) = of(frames, C.Basic.Return)
    assert returned.reply_code == 312
    assert [a.delivery_tag for a in of(frames, C.Basic.Ack)] == [3]
    frames = on_b.send(1, C.Queue.Declare(queue="q", passive=True))
    (closed,) = of(frames, C.Channel.Close)
    assert closed.reply_code == 404
    assert closed.reply_text == ("NOT_FOUND - home node 'a@h' of durable queue 'q' in vhost "
                                 "'/' is down or inaccessible")
    net.link_up()
    assert isinstance(net.b.node.live_queue("/", "q"), RemoteQueue)


def test_a_lost_link_cancels_remote_consumers_and_requeues_their_deliveries_at_the_home():
    net, _, on_b = setup(messages=3)
    on_b.send(1, C.Basic.Consume(queue="q", consumer_tag="t"))
    net.pump()
    assert len(deliveries(on_b.read())) == 3
    net.link_down()
    (cancel,) = of(on_b.read(), C.Basic.Cancel)  # consumer_cancel_notify
    assert cancel.consumer_tag == "t"
    home_q = net.a.node.live_queue("/", "q")
    assert (home_q.message_count, home_q.unacked, len(home_q.consumers)) == (3, 0, 0)
    assert all(redelivered for _, _, redelivered in home_q.ready)
    # acks of the old deliveries after the link is back are ignored at the home
    net.link_up()
    on_b.send(1, C.Basic.Ack(delivery_tag=3, multiple=True))
    net.pump()
    assert home_q.message_count == 3


def test_exchange_routing_alternate_exchanges_and_cc_reach_a_remote_queue():
    net, on_a, on_b = setup()
    on_a.send(1, C.Exchange.Declare(exchange="ae", exchange_type="fanout"))
    on_a.send(1, C.Exchange.Declare(exchange="x", exchange_type="direct",
                                    arguments={"alternate-exchange": "ae"}))
    on_a.send(1, C.Exchange.Declare(exchange="t", exchange_type="topic"))
    on_a.send(1, C.Queue.Bind(queue="q", exchange="ae"))
    on_a.send(1, C.Exchange.Bind(destination="x", source="t", routing_key="a.#"))
    on_a.send(1, C.Queue.Bind(queue="q", exchange="x", routing_key="a.b"))
    on_a.send(1, C.Queue.Bind(queue="q", exchange="x", routing_key="cc-key"))
    on_b.send(1, C.Confirm.Select())
    frames = on_b.publish(1, "x", "nothing-bound", b"via the alternate exchange",
                          mandatory=True)
    frames += on_b.publish(1, "t", "a.b", b"via an exchange binding", mandatory=True)
    frames += on_b.publish(1, "x", "other", b"via CC", mandatory=True,
                           properties=C.Basic.Properties(headers={"CC": ["cc-key"]}))
    net.pump()
    frames += on_b.read()
    assert of(frames, C.Basic.Return) == [] and of(frames, C.Basic.Nack) == []
    assert max(a.delivery_tag for a in of(frames, C.Basic.Ack)) == 3
    home_q = net.a.node.live_queue("/", "q")
    assert [e[1].body for e in home_q.ready] == [
        b"via the alternate exchange", b"via an exchange binding", b"via CC"]


def test_a_full_remote_queue_with_reject_publish_nacks_the_publisher():
    net, _, on_b = setup(arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    on_b.send(1, C.Confirm.Select())
    on_b.publish(1, "", "q", b"fits")
    on_b.publish(1, "", "q", b"refused")
    net.pump()
    frames = on_b.read()
    assert [a.delivery_tag for a in of(frames, C.Basic.Ack)] == [1]
    assert [n.delivery_tag for n in of(frames, C.Basic.Nack)] == [2]


def test_consumer_priorities_and_exclusive_consumers_span_nodes():
    net, on_a, on_b = setup()
    on_a.send(1, C.Basic.Consume(queue="q", consumer_tag="low"))
    on_b.send(1, C.Basic.Consume(queue="q", consumer_tag="high",
                                 arguments={"x-priority": 10}))
    net.pump()
    on_b.read()
    on_a.publish(1, "", "q", b"to the highest priority")
    net.pump()
    assert [body for _, _, body in deliveries(on_b.read())] == [b"to the highest priority"]
    # an exclusive consume on a queue that has consumers on another node (only there) is
    # refused by the home
    on_b.send(1, C.Basic.Cancel(consumer_tag="high"))
    net.pump()
    on_b.read()
    frames = on_b.send(1, C.Basic.Consume(queue="q", consumer_tag="x", exclusive=True))
    net.pump()
    (closed,) = of(frames + on_b.read(), C.Channel.Close)
    assert closed.reply_code == 403
    assert closed.reply_text == "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
