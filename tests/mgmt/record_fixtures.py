"""Record what RabbitMQ's management API and Prometheus plugin answer, as test fixtures.

    python -m tests.mgmt.record_fixtures

starts a private Debian rabbitmq-server node with rabbitmq_management and
rabbitmq_prometheus (tests/support/rabbitmq.py), runs the scenario of scenario.py with an
AMQP consumer connected, and writes fixtures/rabbitmq-3.10-api.json (status codes and JSON
shapes per step) and fixtures/rabbitmq-3.10-metrics.txt (the metric families of /metrics).
The node is stopped and its directory removed afterwards.
"""

from __future__ import annotations

import re
import sys
import tempfile
import urllib.request
from pathlib import Path

import pika

from tests.support.node import wait_for
from tests.support.rabbitmq import start_rabbitmq

from .http import Api, q
from .scenario import dump, run

FIXTURES = Path(__file__).parent / "fixtures"


def metric_families(text: str) -> list[str]:
    return sorted({m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.M)})


def consumer_connection(amqp_url: str) -> pika.BlockingConnection:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.queue_declare("sc-consumed")
    ch.basic_qos(prefetch_count=10)
    ch.basic_consume("sc-consumed", lambda *a: None, consumer_tag="sc-consumer")
    return conn


def placeholders(api: Api, nodename: str, amqp_port: int) -> dict[str, str]:
    conns = wait_for(lambda: api.get("/api/connections").body, 30, 0.25,
                     "the connection to show in the management API")
    wait_for(lambda: api.get("/api/channels").body, 30, 0.25, "the channel to show")
    wait_for(lambda: api.get("/api/consumers").body, 30, 0.25, "the consumer to show")
    return {"node": nodename, "amqp_port": str(amqp_port), "conn": q(conns[0]["name"])}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        node = start_rabbitmq(Path(tmp), management=True)
        try:
            api = Api(f"http://127.0.0.1:{node.mgmt_port}")
            conn = consumer_connection(f"amqp://guest:guest@127.0.0.1:{node.port}/%2F")
            try:
                results = run(api, placeholders(api, node.nodename, node.port))
            finally:
                conn.close()
            with urllib.request.urlopen(f"http://127.0.0.1:{node.prometheus_port}/metrics",
                                        timeout=30) as resp:
                families = metric_families(resp.read().decode())
        finally:
            node.stop()
    FIXTURES.mkdir(exist_ok=True)
    (FIXTURES / "rabbitmq-3.10-api.json").write_text(dump(results))
    (FIXTURES / "rabbitmq-3.10-metrics.txt").write_text("\n".join(families) + "\n")
    print(f"recorded {len(results)} steps and {len(families)} metric families", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
