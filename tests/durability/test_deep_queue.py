"""A deep queue keeps its bodies on disk past a threshold: memory stays bounded while
publishing and while consuming, and the messages come back intact and in order."""

from __future__ import annotations

import threading
import time

import pika

from tests.support.node import Node

BODY_BYTES = 4096
COUNT = 40_000  # 160 MiB of bodies
PAGE_BYTES = 8 * 1024 * 1024


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    def __init__(self, node: Node) -> None:
        self.pid = node.proc.pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_deep_queue_memory_stays_bounded(tmp_path, node_factory):
    conf = tmp_path / "deep.conf"
    conf.write_text(f"queue_page_bytes = {PAGE_BYTES}\n")
    node = node_factory("deep", extra_args=["--config-file", str(conf)])
    baseline = _rss_bytes(node.proc.pid)
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    ch.queue_declare("deep")
    pad = b"x" * (BODY_BYTES - 8)
    with PeakRss(node) as publishing:
        for i in range(COUNT):
            ch.basic_publish("", "deep", i.to_bytes(8, "big") + pad)
        deadline = time.monotonic() + 60
        while ch.queue_declare("deep", passive=True).method.message_count < COUNT:
            assert time.monotonic() < deadline, "messages did not all arrive"
            conn.process_data_events(time_limit=0.05)
    with PeakRss(node) as consuming:
        ch.basic_qos(prefetch_count=200)
        expected = 0
        for method, _, body in ch.consume("deep", inactivity_timeout=30):
            assert method is not None, "consumer stalled"
            assert int.from_bytes(body[:8], "big") == expected and body[8:] == pad
            expected += 1
            if expected % 100 == 0 or expected == COUNT:
                ch.basic_ack(method.delivery_tag, multiple=True)
            if expected == COUNT:
                break
        ch.cancel()
    conn.close()
    bodies = COUNT * BODY_BYTES
    # The index costs a few hundred bytes a message; the bodies (160 MiB) must not be held.
    bound = baseline + PAGE_BYTES * 2 + COUNT * 1024 + 48 * 1024 * 1024
    assert publishing.peak < bound < bodies, (publishing.peak, bound, bodies)
    assert consuming.peak < bound, (consuming.peak, bound)
