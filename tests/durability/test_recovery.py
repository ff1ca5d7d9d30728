"""Recovery never refuses to start: a torn tail or a corrupt record costs that record and
what follows it, every whole record before it is kept, and the log says what was dropped."""

from __future__ import annotations

import signal
from pathlib import Path

import pika
import pytest

from tests.support.node import Node

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def _publish(node: Node, bodies: list[bytes]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    for body in bodies:
        ch.basic_publish("", "q", body, PERSISTENT)
    conn.close()


def _bodies(node: Node) -> list[bytes]:
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    got = []
    while True:
        method, _, body = ch.basic_get("q", auto_ack=True)
        if method is None:
            break
        got.append(body)
    conn.close()
    return got


def _last_segment(node: Node) -> Path:
    segments = sorted((node.data_dir / "wal").glob("*.wal"))
    assert segments, "no log segment written"
    return segments[-1]


def _record_offset(data: bytes, marker: bytes) -> int:
    at = data.rfind(marker)
    assert at > 0
    return at


@pytest.mark.parametrize("damage", ["torn tail", "flipped bit", "garbage appended"])
def test_damaged_log_keeps_every_whole_record_before_the_damage(node_factory, damage):
    node = node_factory("damaged")
    bodies = [f"message-{i:03d}".encode() for i in range(50)]
    _publish(node, bodies)
    node.stop(signal.SIGKILL)
    segment = _last_segment(node)
    data = segment.read_bytes()
    if damage == "torn tail":
        cut = _record_offset(data, b"message-049") + 5
        segment.write_bytes(data[:cut])
        expected = bodies[:49]
    elif damage == "flipped bit":
        at = _record_offset(data, b"message-040")
        segment.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:])
        expected = bodies[:40]
    else:
        segment.write_bytes(data + b"\x00\x00\x10\x00garbage-that-is-no-record")
        expected = bodies

    node = node_factory("damaged")
    assert _bodies(node) == expected
    log = node.log()
    if damage != "garbage appended" or "dropped" in log:
        assert "dropped" in log or "truncat" in log.lower()
    # and the log keeps working after the repair
    _publish(node, [b"after"])
    node.stop(signal.SIGKILL)
    node = node_factory("damaged")
    assert _bodies(node) == [b"after"]
