"""The warren-server process: configuration sources, readiness, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pika
import pytest

from tests.support.node import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_closes_clients_with_connection_forced(node_factory):
    node = node_factory("term")
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    ch = conn.channel()
    ch.queue_declare("q")
    closed: list[BaseException] = []

    def pump() -> None:
        try:
            while True:
                conn.process_data_events(time_limit=0.1)
        except pika.exceptions.ConnectionClosedByBroker as e:
            closed.append(e)
        except Exception as e:  # anything else is a failure, recorded for the assertion
            closed.append(e)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(15) == 0
    t.join(10)
    assert len(closed) == 1 and isinstance(closed[0], pika.exceptions.ConnectionClosedByBroker)
    assert closed[0].reply_code == 320
    assert closed[0].reply_text.startswith("CONNECTION_FORCED - broker forced connection closure")
    assert "stopped" in node.log()


def test_environment_sets_the_node_name_and_port(tmp_path):
    port = _free_port()
    env = {**os.environ, "WARREN_NODE_PORT": str(port), "WARREN_NODENAME": "envnode@localhost",
           "WARREN_DATA_DIR": str(tmp_path / "data")}
    env["WARREN_COOKIE_FILE"] = str(tmp_path / "cookie")
    proc = subprocess.Popen([sys.executable, "-m", "warrenmq.cli.server", "--bind", "127.0.0.1",
                             "--dist-port", "0",
                             "--ports-file", str(tmp_path / "ports.json")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (tmp_path / "ports.json").exists(), 20, what="the node to listen")
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        props = conn._impl.server_properties
        assert props["product"] == "WarrenMQ"
        assert props["cluster_name"] == "envnode@localhost"
        conn.close()
        assert (tmp_path / "data").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_config_file_keys_apply_and_flags_win(tmp_path, node_factory):
    conf = tmp_path / "warren.conf"
    conf.write_text("# RabbitMQ syntax\nheartbeat = 7\nframe_max = 65536\n"
                    "default_user = alice\ndefault_pass = s3cret\nloopback_users = none\n")
    node = node_factory("conf", extra_args=["--config-file", str(conf)])
    params = pika.URLParameters(node.url(user="alice", password="s3cret"))
    conn = pika.BlockingConnection(params)
    assert conn._impl.params.frame_max == 65536
    assert conn._impl.params.heartbeat == 7
    conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(node.url()))  # no guest any more


@pytest.mark.parametrize("text, message", [
    ("heartbeat = 5\nno_such_key = 1\n", "warren.conf:2: unknown key 'no_such_key'"),
    ("heartbeat = soon\n", "warren.conf:1: invalid value 'soon' for 'heartbeat'"),
    ("just words\n", "warren.conf:1: expected 'key = value'"),
])
def test_bad_config_stops_startup_naming_the_line(tmp_path, text, message):
    conf = tmp_path / "warren.conf"
    conf.write_text(text)
    r = subprocess.run([sys.executable, "-m", "warrenmq.cli.server", "--config-file", str(conf),
                        "--dist-port", "0",
                        "--node-port", "0", "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "warrenmq.cli.server", "--bind", "127.0.0.1",
                            "--dist-port", "0",
                            "--node-port", str(port), "--data-dir", str(tmp_path / "d")],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot listen" in r.stderr and str(port) in r.stderr
