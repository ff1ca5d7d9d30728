"""The journal on a real write-ahead log, driven in-process: replay rebuilds metadata (the
metadata Raft group's log) and messages; segment clean-up, after a checkpoint of the
metadata group, loses nothing that is live."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pamqp import commands as C

from warrenmq.config import Config
from warrenmq.core.node import Node
from warrenmq.server.app import App
from warrenmq.store.journal import WalJournal

from .pipe import Pipe

PERSISTENT = C.Basic.Properties(delivery_mode=2)


async def _settle(journal: WalJournal) -> None:
    done = asyncio.get_running_loop().create_future()
    journal.after_sync(lambda: done.set_result(None))
    await asyncio.wait_for(done, 10)


async def _boot(directory: Path, segment_bytes_max: int = 64 * 1024 * 1024
                ) -> tuple[Node, WalJournal, App]:
    app = App(Config(data_dir=str(directory)))
    app.segment_bytes_max = segment_bytes_max
    await app.open_store()
    return app.node, app.journal, app


async def _maintained(journal: WalJournal, timeout_s: float = 10.0) -> None:
    """maintain() until it has nothing left to do: the first call asks the Raft groups for
    a checkpoint when a deletable segment holds their records; a later one deletes up to it."""
    async with asyncio.timeout(timeout_s):
        while True:
            journal.maintain()
            await _settle(journal)
            first = journal.wal.segment_ids()[0]
            if journal.live.get(first, 0) > 0 or first == journal.wal.current_segment():
                return
            if journal.checkpoint_segment and first >= journal.checkpoint_segment:
                return
            await asyncio.sleep(0.01)


async def _drain(p: Pipe, timeout_s: float = 10.0) -> None:
    """Until the connection has handled everything sent (metadata methods wait for their
    command to be applied)."""
    conn = p.conn
    async with asyncio.timeout(timeout_s):
        while conn.parked or conn.buf:
            await asyncio.sleep(0.001)


def test_replay_rebuilds_metadata_and_messages(tmp_path):
    async def scenario() -> None:
        node, journal, app = await _boot(tmp_path)
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
        await _drain(p)
        node.flush()
        await _settle(journal)
        await app.close_store()

        node, journal, app = await _boot(tmp_path)
        q = node.live_queue("/", "q")
        assert [(e[1].size, e[2]) for e in q.ready] == [(2, True), (2, False), (2, False)]
        assert q.record.arguments == {"x-max-length": 10}
        assert node.live_queue("/", "t") is None
        x = node.meta.vhosts["/"].exchanges["x"]
        assert [b.routing_key for b in x.router.bindings] == ["k"]
        assert [node.journal.read_body(e[1]) for e in q.ready] == [b"m0", b"m1", b"m2"]
        await app.close_store()

    asyncio.run(scenario())


def test_segment_cleanup_snapshots_metadata_and_keeps_live_messages(tmp_path):
    async def scenario() -> None:
        node, journal, app = await _boot(tmp_path, segment_bytes_max=4096)
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
        await _drain(p)
        node.flush()
        await _settle(journal)
        before = journal.wal.segment_ids()
        await _maintained(journal)
        after = journal.wal.segment_ids()
        assert len(before) > 5 and len(after) < len(before)
        assert journal.checkpoint_segment > before[0]  # the metadata group checkpointed
        await app.close_store()

        node, journal, app = await _boot(tmp_path, segment_bytes_max=4096)
        assert {"keep", "churn"} <= set(node.meta.vhosts["/"].queues)
        keep = node.live_queue("/", "keep")
        assert [journal.read_body(e[1]) for e in keep.ready] == [b"live"]
        assert node.live_queue("/", "churn").message_count == 0
        assert "guest" in node.meta.users
        await app.close_store()

    asyncio.run(scenario())


def test_paged_transient_bodies_outlive_segment_cleanup_until_consumed(tmp_path):
    async def scenario() -> None:
        node, journal, app = await _boot(tmp_path, segment_bytes_max=4096)
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
        await _drain(p)
        p.read()
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
        await _maintained(journal)  # nothing live: only the current segment remains
        assert journal.wal.segment_ids() == [journal.wal.current_segment()]
        await app.close_store()

    asyncio.run(scenario())


def test_segment_cleanup_keeps_quorum_queue_messages(tmp_path):
    """A checkpoint covers every Raft group: the quorum queue's entries in deleted segments
    live on in its snapshot (machine state and live bodies)."""
    async def scenario() -> None:
        node, journal, app = await _boot(tmp_path, segment_bytes_max=16384)
        p = Pipe(node)
        p.open()
        p.send(1, C.Channel.Open())
        p.send(1, C.Queue.Declare(queue="qq", durable=True,
                                  arguments={"x-queue-type": "quorum"}))
        for _ in range(1000):
            p.publish(1, "", "qq", b"gone" + b"." * 100, properties=PERSISTENT)
        p.send(1, C.Queue.Purge(queue="qq"))
        for i in range(50):
            p.publish(1, "", "qq", b"%03d" % i + b"." * 100, properties=PERSISTENT)
        await _drain(p)
        q = node.live_queue("/", "qq")
        async with asyncio.timeout(10):
            while q.message_count < 50:
                await asyncio.sleep(0.01)
        await _settle(journal)
        await _maintained(journal)
        assert journal.wal.segment_ids()[0] > 1  # the segments of the first entries are gone
        await app.close_store()

        node, journal, app = await _boot(tmp_path, segment_bytes_max=16384)
        q = node.live_queue("/", "qq")
        async with asyncio.timeout(10):
            while q.message_count < 50:
                await asyncio.sleep(0.01)
        p = Pipe(node)
        p.open()
        p.send(1, C.Channel.Open())
        got = []
        for _ in range(50):
            p.send(1, C.Basic.Get(queue="qq", no_ack=True))
            await _drain(p)
            async with asyncio.timeout(10):
                while True:
                    bodies = [f.value[:3] for _, f in p.read()
                              if type(f).__name__ == "ContentBody"]
                    if bodies:
                        got += bodies
                        break
                    await asyncio.sleep(0.001)
        assert got == [b"%03d" % i for i in range(50)]
        await app.close_store()

    asyncio.run(scenario())
