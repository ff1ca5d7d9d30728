"""The reference: a private 3-node RabbitMQ cluster, formed with rabbitmqctl join_cluster.

Also pins down what `rabbitmqctl cluster_status --formatter json` answers, the shape the
WarrenMQ cluster harness expects of `warrenctl cluster_status`.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pika
import pytest

from tests.support.rabbitmq import (
    RABBITMQ_SERVER,
    _marked_pids,
    rabbitmq_cluster_status,
    rabbitmq_installed,
    start_rabbitmq_cluster,
)

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.skipif(not rabbitmq_installed(),
                       reason=f"RabbitMQ is not installed ({RABBITMQ_SERVER} or erl missing)"),
]


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except OSError:
        return True


@pytest.mark.timeout(300)
def test_three_rabbitmq_nodes_form_one_cluster_and_stop_without_strays(tmp_path: Path):
    cluster = start_rabbitmq_cluster(tmp_path, 3)
    with cluster:
        names = sorted(node.nodename for node in cluster)
        assert len(set(names)) == 3
        assert len({node.port for node in cluster}) == 3
        status = rabbitmq_cluster_status(cluster[2])
        assert {"running_nodes", "disk_nodes", "partitions", "alarms", "listeners",
                "versions", "cluster_name"} <= status.keys()
        assert sorted(status["running_nodes"]) == names
        assert sorted(status["disk_nodes"]) == names
        assert status["partitions"] == {}
        for node in cluster:
            ports = {(x["protocol"], x["port"]) for x in status["listeners"][node.nodename]}
            assert {("clustering", node.dist_port), ("amqp", node.port)} <= ports
        # a queue declared through node 1 is served through node 3
        conn = pika.BlockingConnection(pika.URLParameters(cluster[0].url()))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("declared-on-n1")
        ch.basic_publish("", "declared-on-n1", b"across")
        conn.close()
        conn = pika.BlockingConnection(pika.URLParameters(cluster[2].url()))
        _, _, body = conn.channel().basic_get("declared-on-n1", auto_ack=True)
        conn.close()
        assert body == b"across"
    assert cluster.epmd.poll() is not None
    for marker in [cluster.marker, *(node.marker for node in cluster)]:
        assert _marked_pids(marker) == []
    assert all(_refuses(node.port) for node in cluster)
