"""The cluster harness (tests/support/cluster.py) against real warren-server processes.

What does not need clustering is tested always: naming by cluster port, one shared cookie,
n separate nodes, restart on the same name, ports and data, and that a failed start leaves no
process behind. Forming a cluster needs `warrenctl join_cluster` and `cluster_status`; those
tests run as soon as warrenctl has the commands.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from tests.support.cluster import (
    identity,
    restart,
    running_cluster,
    start_cluster,
    start_nodes,
    stop_cluster,
    wait_cluster,
)
from tests.support.node import Node, wait_for
from warrenmq.cli.ctl import load_commands
from warrenmq.cluster.names import parse

EX_NOPERM = 77  # warrenctl: the node refused our cookie
STATUS_KEYS = {"running_nodes", "disk_nodes", "partitions", "alarms", "listeners", "versions",
               "cluster_name"}

_commands = load_commands()
needs_clustering = pytest.mark.skipif(
    "join_cluster" not in _commands or "cluster_status" not in _commands,
    reason="warrenctl has no join_cluster / cluster_status yet")


def _status(node: Node) -> dict:
    r = node.ctl("status", "--formatter", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _our_processes(tmp: Path) -> list[int]:
    """Live processes whose command line mentions the test's directory: ours, by construction."""
    needle = str(tmp).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _queue_exists(node: Node, queue: str) -> bool:
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404
        return False
    finally:
        if conn.is_open:
            conn.close()


def test_nodes_are_named_by_the_cluster_port_they_listen_on(tmp_path: Path):
    nodes = start_nodes(tmp_path, 3)
    try:
        assert [parse(n.name).name for n in nodes] == ["w1", "w2", "w3"]
        for node in nodes:
            name = parse(node.name)
            assert (name.host, name.port) == ("127.0.0.1", node.ports["dist"])
            assert node.address == node.name
            status = _status(node)  # warrenctl reached it by its name alone
            assert status["node_name"] == node.name
            assert status["pid"] == node.proc.pid
        assert len({n.proc.pid for n in nodes}) == 3
        assert len({n.port for n in nodes}) == 3
        assert len({n.data_dir for n in nodes}) == 3
    finally:
        stop_cluster(nodes)
    assert all(n.proc.poll() is not None for n in nodes)


def test_unjoined_nodes_are_separate_brokers(tmp_path: Path):
    nodes = start_nodes(tmp_path, 2)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(nodes[0].url()))
        conn.channel().queue_declare("only-on-w1")
        conn.close()
        assert _queue_exists(nodes[0], "only-on-w1")
        assert not _queue_exists(nodes[1], "only-on-w1")
    finally:
        stop_cluster(nodes)


def test_every_node_reads_the_one_cookie_and_refuses_another(tmp_path: Path):
    nodes = start_nodes(tmp_path, 3)
    try:
        cookie_files = {n.cookie_file for n in nodes}
        assert cookie_files == {tmp_path / "cluster.cookie"}
        mode = stat.S_IMODE((tmp_path / "cluster.cookie").stat().st_mode)
        assert mode & 0o077 == 0
        stranger = tmp_path / "stranger.cookie"
        stranger.write_text("NOTTHECLUSTERSCOOKIE")
        stranger.chmod(0o400)
        for node in nodes:
            assert _status(node)["node_name"] == node.name
            r = subprocess.run(
                [sys.executable, "-m", "warrenmq.cli.warrenctl", "-n", node.address, "status"],
                env={**os.environ, "WARREN_COOKIE_FILE": str(stranger)},
                capture_output=True, text=True, timeout=60)
            assert r.returncode == EX_NOPERM, r.stderr
            assert "cookie" in r.stderr
    finally:
        stop_cluster(nodes)


def test_restart_keeps_the_name_the_ports_and_the_data(tmp_path: Path):
    (node,) = start_nodes(tmp_path, 1)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(node.url()))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("kept", durable=True)
        ch.basic_publish("", "kept", b"survives", pika.BasicProperties(delivery_mode=2))
        conn.close()
        name, ports, pid = node.name, dict(node.ports), node.proc.pid
        restart(node)
        assert node.proc.pid != pid
        assert node.name == name
        assert (node.ports["dist"], node.ports["amqp"]) == (ports["dist"], ports["amqp"])
        conn = pika.BlockingConnection(pika.URLParameters(node.url()))
        _, _, body = conn.channel().basic_get("kept", auto_ack=True)
        conn.close()
        assert body == b"survives"
    finally:
        stop_cluster([node])


def test_a_failed_start_leaves_no_process_behind(tmp_path: Path):
    # no node serves within 0 s, so the start fails after all three were spawned
    with pytest.raises(TimeoutError):
        start_cluster(tmp_path, 3, timeout_s=0.0)
    assert _our_processes(tmp_path) == []


def test_a_cluster_of_one_needs_no_formation(tmp_path: Path):
    with running_cluster(tmp_path, 1) as nodes:
        assert len(nodes) == 1 and _status(nodes[0])["node_name"] == nodes[0].name
    assert nodes[0].proc.poll() is not None
    assert _our_processes(tmp_path) == []


def _check_formed(nodes: list[Node]) -> None:
    statuses = wait_cluster(nodes, timeout_s=60)
    everyone = {identity(n.name) for n in nodes}
    for node in nodes:
        status = statuses[node.name]
        assert STATUS_KEYS <= status.keys()
        assert {identity(x) for x in status["running_nodes"]} == everyone
        assert {identity(x) for x in status["disk_nodes"]} == everyone
        assert not status["partitions"]
    assert len({statuses[n.name]["cluster_name"] for n in nodes}) == 1
    # metadata is cluster-wide: declared through node 1, visible through every node
    conn = pika.BlockingConnection(pika.URLParameters(nodes[0].url()))
    conn.channel().queue_declare("declared-on-w1", durable=True)
    conn.close()
    for node in nodes:
        wait_for(lambda node=node: _queue_exists(node, "declared-on-w1"), 30,
                 interval_s=0.1, what=f"{node.name} to see the queue declared on w1")


@needs_clustering
def test_join_formation_forms_one_cluster_that_survives_a_restart(tmp_path: Path):
    with running_cluster(tmp_path, 3, "join") as nodes:
        _check_formed(nodes)
        restart(nodes[2])
        wait_cluster(nodes, timeout_s=60)
        assert _queue_exists(nodes[2], "declared-on-w1")
    assert _our_processes(tmp_path) == []


@needs_clustering
def test_classic_config_formation_forms_one_cluster(tmp_path: Path):
    with running_cluster(tmp_path, 3, "classic") as nodes:
        _check_formed(nodes)
    assert _our_processes(tmp_path) == []
