"""The journal on a real write-ahead log, driven in-process: replay rebuilds metadata and
messages; segment clean-up with a metadata snapshot loses nothing that is live."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pamqp import commands as C

from warrenmq.config import Config
from warrenmq.core.node import Node
from warrenmq.store.journal import WalJournal

from .pipe import Pipe

PERSISTENT = C.Basic.Properties(delivery_mode=2)


async def _settle(journal: WalJournal) -> None:
    done = asyncio.get_running_loop().create_future()
    journal.after_sync(lambda: done.set_result(None))
    await asyncio.wait_for(done, 10)


def _boot(directory: Path, segment_bytes_max: int = 64 * 1024 * 1024) -> tuple[Node, WalJournal]:
    journal = WalJournal(directory, asyncio.get_running_loop(),
                         segment_bytes_max=segment_bytes_max)
    node = Node(Config(), journal)
    if not journal.recover(node):
        node.bootstrap()
    node.remove_transient()
    return node, journal


def test_replay_rebuilds_metadata_and_messages(tmp_path):
    async def scenario() -> None:
        node, journal = _boot(tmp_path)
        p = Pipe(node)
        p.open()
        p.send(1, C.Channel.Open())
        p.send(1, C.Exchange.Declare(exchange="x", exchange_type="direct", durable=True))
        p.send(1, C.Queue.Declare(queue="q", durable=True, arguments={"x-max-length": 10}))
        p.send(1, C.Queue.Bind(queue="q", exchange="x", routing_key="k"))
        p.send(1, C.Queue.Declare(queue="t"))
        for i in range(3):
            p.publish(1, "x", "k", b"m%d" % i, properties=PERSISTENT)
        p.publish(1, "x", "k", b"transient")
        p.send(1, C.Basic.Get(queue="q"))  # m0 out, unacked
        node.flush()
        await _settle(journal)
        journal.close()

        node, journal = _boot(tmp_path)
        q = node.live_queue("/", "q")
        assert [(e[1].size, e[2]) for e in q.ready] == [(2, True), (2, False), (2, False)]
        assert q.record.arguments == {"x-max-length": 10}
        assert node.live_queue("/", "t") is None
        x = node.meta.vhosts["/"].exchanges["x"]
        assert [b.routing_key for b in x.router.bindings] == ["k"]
        assert [node.journal.read_body(e[1]) for e in q.ready] == [b"m0", b"m1", b"m2"]
        journal.close()

    asyncio.run(scenario())


def test_segment_cleanup_snapshots_metadata_and_keeps_live_messages(tmp_path):
    async def scenario() -> None:
        node, journal = _boot(tmp_path, segment_bytes_max=4096)
        p = Pipe(node)
        p.open()
        p.send(1, C.Channel.Open())
        p.send(1, C.Queue.Declare(queue="keep", durable=True))
        p.send(1, C.Queue.Declare(queue="churn", durable=True))
        p.publish(1, "", "keep", b"pinned-early", properties=PERSISTENT)
        p.send(1, C.Basic.Get(queue="keep", no_ack=True))  # acked: its segment can go
        for _ in range(200):
            p.publish(1, "", "churn", b"c" * 200, properties=PERSISTENT)
            p.send(1, C.Basic.Get(queue="churn", no_ack=True))
            node.flush()
        p.publish(1, "", "keep", b"live", properties=PERSISTENT)
        node.flush()
        await _settle(journal)
        before = journal.wal.segment_ids()
        journal.maintain()
        await _settle(journal)
        after = journal.wal.segment_ids()
        assert len(before) > 5 and len(after) < len(before)
        assert (tmp_path / "meta.snapshot").exists()
        journal.close()

        node, journal = _boot(tmp_path, segment_bytes_max=4096)
        assert {"keep", "churn"} <= set(node.meta.vhosts["/"].queues)
        keep = node.live_queue("/", "keep")
        assert [journal.read_body(e[1]) for e in keep.ready] == [b"live"]
        assert node.live_queue("/", "churn").message_count == 0
        assert "guest" in node.meta.users
        journal.close()

    asyncio.run(scenario())


def test_paged_transient_bodies_outlive_segment_cleanup_until_consumed(tmp_path):
    async def scenario() -> None:
        node, journal = _boot(tmp_path, segment_bytes_max=4096)
        node.config.queue_page_bytes = 1000
        p = Pipe(node)
        p.open()
        p.send(1, C.Channel.Open())
        p.send(1, C.Queue.Declare(queue="a"))
        p.send(1, C.Queue.Declare(queue="b"))
        p.send(1, C.Exchange.Declare(exchange="fan", exchange_type="fanout"))
        p.send(1, C.Queue.Bind(queue="a", exchange="fan"))
        p.send(1, C.Queue.Bind(queue="b", exchange="fan"))
        for i in range(60):
            p.publish(1, "fan", "", b"%03d" % i + b"." * 300)
        node.flush()
        await _settle(journal)
        assert len(journal.wal.segment_ids()) > 2
        journal.maintain()  # every page is still referenced by both queues
        got = [f.value[:3] for _, f in p.send(1, *[C.Basic.Get(queue="a", no_ack=True)] * 60)
               if type(f).__name__ == "ContentBody"]
        assert got == [b"%03d" % i for i in range(60)]
        journal.maintain()  # queue b still holds every message
        got = [f.value[:3] for _, f in p.send(1, *[C.Basic.Get(queue="b", no_ack=True)] * 60)
               if type(f).__name__ == "ContentBody"]
        assert got == [b"%03d" % i for i in range(60)]
        node.flush()
        await _settle(journal)
        journal.maintain()  # nothing live: only the current segment remains
        assert journal.wal.segment_ids() == [journal.wal.current_segment()]
        journal.close()

    asyncio.run(scenario())
