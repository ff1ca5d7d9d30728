"""warrenctl against a real node: the seed how-to's commands, rabbitmqctl's output shapes,
and the failures an operator meets (stopped node, wrong cookie, unsafe cookie, bad host)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading

import pika
import pytest

from tests.support.node import wait_for

from .conftest import Ctl


def test_seed_howto_commands_then_the_new_user_connects(op_node, ctl: Ctl):
    # the how-to's commands, literally, with our names
    ctl.ok("add_user", "ops", "opspass")
    ctl.ok("set_user_tags", "ops", "administrator")
    ctl.ok("set_permissions", "-p", "/", "ops", ".*", ".*", ".*")
    ctl.ok("set_policy", "ha-all", "", '{"ha-mode":"all","ha-sync-mode":"automatic"}')
    status = ctl.ok("status")
    assert "Node name: op@localhost" in status and "App running: true" in status
    # the policy is stored as given and applies to every queue and exchange
    policies = json.loads(ctl.ok("list_policies", "--formatter", "json"))
    assert policies == [{"vhost": "/", "name": "ha-all", "pattern": "", "apply-to": "all",
                         "definition": '{"ha-mode":"all","ha-sync-mode":"automatic"}',
                         "priority": 0}]
    conn = pika.BlockingConnection(pika.URLParameters(op_node.url(user="ops",
                                                                  password="opspass")))
    ch = conn.channel()
    ch.queue_declare("howto-q", durable=True)
    ch.basic_publish("", "howto-q", b"hello")
    listed = ctl.ok("list_queues", "name", "policy", "messages")
    assert "howto-q\tha-all\t1" in listed.splitlines()
    users = ctl.ok("list_users").splitlines()
    assert users[0] == "Listing users ..." and users[1] == "user\ttags"
    assert "ops\t[administrator]" in users
    conn.close()


def test_output_follows_rabbitmqctl(op_node, ctl: Ctl):
    ctl.ok("add_vhost", "staging")
    ctl.ok("add_user", "bob", "pw")
    ctl.ok("set_user_tags", "bob", "monitoring", "management")
    ctl.ok("set_permissions", "-p", "staging", "bob", "^bob-.*", "^bob-.*", ".*")
    assert ctl.ok("list_permissions", "-p", "staging").splitlines() == [
        'Listing permissions for vhost "staging" ...', "user\tconfigure\twrite\tread",
        "bob\t^bob-.*\t^bob-.*\t.*"]
    assert ctl.ok("-q", "list_user_permissions", "bob").splitlines() == [
        "vhost\tconfigure\twrite\tread", "staging\t^bob-.*\t^bob-.*\t.*"]
    assert ctl.ok("list_vhosts", "-q", "--no-table-headers").splitlines() == ["/", "staging"]
    assert json.loads(ctl.ok("list_users", "--formatter", "json")) == [
        {"user": "guest", "tags": ["administrator"]},
        {"user": "bob", "tags": ["monitoring", "management"]}]
    ctl.ok("set_policy", "-p", "staging", "--priority", "2", "--apply-to", "queues", "lim",
           "^bob-", '{"max-length":10}')
    ctl.ok("set_policy", "-p", "staging", "--priority", "1", "all", ".*", '{"expires":60000}')
    assert ctl.ok("-q", "list_policies", "-p", "staging").splitlines()[1:] == [
        'staging\tall\t.*\tall\t{"expires":60000}\t1',
        'staging\tlim\t^bob-\tqueues\t{"max-length":10}\t2']
    conn = pika.BlockingConnection(pika.URLParameters(op_node.url("staging", "bob", "pw")))
    ch = conn.channel()
    ch.queue_declare("bob-q", arguments={"x-max-priority": 5})
    ch.exchange_declare("bob-x", "topic")
    ch.queue_bind("bob-q", "bob-x", "a.#")
    ch.basic_qos(prefetch_count=7)
    ch.basic_consume("bob-q", lambda *a: None, consumer_tag="tag-1")
    queues = ctl.ok("-q", "list_queues", "-p", "staging", "name", "policy", "arguments",
                    "consumers", "durable")
    assert queues.splitlines() == ["name\tpolicy\targuments\tconsumers\tdurable",
                                   'bob-q\tlim\t[{"x-max-priority",5}]\t1\tfalse']
    exchanges = ctl.ok("-q", "list_exchanges", "-p", "staging", "name", "type", "policy")
    assert "bob-x\ttopic\tall" in exchanges.splitlines()  # apply-to all covers exchanges
    assert "\tdirect\tall" in exchanges.splitlines()  # the default exchange, named ""
    bindings = ctl.ok("-q", "list_bindings", "-p", "staging").splitlines()
    assert bindings == ["source_name\tsource_kind\tdestination_name\tdestination_kind\t"
                        "routing_key\targuments",
                        "\texchange\tbob-q\tqueue\tbob-q\t[]",
                        "bob-x\texchange\tbob-q\tqueue\ta.#\t[]"]
    consumers = json.loads(ctl.ok("list_consumers", "-p", "staging", "--formatter", "json"))
    assert [(c["queue_name"], c["consumer_tag"], c["prefetch_count"], c["ack_required"])
            for c in consumers] == [("bob-q", "tag-1", 7, True)]
    connections = json.loads(ctl.ok("list_connections", "user", "vhost", "protocol",
                                    "--formatter", "json"))
    assert connections == [{"user": "bob", "vhost": "staging", "protocol": [0, 9, 1]}]
    channels = ctl.ok("-q", "list_channels", "user", "consumer_count", "prefetch_count")
    assert channels.splitlines() == ["user\tconsumer_count\tprefetch_count", "bob\t1\t7"]
    conn.close()
    env = json.loads(ctl.ok("environment", "--formatter", "json"))
    assert env["nodename"] == "op@localhost" and env["default_pass"] == "********"


def test_users_passwords_and_tags(op_node, ctl: Ctl):
    ctl.ok("add_user", "carol", stdin="from-stdin\n")  # password on stdin stays out of ps
    assert ctl.ok("authenticate_user", "carol", "from-stdin").splitlines()[-1] == "Success"
    ctl.ok("change_password", "carol", "second")
    r = ctl("authenticate_user", "carol", "from-stdin")
    assert r.returncode == 65 and "invalid credentials" in r.stderr
    ctl.ok("set_permissions", "carol", ".*", ".*", ".*")
    conn = pika.BlockingConnection(pika.URLParameters(op_node.url(user="carol",
                                                                  password="second")))
    assert conn.is_open
    r = ctl("add_user", "carol", "x")
    assert (r.returncode, r.stderr.strip()) == (70, 'Error: User "carol" already exists')
    ctl.ok("delete_user", "carol")  # and the node closes carol's connection
    wait_for(lambda: _closed(conn), 10, what="carol's connection to be closed")
    r = ctl("delete_user", "carol")
    assert (r.returncode, r.stderr.strip()) == (67, 'Error: User "carol" does not exist')


def _closed(conn: pika.BlockingConnection) -> bool:
    try:
        conn.process_data_events(0.05)
    except pika.exceptions.AMQPConnectionError:
        return True
    return conn.is_closed


@pytest.mark.parametrize("args, status, message", [
    (["set_policy", "p", "^x", '{"ha-mode":"bogus"}'], 65, '"bogus" is not a valid ha-mode'),
    (["set_policy", "p", "^x", '{"ha-mode":"exactly"}'], 65, "takes an integer, none given"),
    (["set_policy", "p", "^x", '{"foo":1}'], 65, "are not recognised policy settings"),
    (["set_policy", "p", "^x", '{"message-ttl":-1}'], 65, "-1 is not a valid message TTL"),
    (["set_policy", "p", "(", '{"message-ttl":1}'], 65, "pattern should be regular expression"),
    (["set_policy", "--apply-to", "widgets", "p", "^x", '{"expires":1}'], 65,
     "apply-to 'widgets' unrecognised"),
    (["set_policy", "p", "^x", "{bad"], 65, "could not parse JSON"),
    (["set_policy", "--priority", "high", "p", "^x", "{}"], 64, "invalid int value"),
    (["clear_policy", "nope"], 65, "policy 'nope' does not exist"),
    (["set_permissions", "-p", "nope", "guest", ".*", ".*", ".*"], 65,
     'Virtual host "nope" does not exist'),
    (["set_permissions", "nobody", ".*", ".*", ".*"], 67, 'User "nobody" does not exist'),
    (["set_permissions", "guest", "(", ".*", ".*"], 65, "invalid configure regular expression"),
    (["set_permissions", "guest", ".*"], 64, "required: write, read"),
    (["list_queues", "foo"], 64, "Info key(s) foo are not supported"),
    (["delete_queue", "nope"], 65, "queue 'nope' in vhost '/' does not exist"),
    (["close_connection", "nope", "why"], 65, "no connection 'nope'"),
    (["no_such_command"], 64, "unknown command 'no_such_command'"),
])
def test_bad_input_is_one_clear_line_and_a_distinct_status(ctl: Ctl, args, status, message):
    r = ctl(*args)
    assert r.returncode == status, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], r.stderr


def test_policies_apply_to_existing_and_new_queues_by_priority(op_node, ctl: Ctl):
    conn = pika.BlockingConnection(pika.URLParameters(op_node.url()))
    ch = conn.channel()
    ch.queue_declare("pol.a")
    ctl.ok("set_policy", "--apply-to", "queues", "low", "^pol\\.", '{"max-length":1}')
    ctl.ok("set_policy", "--apply-to", "queues", "--priority", "5", "high", "^pol\\.b",
           '{"max-length":2}')
    ch.queue_declare("pol.b")
    rows = ctl.ok("-q", "--no-table-headers", "list_queues", "name", "policy").splitlines()
    assert rows == ["pol.a\tlow", "pol.b\thigh"]
    ctl.ok("clear_policy", "high")
    rows = ctl.ok("-q", "--no-table-headers", "list_queues", "name", "policy").splitlines()
    assert rows == ["pol.a\tlow", "pol.b\tlow"]
    conn.close()


def test_purge_delete_and_close_connection(op_node, ctl: Ctl):
    conn = pika.BlockingConnection(pika.URLParameters(op_node.url()))
    ch = conn.channel()
    ch.queue_declare("ops-q")
    for _ in range(3):
        ch.basic_publish("", "ops-q", b"m")
    wait_for(lambda: "ops-q\t3" in ctl.ok("list_queues"), 10, what="3 messages")
    ctl.ok("purge_queue", "ops-q")
    assert "ops-q\t0" in ctl.ok("list_queues")
    out = ctl.ok("delete_queue", "ops-q")
    assert "Queue was successfully deleted with 0 ready messages" in out
    pid = ctl.ok("-q", "--no-table-headers", "list_connections", "pid").strip()
    ctl.ok("close_connection", pid, "maintenance window")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        while True:
            conn.process_data_events(0.1)
    assert closed.value.reply_code == 320
    assert closed.value.reply_text == "CONNECTION_FORCED - maintenance window"


def test_stop_app_reset_start_app(op_node, ctl: Ctl):
    ctl.ok("add_user", "dave", "pw")
    conn = pika.BlockingConnection(pika.URLParameters(op_node.url()))
    assert "Stopping the app" in ctl.ok("stop_app")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        while True:
            conn.process_data_events(0.1)
    assert closed.value.reply_code == 320
    r = ctl("list_users")
    assert r.returncode == 75 and "warrenctl start_app" in r.stderr
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(op_node.url()))
    assert "App running: false" in ctl.ok("status")
    ctl.ok("start_app")  # the same port again, and dave survived the stop (durable)
    assert "dave" in ctl.ok("list_users")
    ctl.ok("stop_app")
    ctl.ok("reset")
    ctl.ok("start_app")
    assert ctl.ok("-q", "--no-table-headers", "list_users").splitlines() == [
        "guest\t[administrator]"]
    pika.BlockingConnection(pika.URLParameters(op_node.url())).close()
    r = ctl("reset")
    assert r.returncode == 75 and "stop_app" in r.stderr


def test_stop_ends_the_process_and_removes_the_pid_file(op_node, ctl: Ctl):
    pid_file = op_node.data_dir / "warren.pid"
    assert pid_file.read_text().strip() == str(op_node.proc.pid)
    ctl.ok("stop")
    assert op_node.proc.wait(15) == 0
    assert not pid_file.exists()
    r = ctl("status")  # now: a node that is not running
    assert r.returncode == 69
    assert "not running or not reachable (connection refused" in r.stderr


def test_cookie_failures_have_their_own_messages_and_statuses(op_node, ctl: Ctl, tmp_path):
    wrong = tmp_path / "wrong-cookie"
    wrong.write_text("NOTTHESAMECOOKIEATAL")
    wrong.chmod(0o400)
    r = ctl("status", env=ctl.env(WARREN_COOKIE_FILE=str(wrong)))
    assert r.returncode == 77
    assert "cookie mismatch" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "refused: cookie mismatch" in op_node.log()

    loose = tmp_path / "loose-cookie"
    loose.write_text(ctl.cookie_file.read_text())
    loose.chmod(0o644)
    r = ctl("status", env=ctl.env(WARREN_COOKIE_FILE=str(loose)))
    assert r.returncode == 78
    assert r.stderr.strip() == (f"Error: cookie file {loose} must be accessible by owner only "
                                f"(its mode is 0644): run chmod 400 {loose}")
    r = ctl("status", env=ctl.env(WARREN_COOKIE_FILE=str(tmp_path / "absent")))
    assert r.returncode == 78 and "does not exist" in r.stderr


def test_unresolvable_host_and_bad_node_names(ctl: Ctl):
    r = ctl("status", node="op@no-such-host.invalid")
    assert r.returncode == 68 and "does not resolve" in r.stderr
    r = ctl("status", node="op@localhost:99999")
    assert r.returncode == 64 and "is not a number from 1 to 65535" in r.stderr


def test_the_node_creates_a_private_cookie_and_refuses_a_readable_one(node_factory,
                                                                      cookie_file):
    node = node_factory("cookie")
    assert cookie_file.stat().st_mode & 0o777 == 0o400
    secret = cookie_file.read_text()
    assert len(secret) == 20 and secret.isalpha() and secret.isupper()
    node.stop()
    cookie_file.chmod(0o644)
    with pytest.raises(RuntimeError) as failed:
        node_factory("cookie2")
    assert "exited with 78" in str(failed.value)
    assert f"refusing to start: cookie file {cookie_file} must be accessible by owner only" \
        in str(failed.value)


def test_help_lists_every_command(ctl: Ctl):
    out = ctl.ok("help")
    for name in ("status", "stop", "stop_app", "start_app", "reset", "add_user", "delete_user",
                 "change_password", "authenticate_user", "set_user_tags", "list_users",
                 "add_vhost", "delete_vhost", "list_vhosts", "set_permissions",
                 "clear_permissions", "list_permissions", "list_user_permissions",
                 "set_policy", "clear_policy", "list_policies", "list_queues",
                 "list_exchanges", "list_bindings", "list_connections", "list_channels",
                 "list_consumers", "close_connection", "purge_queue", "delete_queue",
                 "export_definitions", "import_definitions", "environment", "help"):
        assert f"   {name} " in out, name
    assert "set_permissions [-p <vhost>] <username> <conf> <write> <read>" in \
        ctl.ok("help", "set_permissions")
    assert os.environ.get("WARREN_COOKIE_FILE") == str(ctl.cookie_file)
    assert signal.SIGTERM  # the module's imports stay used


def test_a_port_that_is_not_a_cluster_port_is_named_as_such(ctl: Ctl):
    # another service (here one that greets like SSH) on the port given with -n
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()

        def greet() -> None:
            conn, _ = other.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        t = threading.Thread(target=greet, daemon=True)
        t.start()
        r = ctl("status", node=f"op@localhost:{other.getsockname()[1]}")
        t.join(10)
    assert r.returncode == 69
    assert "does not answer as a WarrenMQ node" in r.stderr
