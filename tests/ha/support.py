"""Cluster-side helpers of the replicated-queue fault tests: seeds, queues, faults, reports.

Theory of operation. A run is reproducible from its seed: the seed picks the leader's node,
which client sits where, prefetch and ack batching, and the moment of the fault (a number
of confirms). `seeds()` is the list the tests are parametrized with: WARREN_HA_SEED=S runs
seed S alone, WARREN_HA_SEEDS=N runs seeds 1..N (3 by default).

Replicated queues come in the two kinds a RabbitMQ user declares: a quorum queue
(`x-queue-type: quorum`) and a classic queue under the `ha-all` policy
(`{"ha-mode":"all","ha-sync-mode":"automatic"}`). `wait_replicated` polls
`warrenctl list_queues name type leader members online messages` until each queue has its
replica on every node, every one online, and a leader (optionally a given one).

Faults are real: SIGKILL and SIGSTOP of the node's process, or `warrenctl
cut_cluster_links` on it (its cluster links closed and refused: a partition between it and
the rest); `heal` undoes the two that can be undone. `report` gathers what a failing run
needs: each node's queue listing and the warnings and errors in its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import pika

from tests.support.cluster import ctl_ok, identity
from tests.support.node import Node, wait_for

QUORUM = {"x-queue-type": "quorum"}
HA_POLICY = '{"ha-mode":"all","ha-sync-mode":"automatic"}'
QUEUE_COLUMNS = ("name", "type", "leader", "members", "online", "messages")
FAULTS = ("sigkill", "sigstop", "partition")

Say = Callable[[str], None]  # the `say` fixture: a line printed past pytest's capture


def seeds() -> list[int]:
    one = os.environ.get("WARREN_HA_SEED")
    if one:
        return [int(one)]
    return list(range(1, int(os.environ.get("WARREN_HA_SEEDS", "3")) + 1))


def reproduce(nodeid: str, seed: int) -> str:
    """The line that replays a failed run: its test, its seed alone."""
    return f"seed={seed}; reproduce with: WARREN_HA_SEED={seed} python -m pytest '{nodeid}'"


def set_ha_policy(node: Node) -> None:
    """The policy of the brief, verbatim: every queue declared under it is mirrored."""
    ctl_ok(node, "set_policy", "ha-all", "", HA_POLICY)


def declare(node: Node, quorum: str | None, ha: str | None) -> None:
    """Declare the queues through `node` (the declaring node leads first)."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url()))
    try:
        ch = conn.channel()
        if quorum:
            ch.queue_declare(quorum, durable=True, arguments=QUORUM)
        if ha:
            ch.queue_declare(ha, durable=True)
    finally:
        conn.close()


def queue_rows(node: Node, timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """The node's view of every queue, by name; {} when it does not answer."""
    try:
        r = node.ctl("list_queues", *QUEUE_COLUMNS, "--formatter", "json", timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        return {}
    if r.returncode != 0:
        return {}
    try:
        return {row["name"]: row for row in json.loads(r.stdout)}
    except (ValueError, KeyError, TypeError):
        return {}


def replicated(row: dict[str, Any] | None, members: Sequence[Node],
               leader: Node | None = None) -> bool:
    """A replica on each node of `members`, all online, and a leader (`leader` if given)."""
    if not row:
        return False
    want = {identity(n.name) for n in members}
    ok = ({identity(m) for m in row.get("members", [])} == want
          and {identity(m) for m in row.get("online", [])} == want
          and bool(row.get("leader")))
    return ok and (leader is None or identity(row["leader"]) == identity(leader.name))


def wait_replicated(node: Node, queues: Sequence[str], members: Sequence[Node],
                    leader: Node | None = None, timeout_s: float = 30.0
                    ) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}

    def ready() -> bool:
        nonlocal last
        last = queue_rows(node)
        return all(replicated(last.get(q), members, leader) for q in queues)

    try:
        wait_for(ready, timeout_s, interval_s=0.2,
                 what=f"queues {list(queues)} replicated on {[n.name for n in members]}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; {node.name} lists {json.dumps(last)}") from None
    return last


def wait_new_leader(survivors: Sequence[Node], queues: Sequence[str], old: Node,
                    timeout_s: float = 60.0) -> None:
    """Every survivor names a survivor as the leader of each queue."""
    names = {identity(n.name) for n in survivors}

    def elected() -> bool:
        for node in survivors:
            rows = queue_rows(node)
            if not all(identity(rows.get(q, {}).get("leader") or "") in names for q in queues):
                return False
        return True

    wait_for(elected, timeout_s, interval_s=0.2,
             what=f"a leader other than {old.name} for {list(queues)}")


# -- faults ------------------------------------------------------------------------------------
def inject(fault: str, node: Node) -> None:
    assert node.proc is not None
    if fault == "sigkill":
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(15)
    elif fault == "sigstop":
        node.proc.send_signal(signal.SIGSTOP)
    elif fault == "partition":
        ctl_ok(node, "cut_cluster_links", timeout_s=15)
    else:
        raise ValueError(f"unknown fault {fault!r}")


def heal(fault: str, node: Node) -> None:
    """Undo a fault that can be undone; safe to call twice and after a failed inject."""
    if node.proc is None or node.proc.poll() is not None:
        return
    if fault == "sigstop":
        node.proc.send_signal(signal.SIGCONT)
    elif fault == "partition":
        ctl_ok(node, "heal_cluster_links", timeout_s=15)


def stop_all(nodes: Sequence[Node], timeout_s: float = 10.0) -> list[str]:
    """SIGTERM every running node at once, as an operator stopping the cluster would, and
    wait. A node still running after `timeout_s` gets SIGABRT (under PYTHONFAULTHANDLER=1 its
    threads' stacks go to its log), then SIGKILL. Returns a line per node that hung, with the
    end of its log."""
    running = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
    for node in running:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        node.proc.send_signal(signal.SIGTERM)
    hung = []
    for node in running:
        assert node.proc is not None
        try:
            node.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            node.proc.send_signal(signal.SIGABRT)
            try:
                node.proc.wait(5)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(5)
            tail = "\n".join(node.log().splitlines()[-60:])
            hung.append(f"{node.name} still running {timeout_s:g}s after SIGTERM; its log "
                        f"ends:\n{tail}")
    return hung


# -- reports -------------------------------------------------------------------------------------
def log_problems(node: Node, limit: int = 25) -> list[str]:
    lines = [line for line in node.log().splitlines()
             if any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback"))]
    return lines[-limit:]


def report(nodes: Sequence[Node]) -> str:
    out = []
    for node in nodes:
        alive = node.proc is not None and node.proc.poll() is None
        out.append(f"--- {node.name} ({'running' if alive else 'not running'}), log "
                   f"{node.log_path}")
        if alive:
            out.append(f"list_queues: {json.dumps(queue_rows(node, timeout_s=5))}")
        out += log_problems(node)
    return "\n".join(out)
