"""Resource alarms as RabbitMQ's: above the memory watermark publishers get connection.blocked
and are not read from, consumers keep draining; below it again, connection.unblocked."""

from __future__ import annotations

import time

import pika

from tests.support.node import wait_for


def _pump_until(conn: pika.BlockingConnection, predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        conn.process_data_events(time_limit=0.05)


def test_memory_alarm_blocks_publishers_and_consumers_keep_draining(node_factory):
    node = node_factory("alarm")
    publisher = pika.BlockingConnection(pika.URLParameters(node.url()))
    events: list[str] = []
    publisher.add_on_connection_blocked_callback(
        lambda _c, frame: events.append(f"blocked:{frame.method.reason}"))
    publisher.add_on_connection_unblocked_callback(lambda _c, _f: events.append("unblocked"))
    pch = publisher.channel()
    pch.queue_declare("work")
    for i in range(10):
        pch.basic_publish("", "work", f"before-{i}".encode())

    consumer = pika.BlockingConnection(pika.URLParameters(node.url()))
    cch = consumer.channel()
    cch.basic_qos(prefetch_count=1)
    drained: list[bytes] = []

    def on_message(ch, method, _props, body):
        drained.append(body)
        ch.basic_ack(method.delivery_tag)

    r = node.ctl("set_vm_memory_high_watermark", "absolute", "1")
    assert r.returncode == 0, r.stderr
    _pump_until(publisher, lambda: events, 10, "connection.blocked")
    assert events == ["blocked:low on memory"]

    for i in range(5):  # these are buffered, not read, while the alarm is on
        pch.basic_publish("", "work", f"during-{i}".encode())
    publisher.process_data_events(time_limit=0.2)

    cch.basic_consume("work", on_message)
    _pump_until(consumer, lambda: len(drained) >= 10, 10, "the consumer to drain")
    consumer.process_data_events(time_limit=0.3)
    assert drained == [f"before-{i}".encode() for i in range(10)]

    r = node.ctl("set_vm_memory_high_watermark", "0.9")
    assert r.returncode == 0, r.stderr
    _pump_until(publisher, lambda: "unblocked" in events, 10, "connection.unblocked")
    _pump_until(consumer, lambda: len(drained) >= 15, 10, "the blocked publishes")
    assert drained[10:] == [f"during-{i}".encode() for i in range(5)]
    publisher.close()
    consumer.close()


def test_watermark_arguments_are_checked(node_factory):
    node = node_factory("alarm-args")
    r = node.ctl("set_vm_memory_high_watermark", "lots")
    assert r.returncode == 64 and "invalid watermark" in r.stderr
    r = node.ctl("set_disk_free_limit", "50MB")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: node.proc.poll() is None, 1)
