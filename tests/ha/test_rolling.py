"""Restarts of a cluster holding replicated queues: one node at a time, and all at once.

Both kinds of replicated queue are exercised side by side on a real 3-node cluster: a quorum
queue and a classic queue under the `ha-all` policy, each with a replica on every node.

Rolling restart: while a pika and an aio-pika publisher keep publishing with confirms and
consumers (one per node, manual acks) keep consuming, each node in turn is stopped with
SIGTERM, started again on the same data, and waited for until every node lists it as
running and its replicas are online with a leader; publishing must then make progress
again before the next node goes. Clients of a stopping node move to another node. Nothing
confirmed may be lost, and a message published once is flagged redelivered whenever it is
delivered again.

Full restart: confirmed messages are published, some are delivered and acked, some
delivered and left unacknowledged, the rest never delivered; once every replica has
applied the acks, all three nodes are stopped at once (SIGTERM, or SIGKILL) and started
again at once. Afterwards every confirmed and unacknowledged message is there, exactly
once, flagged redelivered if and only if it had been delivered, and no acked one returns.
"""

from __future__ import annotations

import random
import signal
import time
import traceback
from pathlib import Path

import pika
import pytest

from tests.ha.clients import (
    AioPikaPublisher,
    Ledger,
    PikaConsumer,
    PikaPublisher,
    Publisher,
    pika_params,
    stacks,
)
from tests.ha.support import (
    Say,
    declare,
    queue_rows,
    report,
    reproduce,
    seeds,
    set_ha_policy,
    wait_replicated,
)
from tests.support.cluster import running_cluster, wait_cluster
from tests.support.node import Node, launch, spawn, wait_for, wait_ready

QUORUM_QUEUE = "jobs.quorum"
HA_QUEUE = "jobs.mirrored"
QUEUES = (QUORUM_QUEUE, HA_QUEUE)
RATE_PER_S = 100  # per publisher
PROGRESS = 20  # confirms each publisher must get after a node is back, before the next goes
REJOIN_S = 60.0
STALL_S = 10.0
PER_PUBLISHER = 150  # full restart: messages per publisher, half to each queue
HOLD = 20  # full restart: per queue, delivered and acked, and as many delivered and held


def _fail(nodeid: str, seed: int, setup: str, ledger: Ledger, problems: list[str],
          clients: list, nodes: list[Node]) -> None:
    events = "\n".join(f"{c.name}: connected to {c.connected}; "
                       f"{getattr(c, 'events', None) or getattr(c, 'errors', [])}"[:600]
                       for c in clients)
    pytest.fail(f"{reproduce(nodeid, seed)}\n{setup}\n{ledger.summary()}\n"
                + "\n".join(problems) + f"\n{events}\n{report(nodes)}", pytrace=False)


def _common_problems(ledger: Ledger) -> list[str]:
    problems = []
    if missing := ledger.missing():
        problems.append(f"{len(missing)} confirmed messages never received, e.g. "
                        f"{missing[:12]}")
    if bad := ledger.misdelivered():
        problems.append(f"wrong queue or damaged body: {bad[:12]}")
    if unflagged := ledger.unflagged_redeliveries():
        problems.append(f"published once, delivered again without redelivered=True: "
                        f"{unflagged[:12]}")
    if ledger.strays:
        problems.append(f"deliveries of messages never published: {ledger.strays[:10]}")
    return problems


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
def test_rolling_restart_under_load_loses_nothing_confirmed(
        tmp_path: Path, request: pytest.FixtureRequest, seed: int, say: Say) -> None:
    rng = random.Random(f"rolling/{seed}")
    with running_cluster(tmp_path, 3, "classic") as nodes:
        home = rng.choice(nodes)
        set_ha_policy(home)
        declare(home, QUORUM_QUEUE, HA_QUEUE)
        wait_replicated(home, QUEUES, nodes)

        ledger = Ledger()

        def rotation(start: int) -> list[Node]:
            return [nodes[(start + k) % 3] for k in range(3)]

        consumers = [PikaConsumer(f"consumer{i}", rotation(i), QUEUES, ledger,
                                  prefetch=rng.choice([10, 50]), ack_every=rng.choice([1, 5]),
                                  reconnect=True) for i in range(3)]
        publishers: list[Publisher] = [
            PikaPublisher("pika", rotation(1), QUEUES, ledger, rate_per_s=RATE_PER_S),
            AioPikaPublisher("aiopika", rotation(2), QUEUES, ledger, rate_per_s=RATE_PER_S,
                             window=rng.choice([4, 16])),
        ]
        order = rng.sample(nodes, 3)
        setup = f"restart order {[n.name for n in order]}; queues declared on {home.name}"
        problems: list[str] = []
        try:
            for client in [*consumers, *publishers]:
                client.start()
            wait_for(lambda: ledger.confirmed_count() >= 2 * PROGRESS, 30,
                     what="confirms before the first restart")
            for node in order:
                rc = node.stop(timeout_s=15)  # SIGTERM; SIGKILL if it has not ended by then
                if rc not in (0, -signal.SIGTERM):
                    say(f"[ha rolling seed={seed}] WARNING: {node.name} did not stop on "
                        f"SIGTERM within 15 s (exit status {rc})")
                launch(node, REJOIN_S)
                wait_cluster(nodes, timeout_s=REJOIN_S)
                wait_replicated(node, QUEUES, nodes, timeout_s=REJOIN_S)
                back = time.monotonic()
                for p in publishers:
                    wait_for(lambda p=p, back=back: ledger.confirmed_count(back, p.publisher)
                             >= PROGRESS, REJOIN_S,
                             what=f"{p.publisher} to be confirmed after {node.name} came "
                                  f"back (its last failures: {p.events[-3:]})")
            for p in publishers:
                p.finish()
            if not ledger.wait_drained(STALL_S):
                problems.append("the consumers stopped receiving before everything confirmed "
                                "was delivered")
        except Exception as e:  # noqa: BLE001 - every failure gets the seed and the report
            where = "" if isinstance(e, (TimeoutError, AssertionError)) else \
                traceback.format_exc()
            problems.append(f"{type(e).__name__}: {e}\n{where}"
                            f"{stacks([*publishers, *consumers])}")
        finally:
            for client in [*publishers, *consumers]:
                client.finish()
        moves = {c.name: len(c.connected) - 1 for c in [*publishers, *consumers]}
        say(f"[ha rolling seed={seed}] {setup}; {ledger.summary()}; reconnections {moves}")
        problems += _common_problems(ledger)
        if problems:
            _fail(request.node.nodeid, seed, setup, ledger, problems,
                  [*publishers, *consumers], nodes)


# -- all at once ---------------------------------------------------------------------------------
def _take(conn: pika.BlockingConnection) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per queue: consume 2*HOLD deliveries, cancel, ack the first HOLD and keep the rest
    unacknowledged (the connection stays open). Returns (acked, held) message ids by queue."""
    acked: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    for queue in QUEUES:
        ch = conn.channel()
        # prefetch = what is taken, so nothing more is in flight once it has arrived
        ch.basic_qos(prefetch_count=2 * HOLD)
        got: list[tuple[int, str]] = []
        tag = ch.basic_consume(queue, lambda c, m, p, b, got=got: got.append(
            (m.delivery_tag, p.message_id)))
        wait_for(lambda got=got: conn.process_data_events(time_limit=0.05)
                 or len(got) >= 2 * HOLD, 30, what=f"{2 * HOLD} deliveries from {queue}")
        ch.basic_cancel(tag)
        for delivery_tag, _ in got[:HOLD]:
            ch.basic_ack(delivery_tag)
        acked[queue] = [mid for _, mid in got[:HOLD]]
        held[queue] = [mid for _, mid in got[HOLD:]]
    conn.process_data_events(time_limit=0.1)  # the acks are written out
    return acked, held


def _abandon(conn: pika.BlockingConnection) -> None:
    """Close a connection whose broker went away under it (its socket is ours to close)."""
    if conn.is_closed:
        return
    try:
        conn.process_data_events(time_limit=0)
        conn.close()
    except Exception:  # noqa: BLE001 - pika raises what it likes from a dead connection
        pass


def _counts_settle(nodes: list[Node], expected: dict[str, int], timeout_s: float = 30.0) -> None:
    """Every node lists `expected` messages (ready + unacknowledged) in each queue."""
    last: dict[str, dict] = {}

    def settled() -> bool:
        for node in nodes:
            last[node.name] = rows = queue_rows(node)
            if any(rows.get(q, {}).get("messages") != n for q, n in expected.items()):
                return False
        return True

    try:
        wait_for(settled, timeout_s, interval_s=0.2, what=f"message counts {expected}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; last listings: {last}") from None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_full_restart_keeps_every_unacknowledged_message(
        tmp_path: Path, request: pytest.FixtureRequest, how: signal.Signals, say: Say) -> None:
    seed = seeds()[0]
    rng = random.Random(f"full/{how.name}/{seed}")
    with running_cluster(tmp_path, 3, "classic") as nodes:
        home = rng.choice(nodes)
        set_ha_policy(home)
        declare(home, QUORUM_QUEUE, HA_QUEUE)
        wait_replicated(home, QUEUES, nodes)
        others = [n for n in nodes if n is not home]

        ledger = Ledger()
        publishers: list[Publisher] = [
            PikaPublisher("pika", [others[0]], QUEUES, ledger, limit=PER_PUBLISHER),
            AioPikaPublisher("aiopika", [others[1]], QUEUES, ledger, limit=PER_PUBLISHER,
                             window=rng.choice([8, 32])),
        ]
        drain: PikaConsumer | None = None
        holder: pika.BlockingConnection | None = None
        confirmed_to: dict[str, list[str]] = {q: [] for q in QUEUES}
        acked: dict[str, list[str]] = {q: [] for q in QUEUES}
        held: dict[str, list[str]] = {q: [] for q in QUEUES}
        problems: list[str] = []
        try:
            for p in publishers:
                p.start()
            for p in publishers:
                p.join(60)
            if failed := [f"{p.publisher}: {p.events[-3:]}" for p in publishers
                          if p.is_alive() or p.events]:
                raise AssertionError(f"publishing failed on a healthy cluster: {failed}")
            confirmed_to = {q: [m for m, c in ledger.confirmed.items() if c.queue == q]
                            for q in QUEUES}
            # no heartbeats: it sits idle, holding its deliveries, until the nodes stop
            holder = pika.BlockingConnection(pika_params(rng.choice(nodes), heartbeat_s=0))
            acked, held = _take(holder)
            _counts_settle(nodes, {q: len(confirmed_to[q]) - len(acked[q]) for q in QUEUES})

            for node in nodes:  # all at once: no node outlives another to hand anything over
                assert node.proc is not None
                node.proc.send_signal(how)
            for node in nodes:
                node.stop(timeout_s=30)
            _abandon(holder)
            for node in nodes:
                spawn(node)
            for node in nodes:
                wait_ready(node, 60)
            wait_cluster(nodes, timeout_s=60)
            wait_replicated(rng.choice(nodes), QUEUES, nodes, timeout_s=60)

            drain = PikaConsumer("drain", [rng.choice(nodes)], QUEUES, ledger, prefetch=50,
                                 ack_every=5)
            drain.start()
            for queue in QUEUES:
                wait_for(lambda q=queue: all(m in ledger.receipts for m in confirmed_to[q]
                                             if m not in acked[q]), 60,
                         what=f"every confirmed, unacknowledged message of {queue}")
            # everything acked and the acks applied everywhere: nothing else comes back
            _counts_settle(nodes, {q: 0 for q in QUEUES})
        except Exception as e:  # noqa: BLE001 - every failure gets the report
            where = "" if isinstance(e, (TimeoutError, AssertionError)) else \
                traceback.format_exc()
            problems.append(f"{type(e).__name__}: {e}\n{where}")
        finally:
            for p in publishers:
                p.finish()
            if holder is not None:
                _abandon(holder)
            if drain is not None:
                drain.finish()

        for queue in QUEUES:
            gone = [m for m in confirmed_to[queue]
                    if m not in acked[queue] and m not in ledger.receipts]
            if gone:
                problems.append(f"{queue}: {len(gone)} confirmed, unacknowledged messages "
                                f"lost: {gone[:12]}")
            if back := [m for m in acked[queue] if m in ledger.receipts]:
                problems.append(f"{queue}: acknowledged messages came back: {back[:12]}")
            twice = [m for m in confirmed_to[queue] if len(ledger.receipts.get(m, [])) > 1]
            if twice:
                problems.append(f"{queue}: delivered more than once: {twice[:12]}")
            held_set = set(held[queue])
            wrong = [m for m in confirmed_to[queue] if m in ledger.receipts
                     and ledger.receipts[m][0].redelivered != (m in held_set)]
            if wrong:
                problems.append(f"{queue}: redelivered flag wrong (set exactly on the "
                                f"{len(held_set)} delivered before the restart) for "
                                f"{wrong[:12]}")
        if bad := ledger.misdelivered():
            problems.append(f"wrong queue or damaged body: {bad[:12]}")
        say(f"[ha full restart {how.name}] confirmed "
            f"{ {q: len(m) for q, m in confirmed_to.items()} }, acked "
            f"{ {q: len(m) for q, m in acked.items()} }, held unacknowledged "
            f"{ {q: len(m) for q, m in held.items()} }; after the restart {ledger.summary()}")
        if problems:
            _fail(request.node.nodeid, seed, f"stopped with {how.name}; home {home.name}",
                  ledger, problems, [*publishers, *([drain] if drain else [])], nodes)
