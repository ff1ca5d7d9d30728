"""Faults in a running cluster, black-box: real `warren-server` processes on loopback, real
signals, links cut by the nodes themselves (`warrenctl cut_cluster_links`), real clients.

What is held, whichever node is hit (the metadata leader included, since every node is hit
in turn):
- SIGKILL of one node of three: the other two keep committing metadata changes, and do so
  promptly; restarted, the node catches up and every node lists it as running again;
- a node isolated by cutting its links refuses metadata changes with an error that names
  the cause (AMQP: connection.close 541; warrenctl: non-zero exit, the reason on stderr);
  the majority keeps working; healed, the node converges to the majority's metadata and
  what it refused exists nowhere;
- SIGSTOP of one node: the other two keep working; SIGCONT: it converges;
- a node restarted (SIGTERM, then started on the same data) rejoins by itself, and a rolling
  restart of all three keeps the cluster and its metadata.

All tests share one cluster (`faults_cluster`); `faults_healthy_cluster` hands it over whole
(every process running, every node listing all three as running) and, after the test,
undoes what a failed test may have left (a stopped process, cut links).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pika
import pika.exceptions
import pytest

from tests.conftest import unique
from tests.support.cluster import (
    cluster_status,
    ctl_ok,
    listing,
    restart,
    revive,
    running_cluster,
    wait_cluster,
)
from tests.support.node import Node, launch, wait_for

SEEN_S = 30.0  # a committed change reaches every running member well within this
# A metadata change that cannot commit is refused after 10 s; one that succeeds while a
# node is down must take less. A SIGSTOPped leader is only noticed when its links fall
# silent (5 s), then a new one is elected: "promptly" allows for that.
PROMPT_S = 9.0
# what the isolated node's refusal must name: it cannot reach a majority, or, when it led
# the metadata group until the cut, that it lost that leadership before the change committed
ISOLATION_CAUSE = re.compile(r"not committed within \d+s: .*"
                             r"(cannot reach a majority|leadership lost)")



def _timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def _declare(node: Node, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    try:
        conn.channel().queue_declare(queue, durable=True)
    finally:
        if conn.is_open:
            conn.close()


def _declare_refused(node: Node, queue: str) -> pika.exceptions.ConnectionClosedByBroker:
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    try:
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            conn.channel().queue_declare(queue, durable=True)
        return closed.value
    finally:
        if conn.is_open:
            conn.close()


def _users(node: Node) -> set[str]:
    return {row["user"] for row in listing(node, "list_users")}


def _queues(node: Node) -> set[str]:
    return {row["name"] for row in listing(node, "list_queues", "name")}


def _wait_sees(node: Node, users: set[str], queues: set[str]) -> None:
    wait_for(lambda: users <= _users(node) and queues <= _queues(node), SEEN_S,
             interval_s=0.1, what=f"{node.name} to list users {sorted(users)} and queues "
             f"{sorted(queues)}")


def _change_promptly(node: Node, tag: str) -> tuple[str, str]:
    """A queue declared over AMQP and a user added with warrenctl on `node`, each within
    PROMPT_S; returns (user, queue)."""
    user, queue = f"{tag}-user", f"{tag}-queue"
    assert _timed(lambda: _declare(node, queue)) < PROMPT_S
    assert _timed(lambda: ctl_ok(node, "add_user", user, "x")) < PROMPT_S
    return user, queue


# -- the shared cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faults_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with running_cluster(tmp_path_factory.mktemp("faults"), 3, "join", prefix="k") as nodes:
        yield nodes


@pytest.fixture
def faults_healthy_cluster(faults_cluster: list[Node]) -> Iterator[list[Node]]:
    revive(faults_cluster, timeout_s=SEEN_S)
    yield faults_cluster
    for node in faults_cluster:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)
            node.ctl("heal_cluster_links", timeout_s=SEEN_S)


# -- SIGKILL ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("victim", [0, 1, 2], ids=["k1", "k2", "k3"])
def test_sigkill_leaves_the_others_working_and_the_restarted_node_catches_up(
        faults_healthy_cluster: list[Node], victim: int):
    nodes = faults_healthy_cluster
    dead = nodes[victim]
    alive = [n for n in nodes if n is not dead]
    dead.stop(signal.SIGKILL)

    made = [_change_promptly(node, unique(f"while-{dead.name.split('@')[0]}-dead"))
            for node in alive]
    users, queues = {u for u, _ in made}, {q for _, q in made}
    statuses = wait_cluster(alive, expect_running=[n.name for n in alive], timeout_s=SEEN_S)
    for status in statuses.values():  # down, not gone: still a member
        assert sorted(status["disk_nodes"]) == sorted(n.name for n in nodes)
    for node in alive:
        _wait_sees(node, users, queues)

    launch(dead)
    wait_cluster(nodes, timeout_s=SEEN_S)
    _wait_sees(dead, users, queues)


# -- partitions -----------------------------------------------------------------------------------
def test_an_isolated_node_refuses_metadata_changes_and_converges_when_healed(
        faults_healthy_cluster: list[Node]):
    k1, k2, k3 = faults_healthy_cluster
    ctl_ok(k1, "cut_cluster_links")
    wait_cluster([k1], expect_running=[k1.name], timeout_s=SEEN_S)
    wait_cluster([k2, k3], expect_running=[k2.name, k3.name], timeout_s=SEEN_S)

    refused_queue, refused_user = unique("refused-queue"), unique("refused-user")
    # each refusal takes the metadata deadline (10 s): both at once, and the majority's
    # changes meanwhile
    with ThreadPoolExecutor(2) as pool:
        amqp = pool.submit(_declare_refused, k1, refused_queue)
        cli = pool.submit(k1.ctl, "add_user", refused_user, "x")
        majority_user, _ = _change_promptly(k2, unique("majority-k2"))
        _, majority_queue = _change_promptly(k3, unique("majority-k3"))
        closed, r = amqp.result(), cli.result()
    assert closed.reply_code == 541, closed
    assert closed.reply_text.startswith("INTERNAL_ERROR - "), closed.reply_text
    assert ISOLATION_CAUSE.search(closed.reply_text), closed.reply_text
    assert r.returncode != 0, r
    (line,) = r.stderr.strip().splitlines()
    assert ISOLATION_CAUSE.search(line), line

    ctl_ok(k1, "heal_cluster_links")
    wait_cluster([k1, k2, k3], timeout_s=SEEN_S)
    _wait_sees(k1, {majority_user}, {majority_queue})
    # what the minority could not commit happened nowhere
    for node in (k1, k2, k3):
        assert refused_user not in _users(node)
        assert refused_queue not in _queues(node)
    # and the healed node takes changes again
    user, queue = _change_promptly(k1, unique("after-heal"))
    for node in (k2, k3):
        _wait_sees(node, {user}, {queue})


@pytest.mark.parametrize("victim", [0, 1, 2], ids=["k1", "k2", "k3"])
def test_sigstop_leaves_the_others_working_and_sigcont_converges(
        faults_healthy_cluster: list[Node], victim: int):
    nodes = faults_healthy_cluster
    frozen = nodes[victim]
    alive = [n for n in nodes if n is not frozen]
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        made = [_change_promptly(node, unique(f"while-{frozen.name.split('@')[0]}-stopped"))
                for node in alive]
        wait_cluster(alive, expect_running=[n.name for n in alive], timeout_s=SEEN_S)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    wait_cluster(nodes, timeout_s=SEEN_S)
    _wait_sees(frozen, {u for u, _ in made}, {q for _, q in made})


# -- restarts -------------------------------------------------------------------------------------
def test_a_restarted_node_rejoins_by_itself_and_catches_up(faults_healthy_cluster: list[Node]):
    k1, k2, k3 = faults_healthy_cluster
    k2.stop()  # SIGTERM: a clean shutdown
    user, queue = _change_promptly(k3, unique("while-k2-stopped"))
    launch(k2)  # the same name, ports and data; no join
    wait_cluster([k1, k2, k3], timeout_s=SEEN_S)
    _wait_sees(k2, {user}, {queue})


def test_a_rolling_restart_keeps_the_cluster_and_its_metadata(
        faults_healthy_cluster: list[Node]):
    nodes = faults_healthy_cluster
    name_before = cluster_status(nodes[0])["cluster_name"]
    users, queues = set(), set()
    for node in nodes:
        user, queue = _change_promptly(node, unique(f"before-{node.name.split('@')[0]}"))
        users.add(user)
        queues.add(queue)
    for node in nodes:
        restart(node)
        wait_cluster(nodes, timeout_s=SEEN_S)
        # the cluster stays writable between the steps
        user, queue = _change_promptly(nodes[0] if node is not nodes[0] else nodes[1],
                                       unique(f"after-{node.name.split('@')[0]}"))
        users.add(user)
        queues.add(queue)
    for node in nodes:
        _wait_sees(node, users, queues)
        status = cluster_status(node)
        assert status["cluster_name"] == name_before
        assert sorted(status["disk_nodes"]) == sorted(n.name for n in nodes)

