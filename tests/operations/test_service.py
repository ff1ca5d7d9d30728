"""The service: `warren-server -detached` (daemon, pid file, log file), the config file's new
keys and their validation, and policies computed over the metadata machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.support.node import wait_for
from warrenmq.meta import policies
from warrenmq.meta.machine import MetaMachine

from .conftest import Ctl


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_detached_daemonises_with_pid_and_log_files(tmp_path, cookie_file):
    data, logs, ports = tmp_path / "data", tmp_path / "logs", tmp_path / "ports.json"
    r = subprocess.run([sys.executable, "-m", "warrenmq.cli.server", "-detached",
                        "--nodename", "daemon@localhost", "--bind", "127.0.0.1",
                        "--node-port", "0", "--dist-port", "0", "--data-dir", str(data),
                        "--log-dir", str(logs), "--ports-file", str(ports)],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr  # returns once the daemon serves
    pid = int((data / "warren.pid").read_text())
    try:
        assert _alive(pid) and ports.exists()
        log = logs / "daemon@localhost.log"
        assert "Server startup complete" in log.read_text()
        ctl = Ctl(f"daemon@localhost:{json.loads(ports.read_text())['dist']}",
                  cookie_file)
        status = ctl.ok("status")
        assert f"OS PID: {pid}" in status and str(log) in status
        ctl.ok("stop")
        wait_for(lambda: not _alive(pid), 15, what="the daemon to exit")
        assert not (data / "warren.pid").exists()
        assert "stopped" in log.read_text()
    finally:
        if _alive(pid):
            os.kill(pid, 9)


def test_detached_start_failure_is_reported_by_the_launcher(tmp_path, cookie_file):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "warrenmq.cli.server", "-detached",
                            "--bind", "127.0.0.1", "--node-port", str(port), "--dist-port", "0",
                            "--data-dir", str(tmp_path / "d"), "--log-dir", str(tmp_path / "l")],
                           capture_output=True, text=True, timeout=90)
    assert r.returncode == 1
    assert "the node did not start" in r.stderr and str(port) in r.stderr
    assert "start-up failed" in (tmp_path / "l" / f"{_default_name()}.log").read_text()


def _default_name() -> str:
    from warrenmq.config import default_nodename

    return default_nodename()


@pytest.mark.parametrize("text, message", [
    ("vm_memory_high_watermark.relative = 1.5\n", "invalid value '1.5' for "
     "'vm_memory_high_watermark.relative'"),
    ("disk_free_limit.absolute = lots\n", "invalid value 'lots' for 'disk_free_limit.absolute'"),
    ("log.file.level = chatty\n", "invalid value 'chatty' for 'log.file.level'"),
    ("cluster_formation.classic_config.nodes.1 = not a node\n",
     "invalid value 'not a node' for 'cluster_formation.classic_config.nodes.1'"),
    ("heartbeat = 5\nlog.console = maybe\n", "warren.conf:2: invalid value 'maybe' for "
     "'log.console'"),
    ("management.tcp.port = 70000\n", "invalid value '70000' for 'management.tcp.port'"),
])
def test_new_config_keys_are_validated_with_file_and_line(tmp_path, text, message):
    conf = tmp_path / "warren.conf"
    conf.write_text(text)
    r = subprocess.run([sys.executable, "-m", "warrenmq.cli.server", "--config-file", str(conf),
                        "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_the_example_config_is_valid():
    from pathlib import Path

    from warrenmq.config import load

    example = Path(__file__).parent.parent.parent / "packaging" / "warren.conf.example"
    cfg = load({"config_file": str(example)}, environ={})
    assert cfg.cluster_nodes == ("warren@node1", "warren@node2", "warren@node3")
    assert cfg.disk_free_limit_absolute == 2 * 1000**3


def _meta_with(*pols: tuple[str, str, str, int]) -> MetaMachine:
    m = MetaMachine()
    m.apply({"op": "vhost.add", "name": "/"})
    for name, pattern, apply_to, priority in pols:
        m.apply({"op": "policy.set", "vhost": "/", "name": name, "pattern": pattern,
                 "definition": {"max-length": priority}, "priority": priority,
                 "apply_to": apply_to})
    return m


def test_effective_policy_highest_priority_wins_and_apply_to_filters():
    m = _meta_with(("all-low", ".*", "all", 0), ("q-high", "^orders", "queues", 5),
                   ("x-only", "^orders", "exchanges", 9))
    assert policies.effective_policy(m, "/", "queue", "orders.eu").name == "q-high"
    assert policies.effective_policy(m, "/", "exchange", "orders").name == "x-only"
    assert policies.effective_policy(m, "/", "queue", "billing").name == "all-low"
    assert policies.effective_value(m, "/", "queue", "orders.eu", "max-length") == 5
    assert policies.effective_policy(m, "nope", "queue", "orders") is None


def test_effective_policy_ties_go_to_the_first_name():
    m = _meta_with(("b", "q", "all", 1), ("a", "q", "all", 1))
    assert policies.effective_policy(m, "/", "queue", "q").name == "a"


@pytest.mark.parametrize("definition", [
    {"ha-mode": "all"}, {"ha-mode": "exactly", "ha-params": 2},
    {"ha-mode": "nodes", "ha-params": ["warren@a"], "ha-sync-mode": "automatic"},
    {"message-ttl": 0, "expires": 1, "max-length": 0, "max-length-bytes": 10,
     "overflow": "reject-publish-dlx", "dead-letter-exchange": "dlx",
     "dead-letter-routing-key": "k", "alternate-exchange": "ae"},
])
def test_valid_definitions(definition):
    policies.validate("^x", definition, 0, "all")


@pytest.mark.parametrize("definition, message", [
    ({}, "no policy provided"),
    ([], "definition must be a dictionary"),
    ({"ha-mode": "all", "ha-params": 2}, 'ha-mode="all" does not take parameters'),
    ({"ha-mode": "nodes", "ha-params": []}, 'ha-mode="nodes" takes a list of strings'),
    ({"ha-sync-mode": "automatic"}, "ha-mode must be specified"),
    ({"ha-mode": "all", "ha-sync-mode": "eventually"}, 'ha-sync-mode must be "manual"'),
    ({"expires": 0}, "0 is not a valid queue expiry"),
    ({"max-length": "a"}, '"a" is not a valid maximum length'),
    ({"overflow": "x"}, '"x" is not a valid overflow value'),
    ({"alternate-exchange": 1}, "1 is not a valid alternate exchange name"),
])
def test_invalid_definitions(definition, message):
    with pytest.raises(policies.PolicyError, match=None) as e:
        policies.validate("^x", definition, 0, "all")
    assert message in str(e.value)


def test_policies_survive_a_restart(node_factory, cookie_file):
    node = node_factory("durable")
    ctl = Ctl(f"durable@localhost:{node.ports['dist']}", cookie_file)
    ctl.ok("set_policy", "--priority", "4", "p", "^q", '{"message-ttl":1000}')
    ctl.ok("add_vhost", "kept")
    ctl.ok("set_topic_permissions", "guest", "amq.topic", "^a", "^b")
    node.stop()
    node = node_factory("durable")
    ctl = Ctl(f"durable@localhost:{node.ports['dist']}", cookie_file)
    assert ctl.ok("-q", "list_policies").splitlines()[1] == '/\tp\t^q\tall\t{"message-ttl":1000}\t4'
    assert "kept" in ctl.ok("list_vhosts")
    assert "guest\tamq.topic\t^a\t^b" in ctl.ok("list_topic_permissions")
