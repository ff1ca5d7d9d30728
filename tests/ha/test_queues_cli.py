"""Operating replicated queues on a real cluster of three `warren-server` processes:
`warren-queues` (add_member, delete_member, grow, shrink, rebalance, transfer_leadership,
check_if_node_is_quorum_critical), warrenctl's list_unresponsive_queues, sync_queue and
cancel_sync_queue, and the management API's replica fields.

Each verb is checked by what `warrenctl list_queues name leader members online ...` shows
afterwards, asked of a node other than the one the verb was sent to. Tests that stop nodes
start a cluster of their own; the others share one (`cluster3`) and use names of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.mgmt.http import Api, q
from tests.support.cluster import ctl_ok, listing, running_cluster
from tests.support.node import Node, wait_for

COLUMNS = ("name", "type", "leader", "members", "online", "messages", "slave_nodes",
           "synchronised_slave_nodes")
SETTLE_S = 30.0  # a change made through one node is visible on every node well within this


# -- helpers -----------------------------------------------------------------------------------------
def queues_cli(node: Node, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """Run warren-queues against `node` (its cookie, its cluster port)."""
    env = {**os.environ, "WARREN_COOKIE_FILE": str(node.cookie_file)}
    return subprocess.run([sys.executable, "-m", "warrenmq.cli.queues", "-n", node.address,
                           *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def queues_ok(node: Node, *args: str) -> str:
    r = queues_cli(node, *args)
    assert r.returncode == 0, f"warren-queues {' '.join(args)}: {r.returncode} {r.stderr}"
    return r.stdout


def rows(node: Node, vhost: str = "/") -> dict[str, dict]:
    """list_queues with the replica columns, by queue name."""
    return {r["name"]: r for r in listing(node, "list_queues", "-p", vhost, *COLUMNS)}


def row(node: Node, name: str) -> dict:
    return rows(node)[name]


def wait_row(node: Node, name: str, check, what: str, timeout_s: float = SETTLE_S) -> dict:
    """Poll list_queues on `node` until the queue's row satisfies `check`."""
    last: dict = {}

    def ok() -> dict | None:
        nonlocal last
        last = rows(node).get(name, {})
        return last if last and check(last) else None

    try:
        return wait_for(ok, timeout_s, 0.1, what)
    except TimeoutError as e:
        raise AssertionError(f"{e}; last row: {last}") from None


def connect(node: Node) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.url()))


def declare(node: Node, name: str, arguments: dict | None = None, publish: int = 0,
            prefix: str = "m") -> list[bytes]:
    """Declare a durable queue on `node` and publish `publish` persistent messages to it
    with confirms; returns the bodies."""
    bodies = [f"{prefix}-{i}".encode() for i in range(publish)]
    conn = connect(node)
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments=arguments)
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", name, body, pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()
    return bodies


def quorum(size: int | None = None) -> dict:
    args: dict = {"x-queue-type": "quorum"}
    if size is not None:
        args["x-quorum-initial-group-size"] = size
    return args


def drain(node: Node, name: str, expected: int, timeout_s: float = SETTLE_S) -> list[bytes]:
    """Consume (and ack) messages from the queue through `node` until `expected` arrived."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(got)} of {expected} messages from {name} on "
                                 f"{node.name} within {timeout_s}s")
        try:
            conn = connect(node)
        except pika.exceptions.AMQPError:
            time.sleep(0.1)
            continue
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=100)
            for method, _props, body in ch.consume(name, inactivity_timeout=1.0):
                if body is None:
                    if time.monotonic() > deadline:
                        break
                    continue
                got.append(body)
                ch.basic_ack(method.delivery_tag)
                if len(got) >= expected:
                    break
            ch.cancel()
        except pika.exceptions.AMQPError:
            pass  # the queue's leader may still be changing: connect again
        finally:
            if conn.is_open:
                conn.close()
    return got


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with running_cluster(tmp_path_factory.mktemp("ha"), 3) as nodes:
        yield nodes


# -- membership verbs ------------------------------------------------------------------------------
def test_add_member_transfer_and_delete_member_change_what_list_queues_shows(cluster3):
    n1, n2, n3 = cluster3
    declare(n1, "members.q", quorum(2), publish=5)
    before = wait_row(n3, "members.q", lambda r: r["leader"] in (n1.name, n2.name),
                      "a leader for members.q")
    assert before["members"] == [n1.name, n2.name] and before["online"] == before["members"]

    out = queues_ok(n3, "add_member", "members.q", n3.name)
    assert f"Adding a member for queue members.q on node {n3.name}" in out
    grown = wait_row(n2, "members.q", lambda r: r["members"] == [n1.name, n2.name, n3.name]
                     and n3.name in r["synchronised_slave_nodes"], "n3 a member in sync")
    assert grown["online"] == grown["members"] and grown["type"] == "quorum"
    # the new member caught up: its own replica holds the messages published before
    wait_row(n3, "members.q", lambda r: r["messages"] == 5, "5 messages on n3's replica")

    queues_ok(n1, "transfer_leadership", "members.q", n3.name)
    moved = wait_row(n1, "members.q", lambda r: r["leader"] == n3.name, "n3 leading")
    assert sorted(moved["slave_nodes"]) == [n1.name, n2.name]

    # removing the leader's own member: it hands over first, then the new leader removes it
    queues_ok(n2, "delete_member", "members.q", n3.name)
    shrunk = wait_row(n1, "members.q", lambda r: r["members"] == [n1.name, n2.name]
                      and r["leader"] in (n1.name, n2.name), "n3 gone, a leader elsewhere")
    assert shrunk["online"] == [n1.name, n2.name]
    assert rows(n1)["members.q"]["messages"] == 5


def test_membership_verbs_refuse_what_cannot_be_done_with_a_clear_message(cluster3):
    n1, n2, n3 = cluster3
    declare(n1, "refuse.q", quorum(2))
    declare(n1, "refuse.solo", quorum(1))
    declare(n1, "refuse.classic")
    cases = [
        (("add_member", "no-such-queue", n2.name), 65,
         "queue 'no-such-queue' in vhost '/' does not exist"),
        (("add_member", "-p", "nowhere", "refuse.q", n2.name), 65,
         'Virtual host "nowhere" does not exist'),
        (("add_member", "refuse.q", "ghost@127.0.0.1"), 65,
         "node ghost@127.0.0.1 is not a member of this cluster"),
        (("add_member", "refuse.q", "bad name!@x"), 64, "invalid node name"),
        (("add_member", "refuse.q", n1.name), 65, f"node {n1.name} already hosts a member"),
        (("delete_member", "refuse.q", n3.name), 65,
         f"node {n3.name} is not a member of queue 'refuse.q'"),
        (("delete_member", "refuse.solo", n1.name), 65, "the last member"),
        (("add_member", "refuse.classic", n2.name), 65, "is a classic queue that is not "
                                                         "replicated"),
        (("transfer_leadership", "refuse.q", n3.name), 65,
         f"node {n3.name} is not a member of queue 'refuse.q'"),
        (("rebalance", "streams"), 64, "type streams is not supported"),
        (("grow", n3.name, "some"), 64, "invalid choice"),
        (("add_member", "refuse.q"), 64, "Usage: warren-queues"),
    ]
    for args, code, text in cases:
        r = queues_cli(n2, *args)
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        assert text in r.stderr and r.stderr.startswith("Error: "), (args, r.stderr)
    # nothing changed
    assert row(n3, "refuse.q")["members"] == [n1.name, n2.name]
    assert row(n3, "refuse.solo")["members"] == [n1.name]


def test_grow_shrink_and_rebalance_spread_members_and_leaders(cluster3):
    n1, n2, n3 = cluster3
    names = ["gs.1", "gs.2", "gs.3"]
    for name in names:
        declare(n1, name, quorum(1))
    declare(n3, "solo.1", quorum(1))

    out = queues_ok(n2, "grow", n2.name, "all", "--queue-pattern", r"^gs\.")
    lines = out.splitlines()
    assert lines[0] == f"Growing all quorum queues on {n2.name}..."
    assert lines[1] == "vhost\tname\tsize\tresult"
    assert sorted(lines[2:]) == [f"/\t{n}\t2\tok" for n in names]
    # `even`: only queues with an even number of members (all three have two now)
    out = queues_ok(n1, "--formatter", "json", "grow", n3.name, "even", "--queue-pattern",
                    r"^gs\.", "--vhost-pattern", "^/$")
    assert sorted((r["name"], r["size"], r["result"]) for r in json.loads(out)) == \
        [(n, 3, "ok") for n in names]
    for name in names:
        wait_row(n3, name, lambda r: sorted(r["members"]) == sorted([n1.name, n2.name, n3.name])
                 and len(r["synchronised_slave_nodes"]) == 2, f"{name} on three nodes in sync")

    out = queues_ok(n2, "rebalance", "quorum", "--queue-pattern", r"^gs\.")
    assert out.splitlines()[0] == "Re-balancing leaders of quorum queues..."
    assert sorted(out.splitlines()[2:]) == [f"{n.name}\t1\t0" for n in (n1, n2, n3)]
    leaders = {rows(n2)[name]["leader"] for name in names}
    assert leaders == {n1.name, n2.name, n3.name}

    out = queues_ok(n1, "shrink", n3.name)
    table = {line.split("\t")[1]: line.split("\t")[2:] for line in out.splitlines()[2:]}
    assert all(table[n] == ["2", "ok"] for n in names), table
    assert table["solo.1"] == ["1", "error: the last node cannot be removed"]
    for name in names:
        shrunk = wait_row(n2, name, lambda r: n3.name not in r["members"]
                          and r["leader"] in (n1.name, n2.name), f"{name} off n3")
        assert sorted(shrunk["members"]) == sorted([n1.name, n2.name])
    errors = queues_ok(n2, "-q", "--no-table-headers", "shrink", n3.name, "--errors-only")
    assert errors.splitlines() == ["/\tsolo.1\t1\terror: the last node cannot be removed"]


# -- serving throughout --------------------------------------------------------------------------
def test_a_queue_keeps_serving_during_add_member_and_new_members_hold_earlier_messages(
        tmp_path: Path):
    with running_cluster(tmp_path, 3) as (n1, n2, n3):
        before = declare(n1, "serving.q", quorum(1), publish=200, prefix="before")
        confirmed: list[tuple[float, bytes]] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def publish() -> None:
            try:
                conn = connect(n1)
                ch = conn.channel()
                ch.confirm_delivery()
                i = 0
                while not stop.is_set():
                    body = f"during-{i}".encode()
                    ch.basic_publish("", "serving.q", body,
                                     pika.BasicProperties(delivery_mode=2))
                    confirmed.append((time.monotonic(), body))
                    i += 1
                conn.close()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                failures.append(e)

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            wait_for(lambda: len(confirmed) >= 20, 10, what="the publisher under way")
            for new in (n2, n3):
                started = time.monotonic()
                queues_ok(n1, "add_member", "serving.q", new.name)
                ended = time.monotonic()
                # publishes were confirmed while the member was being added
                assert any(started <= t <= ended for t, _ in confirmed), new.name
                assert not failures, failures
            wait_for(lambda: len(confirmed) >= len(before) + 100, 20,
                     what="more confirms after the members were added")
        finally:
            stop.set()
            publisher.join(30)
        assert not failures, failures
        during = [body for _, body in confirmed]
        wait_row(n2, "serving.q", lambda r: sorted(r["synchronised_slave_nodes"]) ==
                 sorted(m for m in (n2.name, n3.name) if m != r["leader"])
                 and len(r["members"]) == 3, "both new members in sync")

        n1.stop()  # the only member the queue had before
        got = drain(n2, "serving.q", len(before) + len(during))
        assert sorted(got) == sorted(before + during)
        assert got[:len(before)] == before  # in order, the earlier ones first


# -- manual synchronisation ----------------------------------------------------------------------
def test_with_manual_sync_a_member_added_by_policy_is_not_in_sync_until_sync_queue(cluster3):
    n1, n2, n3 = cluster3
    two = json.dumps({"ha-mode": "nodes", "ha-params": [n1.name, n2.name],
                      "ha-sync-mode": "manual"})
    ctl_ok(n1, "set_policy", "--apply-to", "queues", "manual", r"^manual\.", two)
    bodies = declare(n1, "manual.q", publish=20)
    first = wait_row(n3, "manual.q", lambda r: r["leader"] in (n1.name, n2.name)
                     and r["synchronised_slave_nodes"], "manual.q mirrored on n1, n2")
    assert first["type"] == "classic" and first["members"] == [n1.name, n2.name]

    everywhere = json.dumps({"ha-mode": "all", "ha-sync-mode": "manual"})
    ctl_ok(n2, "set_policy", "--apply-to", "queues", "manual", r"^manual\.", everywhere)
    wait_row(n1, "manual.q", lambda r: n3.name in r["members"], "n3 recorded as a member")
    bodies += declare(n2, "manual.q", publish=1, prefix="later")  # committed without n3
    for node in (n1, n2, n3):
        r = row(node, "manual.q")
        assert n3.name in r["slave_nodes"] and n3.name in r["online"]
        assert n3.name not in r["synchronised_slave_nodes"], (node.name, r)
    assert row(n3, "manual.q")["messages"] == 0  # n3's replica got nothing

    out = ctl_ok(n3, "sync_queue", "manual.q")
    assert "Synchronising queue 'manual.q' in vhost '/' ..." in out
    synced = wait_row(n2, "manual.q", lambda r: n3.name in r["synchronised_slave_nodes"]
                      or r["leader"] == n3.name, "n3 in sync")
    assert len(synced["synchronised_slave_nodes"]) == 2
    wait_row(n3, "manual.q", lambda r: r["messages"] == len(bodies), "n3 caught up")

    # nothing is catching up any more: cancelling leaves every member synchronised
    out = ctl_ok(n1, "--formatter", "json", "cancel_sync_queue", "manual.q")
    assert json.loads(out) == {"cancelled": []}
    assert len(row(n1, "manual.q")["synchronised_slave_nodes"]) == 2

    refusals = [(("sync_queue", "members-of-nothing"), "does not exist"),
                (("sync_queue", "refuse.classic.sync"), "is not mirrored"),
                (("sync_queue", "quorum.sync"), "is a quorum queue")]
    declare(n1, "refuse.classic.sync")
    declare(n1, "quorum.sync", quorum())
    for args, text in refusals:
        r = n1.ctl(*args)
        assert r.returncode == 65 and text in r.stderr, (args, r.stderr)
    automatic = json.dumps({"ha-mode": "all"})
    ctl_ok(n1, "set_policy", "--apply-to", "queues", "manual", r"^manual\.", automatic)
    r = n1.ctl("cancel_sync_queue", "manual.q")
    assert r.returncode == 65 and "synchronises its members automatically" in r.stderr


# -- health ----------------------------------------------------------------------------------------
def test_quorum_critical_and_unresponsive_queues_follow_the_nodes_that_are_down(
        tmp_path: Path):
    with running_cluster(tmp_path, 3) as (n1, n2, n3):
        declare(n1, "health.q", quorum(), publish=3)
        declare(n1, "health.classic")
        wait_row(n1, "health.q", lambda r: r["leader"] and len(r["synchronised_slave_nodes"])
                 == 2, "health.q led, three members in sync")

        r = queues_cli(n1, "check_if_node_is_quorum_critical")
        assert r.returncode == 0, r.stderr
        assert f"Node {n1.address} reported no quorum queues with minimum quorum" in r.stdout
        r = queues_cli(n1, "--formatter", "json", "check_if_node_is_quorum_critical")
        assert (r.returncode, json.loads(r.stdout)) == (0, {"result": "ok"})
        api = Api(f"http://127.0.0.1:{n1.ports['mgmt']}")
        reply = api.get("/api/health/checks/node-is-quorum-critical")
        assert (reply.status, reply.body) == (200, {"status": "ok"})
        r = n1.ctl("list_unresponsive_queues", "--queue-timeout", "3")
        assert (r.returncode, r.stdout.strip()) == (0, "Listing unresponsive queues for vhost "
                                                      "/ ..."), r.stderr

        n3.stop()
        # two of three left: stopping n1 (or n2) would leave health.q without a majority
        def critical() -> subprocess.CompletedProcess | None:
            r = queues_cli(n1, "check_if_node_is_quorum_critical")
            return r if r.returncode != 0 else None

        r = wait_for(critical, SETTLE_S, 0.2, "n1 quorum critical")
        assert r.returncode == 69
        assert (f"queue 'health.q' in vhost '/' would lose quorum if node {n1.address} is "
                "stopped") in r.stderr
        r = queues_cli(n2, "--formatter", "json", "check_if_node_is_quorum_critical")
        doc = json.loads(r.stdout)
        assert r.returncode == 69 and doc["result"] == "error"
        assert [(x["name"], x["virtual_host"], x["type"]) for x in doc["queues"]] == \
            [("health.q", "/", "quorum")]
        reply = api.get("/api/health/checks/node-is-quorum-critical")
        assert reply.status == 503 and reply.body["status"] == "failed"
        assert "would lose their quorum" in reply.body["reason"]
        assert [(x["name"], x["virtual_host"]) for x in reply.body["queues"]] == \
            [("health.q", "/")]
        # a majority is still up: the queue answers (once a new leader is elected, if n3 led)
        wait_for(lambda: listing(n1, "list_unresponsive_queues", "--queue-timeout", "3") == [],
                 SETTLE_S, 0.2, "health.q responsive with two of three members")

        n2.stop()

        def unresponsive() -> list[dict] | None:
            found = listing(n1, "list_unresponsive_queues", "--queue-timeout", "3", "name",
                            "durable", "auto_delete", "arguments", "pid", "reason")
            return found if {r["name"] for r in found} == {"health.q"} else None

        [found] = wait_for(unresponsive, SETTLE_S, 0.2, "health.q unresponsive on n1")
        assert found["durable"] is True and found["auto_delete"] is False
        assert found["arguments"] == [["x-queue-type", "longstr", "quorum"]]
        assert found["pid"].startswith("<") and found["reason"]
        r = n1.ctl("list_unresponsive_queues", "--local", "--queue-timeout", "3", "name")
        assert r.returncode == 0 and "health.q" in r.stdout.splitlines()
        r = n1.ctl("list_unresponsive_queues", "nonsense")
        assert r.returncode == 64 and "Info key(s) nonsense are not supported" in r.stderr


# -- management API ----------------------------------------------------------------------------------
def test_the_management_api_shows_leader_members_and_mirror_fields(cluster3):
    n1, n2, n3 = cluster3
    ctl_ok(n1, "set_policy", "--apply-to", "queues", "api-ha", r"^api\.ha",
           json.dumps({"ha-mode": "all"}))
    declare(n1, "api.qq", quorum())
    declare(n1, "api.ha")
    declare(n2, "api.plain")
    api = Api(f"http://127.0.0.1:{n3.ports['mgmt']}")

    def shown(name: str, ready) -> dict:
        def get() -> dict | None:
            reply = api.call("GET", f"/api/queues/{q('/')}/{q(name)}")
            assert reply.status == 200, reply.text
            return reply.body if ready(reply.body) else None
        return wait_for(get, SETTLE_S, 0.1, f"{name} in the API")

    everyone = sorted(n.name for n in cluster3)
    qq = shown("api.qq", lambda b: b.get("leader"))
    assert qq["type"] == "quorum" and sorted(qq["members"]) == everyone
    assert sorted(qq["online"]) == everyone and qq["node"] == qq["leader"]
    assert qq["leader"] in everyone

    ha = shown("api.ha", lambda b: b.get("leader") and len(b["synchronised_slave_nodes"]) == 2)
    assert ha["type"] == "classic" and ha["node"] == ha["leader"]
    assert sorted(ha["members"]) == everyone and sorted(ha["online"]) == everyone
    assert sorted(ha["slave_nodes"]) == sorted(n for n in everyone if n != ha["leader"])
    assert sorted(ha["synchronised_slave_nodes"]) == sorted(ha["slave_nodes"])

    plain = shown("api.plain", lambda b: True)
    assert plain["node"] == n2.name and "members" not in plain and "slave_nodes" not in plain

    listed = {x["name"]: x for x in api.call("GET", "/api/queues").body}
    assert listed["api.qq"]["leader"] in everyone
    assert sorted(listed["api.qq"]["members"]) == everyone
    assert sorted(listed["api.ha"]["synchronised_slave_nodes"]) == sorted(
        listed["api.ha"]["slave_nodes"])
    assert listed["api.plain"]["node"] == n2.name


def test_the_console_queue_page_shows_each_member_and_its_state(cluster3):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"{chromium} is missing (apt-get install chromium)")
    n1, n2, n3 = cluster3
    ctl_ok(n1, "set_policy", "--apply-to", "queues", "api-ha", r"^api\.ha",
           json.dumps({"ha-mode": "all"}))
    declare(n1, "api.ha.console", publish=2)
    api = Api(f"http://127.0.0.1:{n2.ports['mgmt']}")

    def in_sync() -> dict | None:
        body = api.call("GET", f"/api/queues/{q('/')}/{q('api.ha.console')}").body
        return body if body.get("leader") and len(body["synchronised_slave_nodes"]) == 2 \
            else None

    shown = wait_for(in_sync, SETTLE_S, 0.1, "api.ha.console led and in sync")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium),
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{n2.ports['mgmt']}/")
            page.fill("#login-username", "guest")
            page.fill("#login-password", "guest")
            page.click("#login-submit")
            page.wait_for_selector("#main h1")
            page.goto(page.url.split("#")[0] + f"#/queues/{q('/')}/{q('api.ha.console')}")
            page.wait_for_selector("#q-members li")
            items = {li.get_attribute("data-node"): li.inner_text()
                     for li in page.query_selector_all("#q-members li")}
            assert sorted(items) == sorted(n.name for n in cluster3)
            assert "leader" in items[shown["leader"]]
            assert all("in sync" in text for name, text in items.items()
                       if name != shown["leader"])
            assert page.inner_text("#q-leader") == shown["leader"]
            assert page.inner_text("#q-online") == "3 of 3"
            assert not errors, errors
        finally:
            browser.close()
