"""warren-plugins and the Prometheus endpoint on a real node: enabling and disabling takes
effect on the running node and persists; --offline edits a stopped node's file; /metrics
uses RabbitMQ's metric names."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.node import Node, wait_for

RABBITMQ_METRICS = set((Path(__file__).parent / "fixtures" /
                        "rabbitmq-3.10-metrics.txt").read_text().split())
# what the RabbitMQ-Overview Grafana dashboard reads
DASHBOARD_METRICS = {
    "rabbitmq_identity_info", "rabbitmq_build_info", "rabbitmq_connections",
    "rabbitmq_channels", "rabbitmq_consumers", "rabbitmq_queues",
    "rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
    "rabbitmq_global_messages_received_total", "rabbitmq_global_messages_routed_total",
    "rabbitmq_global_messages_delivered_total", "rabbitmq_global_messages_acknowledged_total",
    "rabbitmq_global_messages_confirmed_total", "rabbitmq_process_resident_memory_bytes",
    "rabbitmq_resident_memory_limit_bytes", "rabbitmq_disk_space_available_bytes",
    "rabbitmq_disk_space_available_limit_bytes", "rabbitmq_process_open_fds",
    "rabbitmq_process_max_fds", "rabbitmq_global_publishers", "rabbitmq_global_consumers",
}


def plugins_cli(node: Node, *args: str, env: dict | None = None
                ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WARREN_COOKIE_FILE": str(node.cookie_file), **(env or {})}
    return subprocess.run([sys.executable, "-m", "warrenmq.cli.plugins", "-n",
                           f"{node.name}:{node.ports['dist']}", *args], env=full_env,
                          capture_output=True, text=True, timeout=60)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


@pytest.fixture
def node(node_factory) -> Node:
    return node_factory("plug")


def test_management_is_on_by_default_and_toggles_without_restart(node: Node):
    mgmt = f"http://127.0.0.1:{node.ports['mgmt']}/"
    assert http_status(mgmt) == 200
    listed = plugins_cli(node, "list")
    assert listed.returncode == 0, listed.stderr
    assert "[E*] warren_management" in listed.stdout
    assert "[  ] warren_prometheus" in listed.stdout

    off = plugins_cli(node, "disable", "warren_management")
    assert off.returncode == 0, off.stderr
    assert "stopped 1 plugins." in off.stdout
    assert http_status(mgmt) is None  # the listener is gone at once
    assert (node.data_dir / "enabled_plugins").read_text() == "[].\n"

    on = plugins_cli(node, "enable", "rabbitmq_management", "warren_prometheus")
    assert on.returncode == 0, on.stderr
    assert "started 2 plugins." in on.stdout
    assert http_status(mgmt) == 200  # same port as before
    assert (node.data_dir / "enabled_plugins").read_text() == \
        "[warren_management,warren_prometheus].\n"


def test_prometheus_metrics_use_rabbitmq_names(node: Node):
    r = plugins_cli(node, "enable", "warren_prometheus")
    assert r.returncode == 0, r.stderr
    status = plugins_cli(node, "list", "--formatter", "json")
    assert '"running": true' in status.stdout
    port = wait_for(lambda: _ports(node).get("prometheus"), 10, what="the prometheus port")
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    ch.queue_declare("metered")
    for _ in range(20):
        ch.basic_publish("", "metered", b"m")

    def text() -> str | None:
        t = fetch(f"http://127.0.0.1:{port}/metrics")
        return t if "rabbitmq_queue_messages_ready 20" in t else None

    body = wait_for(text, 15, 0.2, what="the published messages in /metrics")
    names = {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")}
    assert names <= RABBITMQ_METRICS, names - RABBITMQ_METRICS
    assert DASHBOARD_METRICS <= names, DASHBOARD_METRICS - names
    assert 'rabbitmq_identity_info{rabbitmq_node="plug@localhost"' in body
    received = [ln for ln in body.splitlines()
                if ln.startswith("rabbitmq_global_messages_received_total ")]
    assert received and int(received[0].split()[1]) >= 20
    per_object = fetch(f"http://127.0.0.1:{port}/metrics/per-object")
    assert 'rabbitmq_queue_messages_ready{vhost="/",queue="metered"} 20' in per_object
    conn.close()


def _ports(node: Node) -> dict:
    import json

    ports_file = node.data_dir.parent / "plug-ports.json"
    return json.loads(ports_file.read_text())


def test_offline_edits_a_stopped_nodes_file(node: Node):
    node.stop()
    env = {"WARREN_DATA_DIR": str(node.data_dir)}
    r = plugins_cli(node, "enable", "--offline", "warren_prometheus", env=env)
    assert r.returncode == 0, r.stderr
    assert "take effect at broker restart" in r.stdout
    assert (node.data_dir / "enabled_plugins").read_text() == \
        "[warren_management,warren_prometheus].\n"
    r = plugins_cli(node, "disable", "--offline", "--data-dir", str(node.data_dir),
                    "warren_management")
    assert r.returncode == 0, r.stderr
    listed = plugins_cli(node, "list", "--offline", "--data-dir", str(node.data_dir))
    assert "[E ] warren_prometheus" in listed.stdout and "[  ] warren_management" in \
        listed.stdout


def test_bad_input_and_a_stopped_node_fail_clearly(node: Node):
    r = plugins_cli(node, "enable", "warren_nonsense")
    assert r.returncode == 65 and "plugin(s) not found: warren_nonsense" in r.stderr
    r = plugins_cli(node, "frobnicate")
    assert r.returncode == 64 and "invalid choice" in r.stderr
    node.stop()
    r = plugins_cli(node, "list")
    assert r.returncode == 69 and "not running" in r.stderr
    (node.data_dir / "enabled_plugins").write_text("warren_management\n")
    r = plugins_cli(node, "list", "--offline", "--data-dir", str(node.data_dir))
    assert r.returncode == 65 and "expected an Erlang list" in r.stderr
