"""Replicated-queue benchmark: WarrenMQ and RabbitMQ 3.10 on 3-node clusters, in one run.

Four kinds of 3-replica queue, each on a cluster of its broker (one cluster at a time, so each
gets the machine's cores to itself):
  - WarrenMQ quorum queue (`x-queue-type: quorum`: a Raft group per queue);
  - WarrenMQ classic queue under the policy `ha-all` (`{"ha-mode":"all",
    "ha-sync-mode":"automatic"}`, set with `warrenctl set_policy ha-all "" ...`); when the
    queue's `list_queues members` shows one node the column reads "n/a (ha policy not
    supported)";
  - RabbitMQ quorum queue;
  - RabbitMQ classic mirrored queue (the same policy, set with rabbitmqctl).
For each kind, every measurement on a fresh durable queue, declared on node 1 and used once
`list_queues` names its leader (RabbitMQ mirrored: the master, from `pid`) and shows all
three replicas online (mirrored: two synchronised mirrors):
  1. persistent 1 KiB messages with publisher confirms (at most 100 unconfirmed per
     publisher), 1 publisher and then 10, each a process of its own connected to the leader's
     node: confirmed msg/s over the window and confirm latency p50 / p99;
  2. producer -> consumer: one such publisher on the leader's node and one consumer on a
     follower's node (prefetch 100, manual acks, a multiple ack every 10 deliveries):
     consume and confirm rates over the window;
  3. failover, repeated: a consumer (prefetch 100, manual acks) on one non-leader node and a
     steady publisher (`--rate` msg/s, persistent, confirms) on the other, both in a thread
     of this process with its own event loop. Every body carries a sequence number and its
     publish time (CLOCK_MONOTONIC ns). Once the consumer has received a second's worth, the
     leader's node is SIGKILLed (the whole process group: RabbitMQ's beam.smp with its
     script); the failover time runs from just before the signal to the arrival of the first
     delivery *published after* it (so never one already prefetched or in flight). Then the
     publisher stops, waits for its last confirms, and the consumer must receive every
     confirmed message (lost = confirmed but never delivered); the killed node is started
     again on its data and the cluster waited for before the next repetition. Median and
     max over the repetitions.
Measurements 1 and 2 run in rounds (`--rounds`, 3 by default: all of them, then all again),
each round on a fresh queue; the table shows each figure's median over the rounds, and
results-ha.md every round's rates, since two runs on a shared 2-core machine differ by up
to a tenth. Anything that fails prints "n/a (reason)" in its cell and the run goes on. Prints a markdown
table and writes bench/results-ha.md with the machine, versions, setup and per-repetition
details (and refreshes the table between `<!-- ha:start -->` and `<!-- ha:end -->` in
bench/README.md, when it has them). Numbers only: nothing here asserts a timing.

    python bench/ha.py                   # 10 s windows after 2 s warm-up, 5 failovers per queue
    python bench/ha.py --quick           # 3 s windows after 1 s warm-up, 3 failovers
    python bench/ha.py --only warren     # or rabbitmq
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests/support: the clusters' start and stop helpers
from brokers import replace_between  # noqa: E402
from ha_clusters import NODES, ForeignCpu, Replicas, Side, start_side  # noqa: E402
from ha_probe import PREFETCH, SETTLE_TIMEOUT_S, SIZE_BYTES, FailoverProbe  # noqa: E402
from run import machine  # noqa: E402

from warrenmq.perf import stats  # noqa: E402
from warrenmq.perf.client import Connection  # noqa: E402
from warrenmq.perf.runner import run_workers  # noqa: E402
from warrenmq.perf.workers import ConsumerSpec, ProducerSpec  # noqa: E402

RESULTS = HERE / "results-ha.md"
README = HERE / "README.md"
TABLE_START, TABLE_END = "<!-- ha:start -->", "<!-- ha:end -->"
BROKERS = {"warren": "WarrenMQ", "rabbitmq": "RabbitMQ"}
CONFIRM_WINDOW = 100
HA_POLICY = '{"ha-mode":"all","ha-sync-mode":"automatic"}'
QUEUE_PREFIX = "bench-ha"
REPLICATED_TIMEOUT_S = 60.0  # a fresh queue: leader known, all replicas online / in sync
HA_GRACE_S = 15.0  # a policy's replicas are added in the background: how long to give them
STEADY_TIMEOUT_S = 30.0
FAILOVER_TIMEOUT_S = 60.0  # no delivery published after the kill by then: the rep failed


# -- queues -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    column: str  # the table's column
    label: str  # short name in queue names
    arguments: dict[str, Any]
    policy: bool  # needs the ha-all policy


KINDS = {
    "WarrenMQ": [Kind("WarrenMQ quorum", "quorum", {"x-queue-type": "quorum"}, False),
                 Kind("WarrenMQ ha-all", "ha", {}, True)],
    "RabbitMQ": [Kind("RabbitMQ quorum", "quorum", {"x-queue-type": "quorum"}, False),
                 Kind("RabbitMQ mirrored", "mirrored", {}, True)],
}
COLUMNS = [k.column for kinds in KINDS.values() for k in kinds]


class NotReplicated(RuntimeError):
    pass


async def _amqp(uri: str, work: Callable[[Any], Any]) -> Any:
    conn = await Connection.open(uri, name="bench ha admin")
    try:
        return await asyncio.wait_for(work(await conn.channel()), 60.0)
    finally:
        await conn.close()


def declare(side: Side, kind: Kind, queue: str, via: int = 0) -> None:
    async def work(ch: Any) -> None:
        await ch.queue_declare(queue, durable=True, arguments=kind.arguments)

    asyncio.run(_amqp(side.uri(via), work))


def delete(side: Side, queue: str, via: int = 0) -> None:
    async def work(ch: Any) -> None:
        await ch.queue_delete(queue)

    asyncio.run(_amqp(side.uri(via), work))


def depth(side: Side, queue: str, via: int) -> int:
    async def work(ch: Any) -> int:
        return (await ch.queue_declare(queue, passive=True)).message_count

    return asyncio.run(_amqp(side.uri(via), work))


def wait_replicated(side: Side, kind: Kind, queue: str, via: int = 0,
                    timeout_s: float = REPLICATED_TIMEOUT_S) -> Replicas:
    """Poll `list_queues` until the queue has a leader and all replicas online / in sync. A
    queue that stays on one node for HA_GRACE_S is not replicated at all: NotReplicated."""
    started = time.monotonic()
    last: Replicas | None = None
    while True:
        last = side.replicas(queue, via)
        if last and last.leader and len(set(last.in_sync)) == side.size():
            return last
        waited = time.monotonic() - started
        if last and len(set(last.members)) <= 1 and waited > HA_GRACE_S:
            reason = "ha policy not supported" if kind.policy else "queue not replicated"
            raise NotReplicated(f"{reason} (members: {last.members})")
        if waited > timeout_s:
            raise TimeoutError(f"queue not replicated within {timeout_s:g} s: {last}")
        time.sleep(0.25)


def fresh_queue(side: Side, kind: Kind, what: str) -> tuple[str, Replicas]:
    queue = f"{QUEUE_PREFIX}-{kind.label}-{what}-{os.getpid()}-{int(time.monotonic() * 1e3)}"
    declare(side, kind, queue)
    try:
        return queue, wait_replicated(side, kind, queue)
    except BaseException:
        _quiet_delete(side, queue, 0)
        raise


def _quiet_delete(side: Side, queue: str, via: int) -> str | None:
    """Delete a queue; the error text when it could not be (the run goes on)."""
    try:
        delete(side, queue, via)
        return None
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return f"deleting {queue}: {type(exc).__name__}: {exc}"


# -- 1. persistent + confirms, 2. producer -> consumer ----------------------------------------------
def measure_confirms(side: Side, kind: Kind, publishers: int,
                     args: argparse.Namespace) -> dict[str, Any]:
    queue, where = fresh_queue(side, kind, f"confirm{publishers}")
    leader = side.index(where.leader)
    try:
        specs = [ProducerSpec(uri=side.uri(leader), exchange="", routing_key=queue,
                              size_bytes=SIZE_BYTES, persistent=True,
                              confirm_window=CONFIRM_WINDOW) for _ in range(publishers)]
        run = run_workers(specs, [], args.warmup, args.duration)
        at_end = depth(side, queue, leader)
    finally:
        _quiet_delete(side, queue, 0)
    ps = run.producers
    latency = [x for p in ps for x in p["confirm_latency_us"]]
    return {"confirm_rate": round(sum(p["confirmed_window"] / p["window_s"] for p in ps), 1),
            "confirm_latency_ms": stats.percentiles(latency),
            "sent": sum(p["sent"] for p in ps), "confirmed": sum(p["confirmed"] for p in ps),
            "nacked": sum(p["nacked"] for p in ps),
            "unconfirmed": sum(p["unconfirmed"] for p in ps), "queue_depth_at_end": at_end,
            "leader": where.leader}


def measure_pubsub(side: Side, kind: Kind, args: argparse.Namespace) -> dict[str, Any]:
    queue, where = fresh_queue(side, kind, "pubsub")
    leader = side.index(where.leader)
    follower = next(i for i in range(side.size()) if i != leader)
    try:
        producer = ProducerSpec(uri=side.uri(leader), exchange="", routing_key=queue,
                                size_bytes=SIZE_BYTES, persistent=True,
                                confirm_window=CONFIRM_WINDOW)
        consumer = ConsumerSpec(uri=side.uri(follower), queues=[queue], prefetch=PREFETCH,
                                multi_ack_every=10)
        run = run_workers([producer], [consumer], args.warmup, args.duration)
        at_end = depth(side, queue, leader)
    finally:
        _quiet_delete(side, queue, 0)
    p, c = run.producers[0], run.consumers[0]
    return {"publish_rate": round(p["window_count"] / p["window_s"], 1),
            "confirm_rate": round(p["confirmed_window"] / p["window_s"], 1),
            "consume_rate": round(c["window_count"] / c["window_s"], 1),
            "nacked": p["nacked"], "unconfirmed": p["unconfirmed"],
            "queue_depth_at_end": at_end, "leader": where.leader,
            "consumer_node": side.name(follower)}


# -- 3. failover --------------------------------------------------------------------------------------
def failover_once(side: Side, kind: Kind, rep: int, args: argparse.Namespace) -> dict[str, Any]:
    """One repetition; always leaves the cluster whole again (or raises saying why not)."""
    queue, where = fresh_queue(side, kind, f"failover{rep}")
    leader = side.index(where.leader)
    consume_at, publish_at = [i for i in range(side.size()) if i != leader]
    probe = FailoverProbe(side.uri(publish_at), side.uri(consume_at), queue, args.rate)
    out: dict[str, Any] = {"leader": where.leader, "consumer": side.name(consume_at),
                           "publisher": side.name(publish_at)}
    killed = False
    probe.start()
    try:
        if not probe.steady.wait(STEADY_TIMEOUT_S):
            raise RuntimeError(f"no steady flow within {STEADY_TIMEOUT_S:g} s: "
                               f"{probe.errors[:3]}")
        probe.kill_at_ns = time.monotonic_ns()
        side.kill(leader)
        killed = True
        if probe.after_kill.wait(FAILOVER_TIMEOUT_S):
            out["failover_s"] = (probe.first_after_kill_ns - probe.kill_at_ns) / 1e9
        else:
            out["error"] = (f"no delivery published after the kill within "
                            f"{FAILOVER_TIMEOUT_S:g} s")
    finally:
        stopped = probe.stop(2 * SETTLE_TIMEOUT_S + 10)
        if killed:
            started = time.monotonic()
            side.restart(leader)
            out["rejoin_s"] = round(time.monotonic() - started, 2)
        problem = _quiet_delete(side, queue, consume_at)
        if problem:
            probe.errors.append(problem)
    if not stopped:  # its thread still runs: its sets may change under us
        out.setdefault("error", "the probe did not finish")
        return out
    lost = probe.confirmed - probe.received
    out.update(sent=probe.sent, confirmed=len(probe.confirmed), nacked=probe.nacked,
               unsettled=probe.unsettled, received=len(probe.received),
               duplicates=probe.duplicates, lost=len(lost),
               lost_first=sorted(lost)[:10], publisher_reconnects=probe.publisher_reconnects,
               consumer_restarts=probe.consumer_restarts, client_errors=probe.errors[:5],
               nack_after_s=[round(t, 2) for t in probe.nack_after_s[:10]])
    if lost:
        # reported as its own failure: a confirmed message must survive the failover
        out["lost_error"] = (f"{len(lost)} confirmed messages never delivered "
                             f"(first sequence numbers {sorted(lost)[:10]})")
    return out


def measure_failover(side: Side, kind: Kind, args: argparse.Namespace) -> dict[str, Any]:
    reps: list[dict[str, Any]] = []
    for rep in range(1, args.reps + 1):
        print(f"   failover {rep}/{args.reps}", end=" ", flush=True)
        try:
            result = failover_once(side, kind, rep, args)
        except Exception as exc:  # the cluster may not be whole again: stop repeating
            reps.append({"error": f"{type(exc).__name__}: {exc}"})
            print(f"failed: {reps[-1]['error'][:300]}", flush=True)
            break
        reps.append(result)
        shown = (f"{result['failover_s']:.3f} s" if "failover_s" in result
                 else f"failed: {result.get('error')}")
        print(f"leader {result['leader']}: {shown}, lost {result['lost']}, "
              f"rejoin {result.get('rejoin_s')} s", flush=True)
    times = [r["failover_s"] for r in reps if "failover_s" in r]
    out: dict[str, Any] = {"reps": reps, "recovered": f"{len(times)}/{args.reps}",
                           "lost": sum(r.get("lost", 0) for r in reps)}
    if times:
        out["median_s"] = statistics.median(times)
        out["max_s"] = max(times)
    else:
        out["error"] = next((r["error"] for r in reps if "error" in r), "no repetition ran")
    return out


# -- the plan ---------------------------------------------------------------------------------------
MEASURES = ("confirm1", "confirm10", "pubsub", "failover")


def run_kind(side: Side, kind: Kind, args: argparse.Namespace) -> dict[str, Any]:
    # the machine may be shared: what else ran during a column says how fair it is
    span = ForeignCpu(side)
    results = _run_kind(side, kind, args)
    results["conditions"] = span.result()
    print(f"   {kind.column}: {results['conditions']}", flush=True)
    return results


def _run_kind(side: Side, kind: Kind, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if kind.policy:
        r = side.ctl(0, "set_policy", "ha-all", "", HA_POLICY)
        if r.returncode != 0:
            return {"error": f"set_policy exited {r.returncode}: "
                             f"{(r.stderr or r.stdout).strip()[:300]}"}
    try:
        try:  # is it replicated at all? (also how long a fresh queue takes to be)
            started = time.monotonic()
            queue, where = fresh_queue(side, kind, "probe")
            results["ready_s"] = round(time.monotonic() - started, 2)
            _quiet_delete(side, queue, 0)
            print(f"   replicated on {where.members}, leader {where.leader}", flush=True)
        except Exception as exc:  # the whole column is n/a, with the reason
            results["error"] = (str(exc) if isinstance(exc, NotReplicated)
                                else f"{type(exc).__name__}: {exc}")
            print(f"   failed: {results['error'][:300]}", flush=True)
            return results
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("confirm1", lambda: measure_confirms(side, kind, 1, args)),
            ("confirm10", lambda: measure_confirms(side, kind, 10, args)),
            ("pubsub", lambda: measure_pubsub(side, kind, args)),
        ]
        # The throughput phases run in rounds (all three, then all three again, ...), so a
        # slow spell of the machine touches one round of each, not every round of one.
        rounds: dict[str, list[dict[str, Any]]] = {}
        for n in range(1, args.rounds + 1):
            for key, measure in plan:
                if key in args.measure:
                    label = f"{key} round {n}/{args.rounds}" if args.rounds > 1 else key
                    rounds.setdefault(key, []).append(_measure(kind, label, measure))
        for key, each in rounds.items():
            results[key] = combine_rounds(each)
        if "failover" in args.measure:
            results["failover"] = _measure(kind, "failover",
                                           lambda: measure_failover(side, kind, args))
    finally:
        if kind.policy:
            side.ctl(0, "clear_policy", "ha-all")
    return results


def _measure(kind: Kind, label: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    print(f"-- {kind.column} {label}", flush=True)
    try:
        result = measure()
    except Exception as exc:  # one failed measurement; the others still run
        result = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"   failed: {result['error'][:400]}", flush=True)
        return result
    print(f"   { {k: v for k, v in result.items() if not isinstance(v, dict | list)} }",
          flush=True)
    return result


SUMMED = ("nacked", "unconfirmed", "sent", "confirmed")  # counts: every round's add up


def combine_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One result for a measurement run in rounds: each number the median over the rounds
    that worked (counts of nacked and unconfirmed messages summed), latency percentiles the
    median of each round's; the rounds' rates are kept under "rounds"."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[0]
    out = dict(ok[len(ok) // 2])
    for k, v in ok[0].items():
        values = [r[k] for r in ok if isinstance(r.get(k), int | float)]
        if isinstance(v, bool) or not values:
            continue
        if isinstance(v, int | float):
            median = statistics.median(values)
            out[k] = (sum(values) if k in SUMMED else
                      int(round(median)) if isinstance(v, int) else round(median, 1))
    for k, v in ok[0].items():
        if isinstance(v, dict):
            out[k] = {p: round(statistics.median(r[k][p] for r in ok), 2) for p in v
                      if all(isinstance(r.get(k, {}).get(p), int | float) for r in ok)}
    out["rounds"] = [{k: r.get(k) for k in ("confirm_rate", "consume_rate", "error")
                      if r.get(k) is not None} for r in rounds]
    if len(ok) < len(rounds):
        out["failed_rounds"] = len(rounds) - len(ok)
    return out


def run_broker(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    """{"info": ..., column: results} for the broker's queue kinds, or {"error": ...}."""
    print(f"== {broker}: starting a {NODES}-node cluster", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"warren-bench-ha-{broker.lower()}-"))
    started = time.monotonic()
    try:
        side = start_side(broker, workdir)
    except Exception as exc:  # every column of this broker is n/a, with the reason
        shutil.rmtree(workdir, ignore_errors=True)
        error = f"the cluster did not form: {type(exc).__name__}: {exc}"
        print(f"   failed: {error[:400]}", flush=True)
        return {"error": error}
    out: dict[str, Any] = {"start_s": round(time.monotonic() - started, 2)}
    print(f"   up in {out['start_s']} s", flush=True)
    try:
        out["info"] = server_info(side.uri(0))
        for kind in KINDS[broker]:
            print(f"== {kind.column}", flush=True)
            out[kind.column] = run_kind(side, kind, args)
    finally:
        side.stop()
        if args.keep:
            print(f"   kept the nodes' data and logs in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def server_info(uri: str) -> dict[str, str]:
    async def info() -> dict[str, str]:
        conn = await Connection.open(uri, name="bench ha info")
        props = conn.server_properties
        await conn.close()
        return {k: str(props.get(k, "")) for k in ("product", "version", "platform")}

    return asyncio.run(info())


# -- output -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    label: str
    measurement: str
    key: str  # dotted path into the measurement's result
    unit: str
    higher_is_better: bool = True


ROWS = [
    Row("persistent + confirms, 1 publisher: confirmed", "confirm1", "confirm_rate", "msg/s"),
    Row("persistent + confirms, 1 publisher: confirm p50", "confirm1",
        "confirm_latency_ms.p50", "ms", False),
    Row("persistent + confirms, 1 publisher: confirm p99", "confirm1",
        "confirm_latency_ms.p99", "ms", False),
    Row("persistent + confirms, 10 publishers: confirmed", "confirm10", "confirm_rate",
        "msg/s"),
    Row("persistent + confirms, 10 publishers: confirm p99", "confirm10",
        "confirm_latency_ms.p99", "ms", False),
    Row("producer -> consumer (other node): consume", "pubsub", "consume_rate", "msg/s"),
    Row("producer -> consumer (other node): confirmed", "pubsub", "confirm_rate", "msg/s"),
    Row("failover, kill -> first delivery published after it: median", "failover",
        "median_s", "s", False),
    Row("failover: max", "failover", "max_s", "s", False),
    Row("failover: repetitions with a delivery after the kill", "failover", "recovered", ""),
    Row("failover: confirmed messages never delivered (all repetitions)", "failover", "lost",
        "msg", False),
]


def short_reason(error: str) -> str:
    """The gist of an error for a table cell: its first line, without exception class names,
    node addresses or queue names (they change from run to run)."""
    line = error.strip().splitlines()[0] if error.strip() else "failed"
    line = re.sub(r"[\w.-]+@(127\.0\.0\.1:\d+|localhost)", "<node>", line)
    line = re.sub(rf"{QUEUE_PREFIX}-[\w-]+", "<queue>", line)
    line = re.sub(r"\b[A-Z]\w*(Error|Exception): ", "", line)
    line = line.split("; ")[0].replace("|", "/")
    return line if len(line) <= 110 else line[:107] + "..."


def dig(result: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(result, dict) or part not in result:
            return None
        result = result[part]
    return result


def cell(results: dict[str, Any], broker: str, column: str, row: Row) -> tuple[str, float | None]:
    """The table text for one column's value of a row, and the number (None when n/a)."""
    side = results.get(broker)
    if side is None:
        return "not run", None
    if "error" in side:
        return f"n/a ({short_reason(side['error'])})", None
    kind = side.get(column, {})
    if "error" in kind:
        return f"n/a ({short_reason(kind['error'])})", None
    measured = kind.get(row.measurement)
    if measured is None:
        return "n/a (not measured)", None
    value = dig(measured, row.key)
    if value is None and "error" in measured:
        return f"n/a ({short_reason(measured['error'])})", None
    if isinstance(value, str):
        return value, None
    if not isinstance(value, int | float):
        return "n/a", None
    if row.unit in ("ms", "s"):
        return (f"{value:,.3f}" if row.unit == "s" else f"{value:,.2f}"), value
    return (f"{value:,.0f}" if abs(value) >= 100 or isinstance(value, int)
            else f"{value:,.1f}"), value


def table(results: dict[str, Any]) -> str:
    lines = ["| measurement | " + " | ".join(COLUMNS) + " | WarrenMQ / RabbitMQ quorum |",
             "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for row in ROWS:
        cells = []
        numbers: dict[str, float | None] = {}
        for broker, kinds in KINDS.items():
            for kind in kinds:
                text, value = cell(results, broker, kind.column, row)
                cells.append(text)
                numbers[kind.column] = value
        w, r = numbers["WarrenMQ quorum"], numbers["RabbitMQ quorum"]
        ratio = f"{w / r:.2f}" if w is not None and r and row.unit != "msg" else ""
        unit = row.unit + ("" if row.higher_is_better or not row.unit else ", lower is better")
        label = f"{row.label} ({unit})" if unit else row.label
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def _each(results: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(column, measurement key, result) for every measurement that ran."""
    for broker, side in results.items():
        for kind in KINDS[broker]:
            for key, measured in side.get(kind.column, {}).items():
                if isinstance(measured, dict) and key != "conditions":
                    yield kind.column, key, measured


def failures(results: dict[str, Any]) -> str:
    def first_line(error: str) -> str:
        return (error.strip().splitlines() or ["failed"])[0][:600].replace("`", "'")

    lines = []
    for broker, side in results.items():
        if "error" in side:
            lines.append(f"- {broker}: `{first_line(side['error'])}`")
        for kind in KINDS[broker]:
            if "error" in side.get(kind.column, {}):
                lines.append(f"- {kind.column}: `{first_line(side[kind.column]['error'])}`")
    for column, key, measured in _each(results):
        if "error" in measured and key != "failover":
            lines.append(f"- {column} {key}: `{first_line(measured['error'])}`")
        if measured.get("failed_rounds"):
            errors = [r["error"] for r in measured.get("rounds", []) if "error" in r]
            lines.append(f"- {column} {key}: {measured['failed_rounds']} of "
                         f"{len(measured['rounds'])} rounds failed, the median is of the "
                         f"others: `{first_line(errors[0]) if errors else '?'}`")
        if key in ("confirm1", "confirm10", "pubsub") and "error" not in measured and (
                measured.get("nacked") or measured.get("unconfirmed")):
            lines.append(f"- {column} {key}: {measured['nacked']} nacked, "
                         f"{measured['unconfirmed']} never confirmed")
        reps = measured.get("reps", []) if key == "failover" else []
        for i, rep in enumerate(reps, 1):
            for what in ("error", "lost_error"):
                if what in rep:
                    lines.append(f"- {column} failover {i}: `{first_line(rep[what])}`")
        nacked = sum(rep.get("nacked", 0) for rep in reps)
        if nacked:
            after = [t for rep in reps for t in rep.get("nack_after_s", [])]
            when = (f", {min(after):g} to {max(after):g} s after the kill" if after else "")
            noun = "publish was" if nacked == 1 else "publishes were"
            lines.append(f"- {column} failover: {nacked} {noun} nacked in "
                         f"{sum(1 for rep in reps if rep.get('nacked'))} of {len(reps)} "
                         f"repetitions{when} (the publisher must resend them)")
    return "\n".join(["", "Failures and anomalies:", *lines]) if lines else ""


def details(results: dict[str, Any]) -> str:
    out = ["| queue | run | leader killed | failover (s) | sent | confirmed | nacked | "
           "nacks arrived after the kill (s) | unsettled | lost | duplicates | "
           "publisher reconnects | consumer restarts | rejoin (s) |",
           "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    errors = []
    for column, key, measured in _each(results):
        if key != "failover":
            continue
        for i, rep in enumerate(measured.get("reps", []), 1):
            if "sent" not in rep:
                continue
            fo = f"{rep['failover_s']:.3f}" if "failover_s" in rep else "none"
            leader = rep["leader"].split("@")[0]
            out.append(f"| {column} | {i} | {leader} | {fo} | {rep['sent']:,} | "
                       f"{rep['confirmed']:,} | {rep['nacked']} | "
                       f"{', '.join(f'{t:g}' for t in rep.get('nack_after_s', []))} | "
                       f"{rep['unsettled']} | "
                       f"{rep['lost']} | {rep['duplicates']} | {rep['publisher_reconnects']} | "
                       f"{rep['consumer_restarts']} | {rep.get('rejoin_s', '')} |")
            if rep.get("client_errors"):
                shown = "; ".join(e.replace("|", "/").replace("`", "'")[:200]
                                  for e in rep["client_errors"][:3])
                errors.append(f"- {column} failover {i}: {shown}")
    if len(out) == 2:
        return ""
    text = "\n".join(out)
    if errors:
        text += "\n\nWhat the clients saw during the failovers (first errors):\n\n" + \
            "\n".join(errors)
    return text


def others(results: dict[str, Any]) -> str:
    lines = ["| queue | run | leader (node of the publishers) | queue depth at end |",
             "|---|---|---|---:|"]
    for column, key, measured in _each(results):
        if key in ("confirm1", "confirm10", "pubsub") and "error" not in measured:
            lines.append(f"| {column} | {key} | {measured['leader'].split('@')[0]} | "
                         f"{measured['queue_depth_at_end']:,} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def spread(results: dict[str, Any]) -> str:
    """Every round's rates, for the measurements run in rounds."""
    lines = ["| queue | measurement | rounds (msg/s, in the order run) | median |",
             "|---|---|---|---:|"]
    for column, key, measured in _each(results):
        each = measured.get("rounds") if isinstance(measured, dict) else None
        if not each or len(each) < 2:
            continue
        for rate, what in (("confirm_rate", "confirmed"), ("consume_rate", "consumed")):
            values = [r.get(rate) for r in each]
            if all(v is None for v in values):
                continue
            shown = ", ".join("failed" if v is None else f"{v:,.0f}" for v in values)
            lines.append(f"| {column} | {key} {what} | {shown} | {measured[rate]:,.0f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def conditions(results: dict[str, Any]) -> str:
    lines = ["| queue | minutes | CPU used by other processes (% of one core; 2 cores = 200) "
             "| CPU stolen by the hypervisor (%) |", "|---|---:|---:|---:|"]
    for broker, side in results.items():
        for kind in KINDS[broker]:
            c = side.get(kind.column, {}).get("conditions")
            if c:
                lines.append(f"| {kind.column} | {c['minutes']:.1f} | "
                             f"{c['foreign_cpu_pct']:.0f} | {c['steal_pct']:.1f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def versions(results: dict[str, Any]) -> str:
    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    seen = []
    for broker, side in results.items():
        info = side.get("info")
        seen.append(f"{broker} {info.get('version', '?')} ({info.get('platform', '?')})"
                    if info else f"{broker} (did not start)")
    return (f"{'; '.join(seen)}; Python {platform.python_version()}; "
            f"warrenmq {pkg('warrenmq')}, pamqp {pkg('pamqp')}, uvloop {pkg('uvloop')}")


SETUP_TEXT = """\
## Setup

- Clusters: 3 nodes on this machine, formed the operator's way (`stop_app`, `join_cluster
  <node 1>`, `start_app` on nodes 2 and 3, then `cluster_status` until all three run):
  `tests/support/rabbitmq.py` `start_rabbitmq_cluster` (Debian's RabbitMQ 3.10, each node with
  its own ports and data, one private epmd and cookie) and `tests/support/cluster.py`
  `start_cluster` (`warren-server` processes, default settings). One cluster at a time.
- Queues: durable, 3 replicas: `x-queue-type: quorum`, or a classic queue under the policy
  `ha-all` (pattern "", set before and cleared after that column's runs):
  `{ha_policy}`. Each measurement declares a fresh queue on node 1 and waits until `list_queues` shows its
  leader and all replicas online (quorum) or synchronised (mirrored).
- Confirms and producer -> consumer: `warren-perf`'s workers (`run_workers`), one process
  per client; publishers on the leader's node (for RabbitMQ's mirrored queue, the master's),
  the consumer on a follower's; 1 KiB persistent bodies, at most {window} unconfirmed per
  publisher, consumer prefetch {prefetch} with a multiple ack every 10 deliveries.
- Failover: consumer on one non-leader node (prefetch {prefetch}, an ack per delivery),
  publisher on the other at {rate:g} msg/s with confirms; the leader's node is SIGKILLed once
  the consumer has a second's worth; the time is from the signal to the first delivery of a
  message published after it. Both clients reconnect (the consumer consumes again after a
  Basic.Cancel) and the counts show whether they had to. After the publisher's last confirm,
  every confirmed sequence number must reach the consumer within {settle:g} s ("lost"
  counts those that did not). The killed node is then started again on its data and the
  cluster waited for ("rejoin").
- Everything (3 broker nodes and the clients) shares this machine's cores: a replicated
  queue here measures the cost of replication, not extra capacity.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description="WarrenMQ vs RabbitMQ replicated queues")
    parser.add_argument("--quick", action="store_true",
                        help="3 s windows after 1 s warm-up, 3 failovers per queue")
    parser.add_argument("--only", choices=sorted(BROKERS), default=None,
                        help="run one broker only (the other's columns read 'not run')")
    parser.add_argument("--duration", type=float, default=None, help="window, s (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="s (default 2)")
    parser.add_argument("--reps", type=int, default=None,
                        help="failovers per queue kind (default 5)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the throughput measurements per queue kind, the "
                             "table showing each number's median (default 3; --quick 1)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="failover publisher, msg/s (default 500)")
    parser.add_argument("--measure", default=",".join(MEASURES),
                        help=f"comma-separated subset of {','.join(MEASURES)} (default all; "
                             "a subset implies --no-write)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the clusters' data directories and logs")
    parser.add_argument("--no-write", action="store_true",
                        help="print the table only; leave results-ha.md alone")
    args = parser.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.reps = args.reps or (3 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.duration <= 0 or args.reps < 1 or args.rate <= 0 or args.rounds < 1:
        parser.error("--duration, --reps, --rounds and --rate must be > 0")
    args.measure = [m.strip() for m in args.measure.split(",") if m.strip()]
    if not args.measure or set(args.measure) - set(MEASURES):
        parser.error(f"--measure takes a subset of {','.join(MEASURES)}")
    if set(args.measure) != set(MEASURES):
        args.no_write = True  # a partial table must not replace the published one
    brokers = [BROKERS[args.only]] if args.only else ["RabbitMQ", "WarrenMQ"]

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for broker in brokers:
        results[broker] = run_broker(broker, args)
    body = table(results)
    print()
    print(body)
    print(failures(results))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.no_write:
        return 0
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"Run: {stamp}, {'quick' if args.quick else 'full'} (windows {args.duration:g} s "
              f"after {args.warmup:g} s warm-up; throughput figures are medians of "
              f"{args.rounds} round{'s' if args.rounds > 1 else ''}; {args.reps} failovers "
              f"per queue at "
              f"{args.rate:g} msg/s). Machine: {machine()}; load average {load_before:.1f} at "
              f"the start, {os.getloadavg()[0]:.1f} at the end; "
              f"{time.monotonic() - started:.0f} s in all. Versions: {versions(results)}.")
    flags = " ".join(sys.argv[1:])
    fo, more, load = details(results), others(results), conditions(results)
    rounds = spread(results)
    RESULTS.write_text(
        "# Replicated-queue benchmark results\n\n"
        f"Written by `python bench/ha.py{' ' + flags if flags else ''}`; what each line "
        "measures is in the script's docstring and under Setup below.\n\n"
        f"{header}\n\n{body}\n{failures(results)}\n\n"
        + (f"## Throughput, one figure per round\n\n{rounds}\n\n" if rounds else "")
        + (f"## Failovers, one line per repetition\n\n{fo}\n\n" if fo else "")
        + (f"## Where the publishers were, queue depth at the end\n\n{more}\n\n" if more else "")
        + (f"## What else ran on the machine (it is shared)\n\n{load}\n\n" if load else "")
        + SETUP_TEXT.format(ha_policy=HA_POLICY, window=CONFIRM_WINDOW, prefetch=PREFETCH,
                            rate=args.rate, settle=SETTLE_TIMEOUT_S))
    failed = failures(results)
    replace_between(README, TABLE_START, TABLE_END,
                    f"{header}\n\n{body}" + (f"\n{failed}" if failed else ""))
    print(f"wrote {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
