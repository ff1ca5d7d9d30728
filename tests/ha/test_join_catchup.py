"""A node joins a cluster holding a mirrored queue under load; its replica catches up.

Theory of operation. A real 2-node cluster runs the `ha-all` policy
(`{"ha-mode":"all","ha-sync-mode":"automatic"}`) and one durable classic queue, which is
therefore a Raft group with a replica on both nodes. A backlog of BACKLOG persistent
messages (64 B to 2 KiB, ~1 KiB on average) is published with confirms first, so that a
new replica has real work to catch up on: by then the leader has usually compacted the
group's log, and the new member gets a snapshot carrying the live bodies, then the tail.

Then a publisher (aio-pika, confirms, a small window) on node 1 and a consumer (pika,
manual acks) on node 2 run at the same offered rate for the whole test, so the backlog
stays about where it was. The consumer's pace comes from its acks: the broker has at most
`prefetch` deliveries out to it, so acking at the pace delivers at the pace. A third node,
started with an empty data directory, runs `stop_app`, `join_cluster <node 1>`,
`start_app` while they run; the policy gives the queue a replica there. The test polls
`warrenctl list_queues` until the new node is a member, in sync (`synchronised_slave_nodes`,
or leading) and its replica's message count is within MATCH_SLACK of node 1's (both listed
at the same moment: under load the counts of two replicas differ by what is in flight).

What must hold: the queue kept serving during catch-up (a confirm and a delivery stamped
between the join and the moment the new replica was seen in sync), the clients never
failed, once the clients stop the three replicas list the same count, and every confirmed
message is consumed at least once. The last proof that the new replica holds the data:
the clients stop with a backlog of confirmed, unconsumed messages left, the queue leader's
node is SIGKILLed (two of three remain, a majority), and a consumer on a survivor (the new
node unless it was the one that led) must get every confirmed message not consumed before,
exactly the count the replicas listed, after which the survivors list the queue empty.

Throughput (confirms/s and deliveries/s, and confirm latency) before the join, during
catch-up and after it is printed with the prefix "catch-up throughput:" and recorded as
test properties; it is measured, never asserted.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from tests.ha.clients import AioPikaPublisher, Ledger, PikaConsumer, pika_params, stacks
from tests.ha.support import (
    Say,
    declare,
    inject,
    report,
    set_ha_policy,
    wait_new_leader,
    wait_replicated,
)
from tests.support.cluster import identity, join, running_cluster, start_nodes, stop_cluster
from tests.support.node import Node, wait_for

QUEUE = "catchup.mirrored"
BACKLOG = 20_000  # confirmed before the clients start: what the new replica must copy
FILL_WINDOW = 128  # unconfirmed publishes in flight while filling
RATE_PER_S = 300  # offered to the queue by the publisher, and taken by the consumer
WINDOW = 16  # the live publisher's unconfirmed publishes in flight
PREFETCH = 50
PHASE_CONFIRMS = 4 * RATE_PER_S  # the phases before and after catch-up last ~4 s each
MATCH_SLACK = 200  # messages: two replicas listed together differ by what is in flight
COLUMNS = ("name", "type", "leader", "members", "online", "messages", "slave_nodes",
           "synchronised_slave_nodes")
POLL_S = 0.02  # the consumer's wait for input between two rounds of acks
FILL_S = 120.0
CATCHUP_S = 90.0
FAILOVER_S = 60.0
DRAIN_S = 90.0


class PacedConsumer(threading.Thread):
    """Consumes one queue through one node with manual acks, at up to `rate_per_s`.

    Deliveries are recorded in the ledger as they are dispatched; acks (multiple) are sent
    as the pace allows. A stall does not turn into a burst afterwards: at most one second's
    worth of acks is owed, as the publishers pace. On stop, what was received is acked and
    the connection closed: deliveries still in flight to it go back to the queue."""

    def __init__(self, name: str, node: Node, queue: str, ledger: Ledger, rate_per_s: float,
                 prefetch: int) -> None:
        super().__init__(name=name, daemon=True)
        self.node = node
        self.queue = queue
        self.ledger = ledger
        self.rate_per_s = rate_per_s
        self.prefetch = prefetch
        self.stopping = threading.Event()
        self.subscribed = threading.Event()
        self.errors: list[str] = []
        self.acked = 0

    def run(self) -> None:
        conn = None
        try:
            conn = pika.BlockingConnection(pika_params(self.node))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=self.prefetch)
            held: deque[int] = deque()  # delivery tags received, not acked yet, in order

            def on_message(_ch, method, properties, body: bytes) -> None:
                self.ledger.receive(properties.message_id, self.queue,
                                    bool(method.redelivered), self.node.name, body)
                held.append(method.delivery_tag)

            ch.basic_consume(self.queue, on_message)
            self.subscribed.set()
            owed, last = 0.0, time.monotonic()
            while not self.stopping.is_set():
                conn.process_data_events(time_limit=POLL_S)
                now = time.monotonic()
                owed = min(float(self.rate_per_s), owed + (now - last) * self.rate_per_s)
                last = now
                n = min(len(held), int(owed))
                if n:
                    ch.basic_ack(held[n - 1], multiple=True)
                    for _ in range(n):
                        held.popleft()
                    owed -= n
                    self.acked += n
            if held:
                ch.basic_ack(held[-1], multiple=True)
                self.acked += len(held)
            conn.close()
        except (pika.exceptions.AMQPError, OSError) as e:
            self.errors.append(f"{time.monotonic():.3f} {self.node.name}: {e!r}")
        finally:
            if conn is not None and conn.is_open:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - abandoned either way
                    pass

    def finish(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        self.join(timeout_s)


# -- listings -----------------------------------------------------------------------------------
def rows(node: Node, timeout_s: float = 15.0) -> dict[str, dict[str, Any]]:
    """The node's list_queues with the replica columns, by name; {} when it does not answer
    (a joining node whose app is stopped, a node under heavy load)."""
    try:
        r = node.ctl("list_queues", *COLUMNS, "--formatter", "json", timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        return {}
    if r.returncode != 0:
        return {}
    try:
        return {row["name"]: row for row in json.loads(r.stdout)}
    except (ValueError, KeyError, TypeError):
        return {}


def rows_together(nodes: Sequence[Node]) -> list[dict[str, Any]]:
    """Each node's row of QUEUE, asked at the same time: counts of replicas under load are
    only comparable when taken together."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        return [r.get(QUEUE, {}) for r in pool.map(rows, nodes)]


def in_sync(row: dict[str, Any], node: Node) -> bool:
    members = {identity(m) for m in row.get("members", [])}
    synced = {identity(m) for m in row.get("synchronised_slave_nodes", [])}
    me = identity(node.name)
    return me in members and (me in synced or identity(row.get("leader") or "") == me)


# -- measurements ---------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1e-9)


def measure(ledger: Ledger, phase: Phase, publisher: str, consumer_node: str) -> dict[str, float]:
    """Confirms/s of `publisher`, deliveries/s to `consumer_node`, confirm latency (ms)."""
    with ledger.lock:
        latencies = sorted(c.t - c.attempt_t for mid, c in ledger.confirmed.items()
                           if mid.startswith(publisher + ".")
                           and phase.start <= c.t < phase.end)
        deliveries = sum(1 for rs in ledger.receipts.values() for r in rs
                         if r.node == consumer_node and phase.start <= r.t < phase.end)
    out = {"seconds": phase.seconds, "confirms": len(latencies),
           "confirms_per_s": len(latencies) / phase.seconds, "deliveries": deliveries,
           "deliveries_per_s": deliveries / phase.seconds}
    if latencies:
        out["confirm_ms_p50"] = 1000 * statistics.median(latencies)
        out["confirm_ms_p99"] = 1000 * latencies[min(len(latencies) - 1,
                                                     int(0.99 * len(latencies)))]
        out["confirm_ms_max"] = 1000 * latencies[-1]
    return out


def describe(name: str, m: dict[str, float]) -> str:
    latency = (f", confirm p50 {m['confirm_ms_p50']:.1f} ms p99 {m['confirm_ms_p99']:.1f} ms "
               f"max {m['confirm_ms_max']:.0f} ms") if "confirm_ms_p50" in m else ""
    return (f"{name} {m['seconds']:.1f}s: {m['confirms_per_s']:.0f} confirms/s, "
            f"{m['deliveries_per_s']:.0f} deliveries/s{latency}")


def wait_counts_agree(nodes: Sequence[Node], at_least: int, timeout_s: float = 60.0) -> int:
    """Once the clients have stopped: every node lists the same count for QUEUE, at least
    `at_least`, twice in a row (acks and requeues all applied everywhere)."""
    seen: list[list[Any]] = []

    def agreed() -> int | None:
        counts = [r.get("messages") for r in rows_together(nodes)]
        seen.append(counts)
        if len(seen) >= 2 and seen[-1] == seen[-2] and len(set(counts)) == 1 \
                and isinstance(counts[0], int) and counts[0] >= at_least:
            return counts[0] or -1  # wait_for wants a truthy value
        return None

    try:
        count = wait_for(agreed, timeout_s, 0.2, f"every replica to list the same count "
                                                 f"(at least {at_least})")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; last counts {seen[-3:]} on {[n.name for n in nodes]}") \
            from None
    return max(count, 0)


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("dump_on_abort")
def test_a_joining_node_gets_a_replica_that_catches_up_while_the_queue_serves(
        tmp_path: Path, say: Say, record_property: Callable[[str, object], None]) -> None:
    with running_cluster(tmp_path, 2) as (n1, n2):
        set_ha_policy(n1)
        declare(n1, None, QUEUE)
        wait_replicated(n1, [QUEUE], [n1, n2])
        ledger = Ledger()

        fill = AioPikaPublisher("fill", [n1], [QUEUE], ledger, limit=BACKLOG,
                                window=FILL_WINDOW)
        t_fill = time.monotonic()
        fill.start()
        fill.join(FILL_S)
        fill_s = time.monotonic() - t_fill
        if fill.is_alive() or fill.events:
            fill.finish()
            pytest.fail(f"filling the backlog failed on a healthy cluster: "
                        f"{ledger.confirmed_count()} of {BACKLOG} confirmed; {fill.events[-3:]}")
        # started before the load, so that its boot is not counted in any phase
        [n3] = start_nodes(tmp_path / "joiner", 1, prefix="joiner",
                           cookie_file=tmp_path / "cluster.cookie")
        nodes = [n1, n2, n3]
        publisher = AioPikaPublisher("live", [n1], [QUEUE], ledger, rate_per_s=RATE_PER_S,
                                     window=WINDOW)
        consumer = PacedConsumer("consumer", n2, QUEUE, ledger, RATE_PER_S, PREFETCH)
        drain: PikaConsumer | None = None
        problems: list[str] = []
        numbers: dict[str, Any] = {"fill_messages_per_s": BACKLOG / fill_s}
        lines: list[str] = []
        try:
            consumer.start()
            wait_for(lambda: consumer.subscribed.is_set() or consumer.errors, 15,
                     what="the consumer to subscribe")
            assert not consumer.errors, consumer.errors
            publisher.start()
            wait_for(lambda: ledger.confirmed_count(publisher="live") > 0
                     and consumer.acked > 0, 30, what="the first confirm and delivery")
            t_before = time.monotonic()
            wait_for(lambda: ledger.confirmed_count(t_before, "live") >= PHASE_CONFIRMS, 60,
                     what=f"{PHASE_CONFIRMS} confirms before the join")

            t_join = time.monotonic()
            join(n3, n1)
            t_started = time.monotonic()  # join_cluster and start_app have returned
            samples: list[tuple[float, list[dict[str, Any]]]] = []

            def caught_up() -> float | None:
                t = time.monotonic()
                old, new = rows_together([n1, n3])
                samples.append((t, [old, new]))
                if old and new and in_sync(old, n3) and isinstance(new.get("messages"), int) \
                        and abs(new["messages"] - old["messages"]) <= MATCH_SLACK:
                    return t
                return None

            try:
                t_sync = wait_for(caught_up, CATCHUP_S, 0.1,
                                  f"{n3.name} a member of {QUEUE}, in sync, with the messages")
            except TimeoutError as e:
                raise TimeoutError(f"{e}; last listings (n1, n3): {samples[-1:]}") from None
            first_count = next((s[1][1]["messages"] for s in samples
                                if s[1][1].get("messages")), 0)

            t_after = time.monotonic()
            wait_for(lambda: ledger.confirmed_count(t_after, "live") >= PHASE_CONFIRMS, 60,
                     what=f"{PHASE_CONFIRMS} confirms after catch-up")
            t_end = time.monotonic()
            publisher.finish()
            consumer.finish()
            if publisher.events or publisher.is_alive():
                problems.append(f"the publisher failed: {publisher.events[-5:]}")
            if consumer.errors or consumer.is_alive():
                problems.append(f"the consumer failed: {consumer.errors[-5:]}")

            phases = [Phase("before join", t_before, t_join),
                      Phase("catch-up (join -> in sync)", t_join, t_sync),
                      Phase("after", t_sync, t_end)]
            measured = [measure(ledger, p, "live", n2.name) for p in phases]
            catchup = measured[1]
            if not catchup["confirms"] or not catchup["deliveries"]:
                problems.append(f"the queue stopped serving during catch-up "
                                f"({t_sync - t_join:.2f}s): {catchup['confirms']} confirms, "
                                f"{catchup['deliveries']} deliveries")
            for key, m in zip(("before", "catchup", "after"), measured, strict=True):
                numbers.update({f"{key}_{k}": v for k, v in m.items()})
            numbers.update({"join_s": t_started - t_join, "catchup_s": t_sync - t_join,
                            "replica_messages_when_synced": samples[-1][1][1]["messages"]})
            lines.append(
                f"catch-up throughput: offered {RATE_PER_S}/s; "
                + " | ".join(describe(p.name, m) for p, m in zip(phases, measured, strict=True))
                + f" | join_cluster+start_app {t_started - t_join:.1f}s, in sync "
                f"{t_sync - t_join:.1f}s after the join (polled every ~"
                f"{(samples[-1][0] - samples[0][0]) / max(len(samples) - 1, 1):.1f}s), first "
                f"count seen on {n3.name} {first_count}, at sync {samples[-1][1][1]['messages']}"
                f" vs {samples[-1][1][0]['messages']} on {n1.name}; backlog filled at "
                f"{numbers['fill_messages_per_s']:.0f} msg/s")

            # the backlog left: confirmed, never received (what was in flight to the
            # consumer when it closed went back to the queue, and is not in the ledger)
            left = len(ledger.missing())
            backlog = wait_counts_agree(nodes, left)
            final = wait_for(lambda: (r := rows(n1).get(QUEUE, {})).get("leader") and r, 30,
                             0.2, f"{QUEUE} listed with a leader")
            if not in_sync(final, n3):
                problems.append(f"{n3.name} not in sync once the clients stopped: {final}")
            leader = next(n for n in nodes if identity(n.name) == identity(final["leader"]))
            survivors = [n for n in nodes if n is not leader]
            inject("sigkill", leader)
            t_kill = time.monotonic()
            wait_new_leader(survivors, [QUEUE], leader, FAILOVER_S)
            t_elected = time.monotonic()
            reader = n3 if n3 in survivors else survivors[0]
            drain = PikaConsumer("drain", [reader], [QUEUE], ledger, prefetch=250,
                                 ack_every=50)
            drain.start()
            try:
                wait_for(lambda: (drain.received >= backlog and not ledger.missing())
                         or drain.errors or not drain.is_alive(), DRAIN_S, 0.2,
                         what=f"{backlog} messages from {reader.name}")
            except TimeoutError as e:
                problems.append(f"{e}: {drain.received} received")
            t_drained = time.monotonic()
            if drain.errors:
                problems.append(f"the drain on {reader.name} failed: {drain.errors[-3:]}")
            # the acks applied on both survivors: nothing more is in the queue
            try:
                wait_for(lambda: [r.get("messages") for r in rows_together(survivors)]
                         == [0, 0], 30, 0.2, what="the queue empty on both survivors")
            except TimeoutError as e:
                problems.append(f"{e}: {[r.get('messages') for r in rows_together(survivors)]}")
            drain.finish()
            if drain.received != backlog:
                problems.append(f"{backlog} messages listed by every replica, {drain.received} "
                                f"delivered from {reader.name} after the kill")
            numbers.update({"backlog_at_kill": backlog, "election_s": t_elected - t_kill,
                            "drain_messages_per_s": drain.received / max(t_drained - t_elected,
                                                                         1e-9)})
            lines.append(
                f"catch-up throughput: after the clients stopped {backlog} confirmed messages "
                f"left ({left} never delivered); {leader.name} (leader) SIGKILLed, new leader "
                f"after {t_elected - t_kill:.1f}s, {drain.received} drained from {reader.name} "
                f"at {numbers['drain_messages_per_s']:.0f} msg/s; {ledger.summary()}")
        except Exception as e:  # noqa: BLE001 - every failure gets the report
            where = "" if isinstance(e, (TimeoutError, AssertionError)) else \
                traceback.format_exc()
            problems.append(f"{type(e).__name__}: {e}\n{where}"
                            f"{stacks([publisher, consumer, *([drain] if drain else [])])}")
        finally:
            for client in (publisher, consumer, *([drain] if drain else [])):
                client.finish()
            state = report(nodes) if problems else ""
            stop_cluster([n3])

        for line in lines:
            say(line)
        for key, value in numbers.items():
            record_property(key, round(value, 3) if isinstance(value, float) else value)
        if missing := ledger.missing():
            problems.append(f"{len(missing)} confirmed messages never consumed, e.g. "
                            f"{missing[:12]}")
        if bad := ledger.misdelivered():
            problems.append(f"wrong queue or damaged body: {bad[:12]}")
        if ledger.strays:
            problems.append(f"deliveries of messages never published: {ledger.strays[:10]}")
        if problems:
            pytest.fail(f"{ledger.summary()}\n" + "\n".join(problems) + f"\n{state}",
                        pytrace=False)
