"""PeerLinks between real nodes on loopback: three in this process (each with its own
ControlServer on an ephemeral port), and one in a child process for the tests that must
stop a peer's whole process (SIGSTOP)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from warrenmq.cluster.control import (
    CommandError,
    ControlServer,
    call_async,
    open_async,
)
from warrenmq.cluster.links import PeerLinks, PeerUnavailable, RemoteError
from warrenmq.cluster.names import NodeName

from .support import COOKIE, Book, LinkNode, free_port, wait_until

FAST = {"ping_interval_s": 0.1, "dead_after_s": 2.0, "backoff_max_s": 0.3}


@pytest.fixture
async def trio():
    book: Book = {}
    nodes = [LinkNode(f"{n}@test", i + 1, book, **FAST) for i, n in enumerate("abc")]
    for node in nodes:
        await node.start()
    yield nodes
    for node in nodes:
        await node.stop()


async def linked(src: LinkNode, dst: LinkNode) -> None:
    src.links.connect(dst.name)
    await wait_until(lambda: dst.name in src.links.peers_up(), f"{src.name} -> {dst.name} up")


async def test_one_way_messages_keep_their_order_per_peer(trio) -> None:
    a, b, c = trio
    got: list[tuple[str, int]] = []
    b.links.on("seq", lambda peer, n: got.append((peer, n)))
    assert not a.links.send(b.name, "seq", 0)  # no link yet: refused, not queued
    await linked(a, b)
    await linked(c, b)
    writes_before = _peer_info(a, b)["writes"]
    for i in range(3000):
        assert a.links.send(b.name, "seq", i)
        assert c.links.send(b.name, "seq", i)
    await wait_until(lambda: len(got) == 6000, "6000 messages at b")
    assert [n for peer, n in got if peer == a.name] == list(range(3000))
    assert [n for peer, n in got if peer == c.name] == list(range(3000))
    # Coalesced: 3000 sends in one loop turn went out in one write (pings aside).
    assert _peer_info(a, b)["writes"] - writes_before <= 3
    assert b.links.unhandled == 0


async def test_a_message_sent_now_leaves_with_what_was_queued_before_it(trio) -> None:
    a, b, _ = trio
    got: list[int] = []
    b.links.on("seq", lambda peer, n: got.append(n))
    await linked(a, b)
    writes_before = _peer_info(a, b)["writes"]
    assert a.links.send(b.name, "seq", 1)
    assert a.links.send(b.name, "seq", 2, now=True)
    # written in this call, both frames in one write, not at the end of the loop turn
    assert _peer_info(a, b)["writes"] == writes_before + 1
    assert a.links.send(b.name, "seq", 3)
    assert _peer_info(a, b)["writes"] == writes_before + 1
    await wait_until(lambda: got == [1, 2, 3], "the three messages at b, in order")
    assert _peer_info(a, b)["writes"] >= writes_before + 2  # the third at the turn's end


def _peer_info(node: LinkNode, peer: LinkNode) -> dict:
    return next(d for d in node.links.describe() if d["node"] == peer.name)


async def test_request_reply_and_errors_travel_back_on_the_same_connection(trio) -> None:
    a, b, _ = trio
    release = asyncio.Event()

    async def add(peer: str, payload: list[int]) -> dict:
        return {"sum": sum(payload), "from": peer}

    async def slow(peer: str, payload: object) -> str:
        await release.wait()
        return "slow"

    async def refuse(peer: str, payload: object) -> None:
        raise CommandError("queue 'q' does not exist", 69)

    async def crash(peer: str, payload: object) -> None:
        raise ValueError("bad payload")

    b.links.on_request("add", add)
    b.links.on_request("slow", slow)
    b.links.on_request("refuse", refuse)
    b.links.on_request("crash", crash)
    await linked(a, b)
    assert await a.links.request(b.name, "add", [1, 2, 39]) == {"sum": 42, "from": a.name}
    # b never dialled a: the replies came back on a's connection.
    assert b.links.peers_up() == set()

    slow_reply = asyncio.create_task(a.links.request(b.name, "slow", None))
    many = await asyncio.gather(*(a.links.request(b.name, "add", [i]) for i in range(50)))
    assert [r["sum"] for r in many] == list(range(50))  # answered while "slow" waits
    release.set()
    assert await slow_reply == "slow"

    with pytest.raises(RemoteError) as info:
        await a.links.request(b.name, "refuse", None)
    assert str(info.value) == "queue 'q' does not exist" and info.value.exit_status == 69
    with pytest.raises(RemoteError, match="ValueError: bad payload"):
        await a.links.request(b.name, "crash", None)
    with pytest.raises(RemoteError, match="no handler for requests of kind 'nope'"):
        await a.links.request(b.name, "nope", None)
    release.clear()
    with pytest.raises(TimeoutError, match="did not answer 'slow' within 0.2s"):
        await a.links.request(b.name, "slow", None, timeout_s=0.2)
    release.set()
    # The link survived all of that.
    assert await a.links.request(b.name, "add", [2]) == {"sum": 2, "from": a.name}


async def test_a_request_to_a_dead_peer_says_why(trio) -> None:
    a, b, _ = trio
    with pytest.raises(PeerUnavailable, match="connect\\(\\) it first"):
        await a.links.request(b.name, "x", None)

    a.book["ghost@test"] = ("127.0.0.1", free_port())
    a.links.connect("ghost@test")
    with pytest.raises(PeerUnavailable) as info:
        await a.links.request("ghost@test", "x", None)
    assert "connection refused on 127.0.0.1" in str(info.value)
    assert info.value.peer == "ghost@test"

    # The default resolver: a host that does not resolve says so.
    lone = PeerLinks("lone@localhost", 9, COOKIE)
    await lone.start()
    try:
        lone.connect("x@no-such-host.invalid")
        with pytest.raises(PeerUnavailable, match="host 'no-such-host.invalid' does not resolve"):
            await lone.request("x@no-such-host.invalid", "x", None)
    finally:
        await lone.stop()

    # Lost after the request went out: the caller hears it, with the reason.
    started = asyncio.Event()

    async def hang(peer: str, payload: object) -> None:
        started.set()
        await asyncio.Event().wait()

    b.links.on_request("hang", hang)
    await linked(a, b)
    pending = asyncio.create_task(a.links.request(b.name, "hang", None, timeout_s=10))
    await asyncio.wait_for(started.wait(), 5)
    await b.stop()
    with pytest.raises(PeerUnavailable, match="lost before the reply"):
        await pending
    with pytest.raises(PeerUnavailable, match="link was lost|connection refused"):
        await a.links.request(b.name, "hang", None)
    await b.start()  # for the fixture's teardown


async def test_a_wrong_cookie_is_refused_on_both_sides(trio, caplog) -> None:
    a, _, _ = trio
    intruder = LinkNode("intruder@test", 7, a.book, cookie="SOMEOTHERCOOKIEVALUE", **FAST)
    await intruder.start()
    caplog.set_level(logging.WARNING, logger="warrenmq.control")
    try:
        intruder.links.connect(a.name)
        a.links.connect(intruder.name)
        for src, dst in ((intruder, a), (a, intruder)):
            with pytest.raises(PeerUnavailable) as info:
                await src.links.request(dst.name, "x", None)
            assert "cookie mismatch" in info.value.reason
            assert f"node {dst.name} refused authentication" in info.value.reason
        # Each server logged the refusal of the other's dial.
        refusals = [r.getMessage() for r in caplog.records if "cookie mismatch" in r.getMessage()]
        assert len(refusals) >= 2
        assert a.links.peers_up() == set() and intruder.links.peers_up() == set()
    finally:
        await intruder.stop()


async def test_a_link_needs_a_running_app(trio) -> None:
    a, _, _ = trio
    # A node whose app is stopped: the control server runs, with no link handler.
    server = ControlServer("stopped@test", COOKIE, _status)
    port = await server.start("127.0.0.1", 0)
    a.book["stopped@test"] = ("127.0.0.1", port)
    try:
        a.links.connect("stopped@test")
        with pytest.raises(PeerUnavailable, match="does not accept cluster links now"):
            await a.links.request("stopped@test", "x", None)
        # Control requests on that port are unaffected.
        reader, writer = await open_async(NodeName("stopped", "127.0.0.1", port), COOKIE)
        assert await call_async(reader, writer, "status") == {"ok": True}
        writer.close()
        # And a node that does accept links still answers control requests too.
        reader, writer = await open_async(NodeName("b", "127.0.0.1", trio[1].port), COOKIE)
        with pytest.raises(RemoteError, match="no control command"):
            await call_async(reader, writer, "status")
        writer.close()
    finally:
        a.links.disconnect("stopped@test")
        await server.close()


async def _status(cmd: str, args: dict) -> dict:
    return {"ok": True}


async def test_reconnect_after_the_peer_restarts(trio) -> None:
    a, b, _ = trio
    events: list[tuple[str, str]] = []
    a.links.on_peer_up(lambda n: events.append(("up", n)))
    a.links.on_peer_down(lambda n: events.append(("down", n)))
    await linked(a, b)
    await b.restart()  # fresh links, and a new port (the address book follows)
    await wait_until(lambda: events.count(("up", b.name)) == 2, "a relinked to the new b")
    assert events[:3] == [("up", b.name), ("down", b.name), ("up", b.name)]
    got: list[int] = []
    b.links.on("n", lambda peer, n: got.append(n))
    assert a.links.send(b.name, "n", 1)
    await wait_until(lambda: got == [1], "a message over the new link")


async def test_idle_links_ping_and_stay_up(trio) -> None:
    a, b, _ = trio
    downs: list[str] = []
    a.links.on_peer_down(downs.append)
    await linked(a, b)
    first = _peer_info(b, a)["frames_in"]
    # With no traffic at all, pings keep arriving (every 0.1 s here) ...
    await wait_until(lambda: _peer_info(b, a)["frames_in"] >= first + 25, "25 pings at b")
    # ... so 2.5 s of silence from the application did not kill a 2 s dead_after link.
    assert downs == [] and b.name in a.links.peers_up()


async def test_cut_and_heal(trio) -> None:
    a, b, c = trio
    for src in trio:
        for dst in trio:
            if src is not dst:
                src.links.connect(dst.name)
    await wait_until(lambda: all(len(n.links.peers_up()) == 2 for n in trio), "full mesh")
    a.links.cut(b.name)
    assert b.name not in a.links.peers_up()
    await wait_until(lambda: a.name not in b.links.peers_up(), "b lost its link to a")
    with pytest.raises(PeerUnavailable, match="cut"):
        await a.links.request(b.name, "x", None)
    # b keeps dialling a, and a keeps refusing it.
    await wait_until(lambda: "the link is cut" in b.links.last_error(a.name), "b refused")
    assert not b.links.send(a.name, "x", 1)
    assert {a.name, b.name} <= c.links.peers_up() and c.name in a.links.peers_up()
    a.links.heal(b.name)
    await wait_until(lambda: all(len(n.links.peers_up()) == 2 for n in trio), "mesh healed")


# -- a peer in another process ------------------------------------------------------------
class ChildPeer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> ChildPeer:
        script = Path(__file__).with_name("peer_process.py")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), self.name, "42", COOKIE,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        assert line.startswith(b"PORT "), line
        self.port = int(line.split()[1])
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.signal(signal.SIGCONT)
        self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def child():
    peer = await ChildPeer("child@test").start()
    yield peer
    await peer.stop()


async def test_a_stopped_peer_is_declared_dead_by_silence(child) -> None:
    book: Book = {child.name: ("127.0.0.1", child.port)}
    a = await LinkNode("a@test", 1, book, ping_interval_s=0.1, dead_after_s=1.0,
                       connect_timeout_s=0.5, backoff_max_s=0.3).start()
    try:
        downs: list[str] = []
        a.links.on_peer_down(downs.append)
        await linked(a, child)
        assert (await a.links.request(child.name, "echo", 1))["echo"] == 1
        child.signal(signal.SIGSTOP)
        # Its kernel keeps the TCP connection open: only the silence gives it away.
        await wait_until(lambda: downs == [child.name], "the stopped peer declared down", 8)
        assert "declared dead" in a.links.last_error(child.name)
        with pytest.raises(PeerUnavailable):
            await a.links.request(child.name, "echo", 2, timeout_s=0.5)
        child.signal(signal.SIGCONT)
        await wait_until(lambda: child.name in a.links.peers_up(), "relinked after SIGCONT")
        assert (await a.links.request(child.name, "echo", 3))["echo"] == 3
    finally:
        await a.stop()


async def test_back_pressure_when_the_peer_does_not_read(child) -> None:
    book: Book = {child.name: ("127.0.0.1", child.port)}
    a = await LinkNode("a@test", 1, book, write_buffer_high_bytes=256 * 1024).start()
    try:
        await linked(a, child)
        child.signal(signal.SIGSTOP)
        blob = b"x" * 65536
        sent = 0
        # The peer's and our kernel buffers fill first; then our own buffer passes the mark.
        while a.links.writable(child.name):
            assert a.links.send(child.name, "blob", blob)
            sent += 1
            await asyncio.sleep(0)
            assert sent < 2000, "the link never reported back-pressure"
        drained = asyncio.create_task(a.links.drain(child.name))
        await asyncio.sleep(0.05)
        assert not drained.done()  # nobody reads: the writer waits
        child.signal(signal.SIGCONT)
        await asyncio.wait_for(drained, 10)
        assert a.links.writable(child.name)
        # Nothing was lost on the way: the child saw every blob (they precede the request).
        reply = await a.links.request(child.name, "echo", None)
        assert reply["blobs"] == sent
    finally:
        await a.stop()
