"""Cluster membership, black-box: real `warren-server` processes on loopback, driven by
warrenctl and pika the way an operator and an application drive a RabbitMQ cluster.

What is held here:
- a cluster formed by `join_cluster` or by classic config is one cluster seen the same from
  every node: `cluster_status` lists every node as a disk node and as running, in
  rabbitmqctl's JSON keys with sane values, and as readable text;
- metadata made on one node (vhost, user, permissions, policy, exchange, queue, binding) is
  listed on the others and enforced there;
- `forget_cluster_node` removes a stopped node and refuses a running one; a forgotten node
  started again says it was removed; `reset` turns a clustered node into a fresh node of its
  own and the others drop it, in a cluster of three and in one of two (where the remaining
  node cannot remove the other without its vote);
- `join_cluster` refuses an unresolvable host, a closed port, another cookie, a node whose
  app is stopped, a node already in a cluster, a member cut off from its cluster and another
  version, each in one line naming the cause and the fix, and changes nothing on either side.

The cluster that no test damages is shared by the module (`membership_cluster`); tests
that remove or reset nodes start their own, each on fresh ports and directories.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.conftest import unique
from tests.support.cluster import (
    cluster_status,
    ctl_ok,
    free_port,
    join,
    listing,
    restart,
    running_cluster,
    stop_cluster,
    wait_cluster,
)
from tests.support.node import Node, launch, prepare_node, wait_for
from warrenmq import __version__
from warrenmq.cluster import cookie
from warrenmq.cluster.control import ControlClient, RemoteError
from warrenmq.cluster.names import parse
from warrenmq.server.cluster import compatible

STATUS_KEYS = {"running_nodes", "disk_nodes", "partitions", "alarms", "listeners", "versions",
               "cluster_name"}
SEEN_S = 30.0  # a committed change reaches every running member well within this
# warrenctl's exit statuses (sysexits), as its module docstring lists them
EX_DATAERR, EX_NOHOST, EX_UNAVAILABLE, EX_TEMPFAIL, EX_NOPERM = 65, 68, 69, 75, 77


# -- helpers -----------------------------------------------------------------------------------
def _names(nodes: list[Node]) -> list[str]:
    return sorted(n.name for n in nodes)



@contextmanager
def _channel(node: Node, vhost: str = "/", user: str | None = None,
             password: str | None = None) -> Iterator[BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(node.url(vhost, user, password)))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def _refused(r: subprocess.CompletedProcess, status: int, *words: str) -> str:
    """A warrenctl refusal: the exit status, one line on stderr, and every word in it."""
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _column(node: Node, key: str, *args: str) -> set[str]:
    return {row[key] for row in listing(node, *args)}


def _sees(node: Node, key: str, value: str, *args: str) -> bool:
    return value in _column(node, key, *args)


def _vhost_listed(node: Node, vhost: str) -> bool:
    # listings of a vhost the node does not know yet fail; so ask which vhosts it knows
    return _sees(node, "name", vhost, "list_vhosts")


def _wait_disk_nodes(node: Node, expected: list[Node]) -> dict:
    want = _names(expected)

    def settled() -> dict | None:
        status = cluster_status(node)
        return status if sorted(status["disk_nodes"]) == want else None

    return wait_for(settled, SEEN_S, interval_s=0.1,
                    what=f"{node.name} to list exactly {want} as disk nodes")


def _check_status(nodes: list[Node]) -> None:
    """cluster_status on every node: everyone a disk node and running, rabbitmqctl's keys
    with sane values, one cluster name; and the text form names every node."""
    statuses = wait_cluster(nodes, timeout_s=SEEN_S)
    names = _names(nodes)
    for node in nodes:
        st = statuses[node.name]
        assert STATUS_KEYS <= st.keys(), st.keys()
        assert sorted(st["disk_nodes"]) == names
        assert sorted(st["running_nodes"]) == names
        assert st["partitions"] == {}
        assert st["alarms"] == []
        assert sorted(st["versions"]) == names
        assert {v["warrenmq_version"] for v in st["versions"].values()} == {__version__}
        assert sorted(st["listeners"]) == names
        for other in nodes:
            bound = {(lst["protocol"], lst["port"]) for lst in st["listeners"][other.name]}
            assert ("amqp", other.port) in bound
            assert ("clustering", other.ports["dist"]) in bound
    cluster_names = {statuses[n.name]["cluster_name"] for n in nodes}
    assert len(cluster_names) == 1 and all(cluster_names), cluster_names

    text = ctl_ok(nodes[-1], "cluster_status")
    headings = ["Disk Nodes", "Running Nodes", "Versions", "Alarms", "Network Partitions",
                "Listeners"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions), text
    running = text.split("Running Nodes", 1)[1].split("Versions", 1)[0]
    assert sorted(running.split()) == names
    for node in nodes:
        assert f"{node.name}: WarrenMQ {__version__}" in text
        assert f"Node: {node.name}, interface: 127.0.0.1, port: {node.port}, protocol: amqp" \
            in text
    # no Python structures leak into what an operator reads
    for leak in ("{'", "['", "None", "True", "False"):
        assert leak not in text, (leak, text)


# -- a shared cluster formed by join_cluster ---------------------------------------------------------
@pytest.fixture(scope="module")
def membership_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with running_cluster(tmp_path_factory.mktemp("membership"), 3, "join",
                         prefix="m") as nodes:
        yield nodes


def test_join_formed_cluster_status_lists_every_node_on_every_node(membership_cluster):
    _check_status(membership_cluster)


def test_classic_config_forms_one_cluster_that_a_restarted_node_rejoins(tmp_path: Path):
    with running_cluster(tmp_path, 3, "classic", prefix="c") as nodes:
        _check_status(nodes)
        c1, c2, c3 = nodes
        with _channel(c2) as ch:
            ch.exchange_declare("made-on-c2", "fanout", durable=True)
        for node in (c1, c3):
            wait_for(lambda node=node: _sees(node, "name", "made-on-c2", "list_exchanges",
                                             "name"),
                     SEEN_S, interval_s=0.1, what=f"{node.name} to list made-on-c2")
        restart(c3)  # the config still names the peers; the node must not form anew
        _check_status(nodes)
        assert _sees(c3, "name", "made-on-c2", "list_exchanges", "name")


def test_metadata_made_on_one_node_is_listed_and_enforced_on_the_others(membership_cluster):
    m1, m2, m3 = membership_cluster
    vhost, user, password = unique("shop"), unique("clerk"), "s3cret"
    ctl_ok(m1, "add_vhost", vhost)
    ctl_ok(m1, "add_user", user, password)
    ctl_ok(m1, "set_permissions", "-p", vhost, user, r"^app\.", r"^app\.", r"^app\.")
    ctl_ok(m1, "set_policy", "-p", vhost, "--apply-to", "queues", "--priority", "3", "cap",
           r"^app\.capped\.", '{"max-length":1}')
    with _channel(m1, vhost, user, password) as ch:
        ch.exchange_declare("app.events", "topic", durable=True)
        ch.queue_declare("app.audit", durable=True)
        ch.queue_bind("app.audit", "app.events", "order.#")

    # node 2 lists the user, the vhost, the permissions and the policy (changes apply in
    # log order everywhere: once the last one is seen, the earlier ones are)
    wait_for(lambda: _vhost_listed(m2, vhost) and listing(m2, "list_policies", "-p", vhost),
             SEEN_S, interval_s=0.1, what=f"{m2.name} to list the policy")
    assert _sees(m2, "user", user, "list_users")
    perms = [p for p in listing(m2, "list_permissions", "-p", vhost) if p["user"] == user]
    assert perms == [{"user": user, "configure": r"^app\.", "write": r"^app\.",
                      "read": r"^app\."}]
    (policy,) = listing(m2, "list_policies", "-p", vhost)
    assert (policy["name"], policy["pattern"], policy["apply-to"], policy["priority"]) == \
        ("cap", r"^app\.capped\.", "queues", 3)
    assert json.loads(policy["definition"]) == {"max-length": 1}

    # node 3 lists the exchange, the queue and the binding declared over AMQP on node 1
    wait_for(lambda: _vhost_listed(m3, vhost) and _sees(
        m3, "routing_key", "order.#", "list_bindings", "-p", vhost, "routing_key"),
        SEEN_S, interval_s=0.1, what=f"{m3.name} to list the binding")
    assert _sees(m3, "name", "app.audit", "list_queues", "-p", vhost, "name")
    exchanges = {x["name"]: x for x in listing(m3, "list_exchanges", "-p", vhost, "name",
                                                "type", "durable")}
    assert exchanges["app.events"] == {"name": "app.events", "type": "topic", "durable": True}
    bindings = listing(m3, "list_bindings", "-p", vhost, "source_name", "destination_name",
                       "destination_kind", "routing_key")
    assert {"source_name": "app.events", "destination_name": "app.audit",
            "destination_kind": "queue", "routing_key": "order.#"} in bindings

    # ... and enforces them: the user logs in to node 3, routes through node 1's exchange
    # into a queue of node 3 that the policy caps at one message
    with _channel(m3, vhost, user, password) as ch:
        ch.exchange_declare("app.events", passive=True)
        ch.queue_declare("app.capped.m3", durable=True)
        ch.queue_bind("app.capped.m3", "app.events", "order.#")
        ch.confirm_delivery()
        for body in (b"1", b"2", b"3"):
            ch.basic_publish("app.events", "order.new", body)
        assert ch.queue_declare("app.capped.m3", passive=True).method.message_count == 1
        _, _, body = ch.basic_get("app.capped.m3", auto_ack=True)
        assert body == b"3"  # max-length drops from the head
        ch.exchange_declare("app.from-m3", "direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as denied:
        with _channel(m3, vhost, user, password) as ch:
            ch.queue_declare("outside-the-pattern")
    assert denied.value.reply_code == 403
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        with _channel(m3, "/", user, password):
            pass  # no permissions in "/"
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        with _channel(m3, vhost, user, "wrong-password"):
            pass

    # and what node 3 made, node 1 lists
    wait_for(lambda: _sees(m1, "name", "app.from-m3", "list_exchanges", "-p", vhost, "name"),
             SEEN_S, interval_s=0.1, what=f"{m1.name} to list app.from-m3")


# -- forget_cluster_node and reset ------------------------------------------------------------------
def test_forget_cluster_node_removes_a_stopped_node_and_refuses_a_running_one(tmp_path: Path):
    with running_cluster(tmp_path, 3, prefix="f") as nodes:
        f1, f2, f3 = nodes
        _refused(f1.ctl("forget_cluster_node", f3.name), EX_DATAERR, f3.name, "is running",
                 "stop_app")
        _refused(f3.ctl("forget_cluster_node", f3.name), EX_DATAERR, "cannot forget itself",
                 "reset")
        _refused(f1.ctl("forget_cluster_node", "ghost@127.0.0.1:9"), EX_DATAERR,
                 "not a member", f1.name, f2.name, f3.name)
        for node in nodes:  # refusals changed nothing
            assert sorted(cluster_status(node)["disk_nodes"]) == _names(nodes)

        ctl_ok(f3, "stop_app")
        wait_cluster([f1, f2], expect_running=[f1.name, f2.name], timeout_s=SEEN_S)
        ctl_ok(f2, "forget_cluster_node", f3.name)
        for node in (f1, f2):
            status = _wait_disk_nodes(node, [f1, f2])
            assert sorted(status["running_nodes"]) == _names([f1, f2])
        # the two left are a working cluster of two
        ctl_ok(f1, "add_user", "after-forget", "x")
        wait_for(lambda: _sees(f2, "user", "after-forget", "list_users"), SEEN_S,
                 interval_s=0.1, what=f"{f2.name} to list after-forget")

        # started again as it was, the forgotten node learns from the members that it was
        # removed, and says so when a change cannot commit (after the metadata deadline)
        ctl_ok(f3, "start_app")
        f3.port = f3.read_ports()["amqp"]
        _refused(f3.ctl("add_user", "on-forgotten", "x"), EX_DATAERR, "not committed",
                 f"node {f3.name} is no longer a member of the cluster", "reset")
        ctl_ok(f3, "stop_app")

        # it is reset before it is used again, and may then join anew, through any member
        # (f2 need not lead the metadata: it passes the request on)
        assert "not a member any more" in ctl_ok(f3, "reset")
        ctl_ok(f3, "start_app")
        f3.port = f3.read_ports()["amqp"]
        assert cluster_status(f3)["disk_nodes"] == [f3.name]
        join(f3, f2)
        wait_cluster(nodes, timeout_s=SEEN_S)
        assert _sees(f3, "user", "after-forget", "list_users")


def test_reset_makes_a_clustered_node_a_fresh_node_and_the_others_drop_it(tmp_path: Path):
    with running_cluster(tmp_path, 3, prefix="r") as nodes:
        r1, r2, r3 = nodes
        ctl_ok(r1, "add_vhost", "before-reset")
        ctl_ok(r1, "add_user", "old-user", "x")
        wait_for(lambda: _sees(r3, "user", "old-user", "list_users"), SEEN_S, interval_s=0.1,
                 what=f"{r3.name} to list old-user")
        _refused(r3.ctl("reset"), EX_TEMPFAIL, "stop_app")

        ctl_ok(r3, "stop_app")
        assert f"node {r3.name} left the cluster" in ctl_ok(r3, "reset")
        ctl_ok(r3, "start_app")
        r3.port = r3.read_ports()["amqp"]
        status = cluster_status(r3)
        assert status["disk_nodes"] == status["running_nodes"] == [r3.name]
        assert status["cluster_name"] != cluster_status(r1)["cluster_name"]
        with _channel(r3) as ch:  # the default user of a fresh node
            ch.queue_declare("fresh-on-r3")
        assert _column(r3, "user", "list_users") == {"guest"}
        assert _column(r3, "name", "list_vhosts") == {"/"}
        for node in (r1, r2):
            status = _wait_disk_nodes(node, [r1, r2])
            assert sorted(status["running_nodes"]) == _names([r1, r2])
        # two separate brokers now: neither sees the other's changes
        ctl_ok(r1, "add_user", "after-reset", "x")
        ctl_ok(r3, "add_user", "only-on-r3", "x")
        wait_for(lambda: _sees(r2, "user", "after-reset", "list_users"), SEEN_S,
                 interval_s=0.1, what=f"{r2.name} to list after-reset")
        assert "only-on-r3" not in _column(r1, "user", "list_users")
        assert "after-reset" not in _column(r3, "user", "list_users")


@pytest.mark.parametrize("leaving", [0, 1], ids=["first", "second"])
def test_reset_leaves_a_cluster_of_two_which_the_other_node_keeps_alone(tmp_path: Path,
                                                                        leaving: int):
    # the node that stays cannot remove the other by itself (one vote of two): the
    # resetting node votes for its own removal; "first" is the node that founded the
    # cluster, so most likely its metadata leader
    with running_cluster(tmp_path, 2, prefix="t") as nodes:
        gone, stays = nodes[leaving], nodes[1 - leaving]
        ctl_ok(gone, "stop_app")
        assert f"node {gone.name} left the cluster" in ctl_ok(gone, "reset")
        ctl_ok(gone, "start_app")
        gone.port = gone.read_ports()["amqp"]
        assert cluster_status(gone)["disk_nodes"] == [gone.name]
        status = _wait_disk_nodes(stays, [stays])
        assert status["running_nodes"] == [stays.name]
        ctl_ok(stays, "add_user", "alone", "x")  # a cluster of one: it commits by itself
        assert "alone" not in _column(gone, "user", "list_users")


# -- join_cluster diagnostics ---------------------------------------------------------------------
def test_join_cluster_explains_each_refusal_in_one_line_and_changes_nothing(tmp_path: Path):
    shared = tmp_path / "shared.cookie"
    cookie.ensure(shared)
    with running_cluster(tmp_path / "a", 2, prefix="a", cookie_file=shared) as (a1, a2), \
            running_cluster(tmp_path / "j", 1, prefix="j", cookie_file=shared) as (j1,), \
            running_cluster(tmp_path / "s", 1, prefix="s") as (stranger,):
        ctl_ok(j1, "add_user", "joiner-own", "x")
        _refused(j1.ctl("join_cluster", a1.name), EX_TEMPFAIL, "stop_app")
        ctl_ok(j1, "stop_app")

        _refused(j1.ctl("join_cluster", "w9@no-such-host.invalid:25672"), EX_NOHOST,
                 "no-such-host.invalid", "does not resolve", "check the host")
        closed = f"w9@127.0.0.1:{free_port()}"  # bound by nobody
        _refused(j1.ctl("join_cluster", closed), EX_UNAVAILABLE, closed,
                 "connection refused", "start it")
        _refused(j1.ctl("join_cluster", stranger.name), EX_NOPERM, stranger.name, "cookie",
                 "same cookie")

        ctl_ok(a2, "stop_app")
        _refused(j1.ctl("join_cluster", a2.name), EX_TEMPFAIL, a2.name, "app is stopped",
                 "start_app")
        _refused(a2.ctl("join_cluster", j1.name), EX_DATAERR, "already a member",
                 a1.name, "reset")
        ctl_ok(a2, "start_app")
        a2.port = a2.read_ports()["amqp"]
        wait_cluster([a1, a2], timeout_s=SEEN_S)

        # a member cut off from its cluster could not commit the join: refused before this
        # node is emptied for joining
        ctl_ok(a1, "cut_cluster_links")
        _refused(j1.ctl("join_cluster", a1.name), EX_TEMPFAIL, a1.name, "no majority",
                 "1 of 2 nodes reachable", "retry")
        ctl_ok(a1, "heal_cluster_links")

        # nothing changed on either side
        ctl_ok(j1, "start_app")
        j1.port = j1.read_ports()["amqp"]
        assert cluster_status(j1)["disk_nodes"] == [j1.name]
        assert "joiner-own" in _column(j1, "user", "list_users")
        wait_cluster([a1, a2], timeout_s=SEEN_S)
        for node in (a1, a2):
            assert sorted(cluster_status(node)["disk_nodes"]) == _names([a1, a2])
            assert "joiner-own" not in _column(node, "user", "list_users")
        assert cluster_status(stranger)["disk_nodes"] == [stranger.name]


def test_nodes_of_one_cluster_run_the_same_major_minor_version():
    major, minor, *_ = __version__.split(".")
    assert compatible(__version__)
    assert compatible(f"{major}.{minor}.9999")
    assert not compatible(f"{major}.{int(minor) + 1}.0")
    assert not compatible(f"{int(major) + 1}.{minor}.0")
    assert not compatible("")
    assert not compatible("not-a-version")


OTHER_VERSION = "99.7.0"
# the real server, in a process that reports another release: what an older or newer
# installation of WarrenMQ would say on the wire
_OTHER_VERSION_SERVER = (
    "import sys, warrenmq; "
    f"warrenmq.__version__ = {OTHER_VERSION!r}; "
    "from warrenmq.cli.server import main; "
    "sys.exit(main())"
)


def test_join_cluster_refuses_a_node_of_another_version_both_ways(tmp_path: Path):
    shared = tmp_path / "shared.cookie"
    cookie.ensure(shared)
    other = prepare_node(tmp_path, "v1", env={"WARREN_COOKIE_FILE": str(shared)},
                         nodename=f"v1@127.0.0.1:{free_port()}")
    assert other.argv[1:3] == ["-m", "warrenmq.cli.server"]
    other.argv[1:3] = ["-c", _OTHER_VERSION_SERVER]
    launch(other)
    try:
        with running_cluster(tmp_path / "a", 1, prefix="a", cookie_file=shared) as (a1,):
            assert json.loads(ctl_ok(other, "status", "--formatter", "json"))[
                "product_version"] == OTHER_VERSION
            ctl_ok(a1, "stop_app")
            _refused(a1.ctl("join_cluster", other.name), EX_DATAERR, other.name,
                     f"runs WarrenMQ {OTHER_VERSION}", __version__, "major.minor")
            ctl_ok(a1, "start_app")
            ctl_ok(other, "stop_app")
            _refused(other.ctl("join_cluster", a1.name), EX_DATAERR, a1.name,
                     f"runs WarrenMQ {__version__}", OTHER_VERSION, "major.minor")
            ctl_ok(other, "start_app")
            # the member checks as well, whatever the joiner checked
            with ControlClient(parse(a1.name), cookie.read(shared), 30.0) as client:
                client.connect()
                with pytest.raises(RemoteError) as refused:
                    client.call("cluster_join", {"node": other.name, "node_id": 12345,
                                                 "version": OTHER_VERSION})
            assert f"runs WarrenMQ {OTHER_VERSION}" in str(refused.value)
            for node in (a1, other):
                assert cluster_status(node)["disk_nodes"] == [node.name]
    finally:
        stop_cluster([other])
