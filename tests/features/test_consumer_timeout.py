"""The delivery acknowledgement timeout: a consumer that holds a delivery too long is
cancelled with a notification and its deliveries go back to the queue (redelivered); its
channel stays open and a late ack of a timed-out delivery is ignored, not an error. The same
on classic and quorum queues."""

from __future__ import annotations

import time

import pika

from tests.features.conftest import declare_queue


def test_late_consumer_is_cancelled_not_its_channel(tmp_path, node_factory, queue_type):
    conf = tmp_path / "timeout.conf"
    conf.write_text("consumer_timeout = 600\n")
    node = node_factory("timeout", extra_args=["--config-file", str(conf)])
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    declare_queue(ch, queue_type, "jobs")
    ch.basic_publish("", "jobs", b"slow job")
    held = []
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume("jobs", lambda c, m, p, b: held.append(m.delivery_tag))
    deadline = time.monotonic() + 10
    while not cancelled:
        assert time.monotonic() < deadline, "the late consumer was never cancelled"
        conn.process_data_events(time_limit=0.05)
    assert cancelled == [tag] and len(held) == 1
    ch.basic_ack(held[0])  # late: ignored, the channel stays open
    method, props, body = ch.basic_get("jobs", auto_ack=True)
    assert body == b"slow job" and method.redelivered
    if queue_type == "quorum":  # the timed-out delivery counts as a failed one
        assert props.headers == {"x-delivery-count": 1}
    assert ch.is_open
    conn.close()
