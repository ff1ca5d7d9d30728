"""warrenmq.embedded.Broker: a real node in the test process or a child process, on an
ephemeral loopback port, that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import aio_pika
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from tests.support.node import wait_for
from warrenmq.embedded import Broker, BrokerError

DEFAULT_PORTS = {5672, 25672, 15672}


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def broker_threads() -> set[str]:
    """Threads a Broker runs in this process (the session's warren_broker among them)."""
    return {t.name for t in threading.enumerate()
            if t.name.startswith(("warrenmq ", "wal-writer"))}


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def roundtrip(url: str, queue: str = "roundtrip") -> bytes:
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue)
        channel.basic_publish("", queue, b"ping")
        _, _, body = channel.basic_get(queue, auto_ack=True)
        return body


def run_script(code: str, env: dict[str, str] | None = None,
               timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout_s)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_serves_on_an_ephemeral_loopback_port_and_cleans_up(mode):
    before = broker_threads()
    broker = Broker(mode).start()
    try:
        assert broker.url == f"amqp://guest:guest@127.0.0.1:{broker.port}/%2F"
        assert roundtrip(broker.url) == b"ping"
        assert not DEFAULT_PORTS & set(broker.ports.values())
        for port in broker.ports.values():
            assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
        data_dir, port = broker.data_dir, broker.port
        assert data_dir is not None and data_dir.is_dir()
        if mode == "process":
            pid, log_path = broker._runner.proc.pid, broker.log_path
            assert pid_alive(pid) and pid != os.getpid()
            assert log_path is not None and log_path.is_file()
        else:
            assert broker_threads() > before
    finally:
        broker.stop()
    assert not data_dir.exists()
    assert broker_threads() == before
    if mode == "process":
        assert not pid_alive(pid)
        assert not log_path.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    broker.stop()  # idempotent


def test_starts_well_under_a_second(record_property):
    Broker().start().stop()  # the first start also imports the server modules
    timings = {}
    for mode in ("thread", "process"):
        with Broker(mode) as broker:
            timings[mode] = broker.startup_s
    record_property("startup_s", timings)
    print(f"embedded broker start-up: {timings}")
    # generous bounds: CI machines are slow and shared; the measured figures are far lower
    assert timings["thread"] < 1.0
    assert timings["process"] < 5.0


def test_context_manager_and_restart_keep_a_given_data_directory(tmp_path):
    data_dir = tmp_path / "node"
    with Broker(data_dir=data_dir) as broker:
        with pika.BlockingConnection(pika.URLParameters(broker.url)) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare("kept", durable=True)
            channel.basic_publish("", "kept", b"survives",
                                  pika.BasicProperties(delivery_mode=2))
        fsyncs = broker._runner.runtime.app.journal.wal.stats.fsyncs
        assert fsyncs > 0  # a given directory is durable: fsync on by default
    assert data_dir.is_dir()
    with Broker("process", data_dir=data_dir) as broker:
        with pika.BlockingConnection(pika.URLParameters(broker.url)) as connection:
            _, _, body = connection.channel().basic_get("kept", auto_ack=True)
    assert body == b"survives"


def test_in_memory_broker_never_fsyncs():
    with Broker() as broker:
        with pika.BlockingConnection(pika.URLParameters(broker.url)) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare("durable", durable=True)
            for _ in range(20):
                channel.basic_publish("", "durable", b"x", pika.BasicProperties(delivery_mode=2))
        stats = broker._runner.runtime.app.journal.wal.stats
        assert stats.batches > 0 and stats.fsyncs == 0 and stats.dir_fsyncs == 0


async def test_async_context_manager_does_not_block_the_loop():
    before = broker_threads()
    async with Broker() as broker:
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("async")
            await channel.default_exchange.publish(aio_pika.Message(b"hi"), routing_key="async")
            message = await queue.get(timeout=5, fail=True)
            await message.ack()
        assert message.body == b"hi"
    assert broker_threads() == before


def test_settings_reach_the_node():
    with Broker(settings={"max_message_size": 1000}) as broker:
        with pika.BlockingConnection(pika.URLParameters(broker.url)) as connection:
            channel = connection.channel()
            channel.queue_declare("small")
            channel.basic_publish("", "small", b"x" * 2000)
            with pytest.raises(ChannelClosedByBroker) as closed:
                channel.queue_declare("small", passive=True)
    assert closed.value.reply_code == 406


def test_administration_through_the_command_table():
    with Broker(user="alice", password="s3cret") as broker:
        assert broker.url.startswith("amqp://alice:s3cret@127.0.0.1:")
        broker.add_vhost("staging")
        broker.set_permissions("staging")
        assert roundtrip(broker.url_for("staging")) == b"ping"
        rows = broker.call("list_vhosts")["rows"]
        assert sorted(r[0] for r in rows) == ["/", "staging"]
        with pytest.raises(BrokerError, match="add_vhost: virtual host name must not be empty"
                           ) as refused:
            broker.add_vhost("")
        assert refused.value.exit_status == 64
        with pytest.raises(BrokerError, match="does not know the command"):
            broker.call("no_such_command")
        broker.delete_vhost("staging")
        assert [r[0] for r in broker.call("list_vhosts")["rows"]] == ["/"]


def test_process_mode_administration():
    with Broker("process") as broker:
        broker.add_vhost("v")
        with pytest.raises(BrokerError, match="does not exist") as refused:
            broker.set_permissions("v", user="nobody")
        assert refused.value.exit_status == 67
        assert "v" in [r[0] for r in broker.call("list_vhosts")["rows"]]


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "docker"}, "mode must be one of thread, process, not 'docker'"),
    ({"port": 70000}, "port must be 0"),
    ({"password": ""}, "must not be empty"),
    ({"log_level": "loud"}, "log_level must be one of"),
    ({"settings": {"amqp_port": 5672}}, "'amqp_port' is chosen by Broker itself"),
    ({"settings": {"hearbeat": 5}}, "unknown setting 'hearbeat'"),
    ({"settings": {"heartbeat": "5"}}, "'heartbeat' must be of type int, not str"),
])
def test_bad_arguments_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Broker(**kwargs)


def test_unstarted_broker_says_so():
    broker = Broker()
    with pytest.raises(BrokerError, match="not started"):
        broker.url  # noqa: B018
    with pytest.raises(BrokerError, match="not started"):
        broker.call("list_vhosts")
    broker.stop()  # harmless


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_port_in_use_is_an_error_and_leaves_nothing(mode, tmp_path):
    before = broker_threads()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = Broker(mode, port=port)
        with pytest.raises(BrokerError, match="(?i)address already in use"):
            broker.start()
    assert broker._temp_dirs == [] and broker_threads() == before
    assert not broker.running


def test_needs_nothing_from_home_or_the_environment(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = run_script("""
        import pika
        from warrenmq.embedded import Broker
        for mode in ("thread", "process"):
            with Broker(mode) as broker:
                assert broker.port != 5672, broker.port
                with pika.BlockingConnection(pika.URLParameters(broker.url)):
                    pass
        print("ok")
    """, env={"HOME": str(home), "WARREN_NODE_PORT": "5672",
              "WARREN_CONFIG_FILE": str(tmp_path / "missing.conf"),
              "WARREN_COOKIE_FILE": str(tmp_path / "nope" / "cookie")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert list(home.iterdir()) == []
    assert not (tmp_path / "nope").exists()


def test_a_forgotten_broker_is_stopped_at_interpreter_exit():
    result = run_script("""
        import json
        from warrenmq.embedded import Broker
        a, b = Broker().start(), Broker("process").start()
        print(json.dumps({"dirs": [str(p) for p in a._temp_dirs + b._temp_dirs],
                          "pid": b._runner.proc.pid}))
    """)
    assert result.returncode == 0, result.stderr
    left = json.loads(result.stdout)
    assert not pid_alive(left["pid"])
    assert [d for d in left["dirs"] if Path(d).exists()] == []


def test_the_child_stops_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import json, sys
        from warrenmq.embedded import Broker
        b = Broker("process").start()
        print(json.dumps({"dirs": [str(p) for p in b._temp_dirs], "pid": b._runner.proc.pid,
                          "port": b.port}), flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child = json.loads(parent.stdout.readline())
        assert pid_alive(child["pid"])
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: not pid_alive(child["pid"]), 15, what="the orphaned broker to exit")
        wait_for(lambda: not any(Path(d).exists() for d in child["dirs"]), 15,
                 what="the orphaned broker's temporary directories to go")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdin.close()
        parent.stdout.close()
