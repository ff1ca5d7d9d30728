"""Cluster benchmarks: WarrenMQ and RabbitMQ 3.10 side by side, measured in one run.

For each broker, first a single node, then a 3-node cluster (one setup at a time, so each
gets the machine's cores to itself):
  (a) metadata: queue.declare + queue.delete pairs per second (classic, non-durable, a
      fresh name each time), from 1 client and from 4 concurrent clients, each client a
      process of its own with one connection; on the cluster client i talks to node
      i mod 3, so the 4 clients are spread over the nodes. The 1-client lines also give
      the latency of one pair;
  (b) publish -> consume: 1 KiB transient messages to a classic non-durable queue declared
      on node 1; the publisher on node 1 (no confirms, then with confirms, at most 100
      outstanding), the consumer on node 2 (prefetch 100, manual acks: a multiple ack every
      10 deliveries, as bench/run.py's throughput). On the single node both are on it: the
      baseline the cross-node numbers compare with.
Both clusters are formed the operator's way: 3 nodes started, then `stop_app`,
`join_cluster <node 1>`, `start_app` on nodes 2 and 3 (rabbitmqctl / warrenctl), and used
once `cluster_status` lists all three as running (tests/support: rabbitmq.py and cluster.py,
the same helpers the tests use). A side that cannot run reports "n/a (reason)" instead of
stopping the run. Prints a markdown table and writes bench/results-cluster.md with the
machine, versions and setup (and refreshes the table between `<!-- cluster:start -->` and
`<!-- cluster:end -->` in bench/README.md, when it has them). Numbers only: nothing here
asserts a timing.

    python bench/cluster.py                 # 5 s metadata / 10 s throughput windows
    python bench/cluster.py --quick         # 3 s windows after a 1 s warm-up
    python bench/cluster.py --only warren   # or rabbitmq
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import platform
import queue as queue_mod
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests/support: the brokers' start and stop helpers
from brokers import replace_between  # noqa: E402
from run import machine  # noqa: E402

from warrenmq.perf import stats  # noqa: E402
from warrenmq.perf.client import Connection  # noqa: E402
from warrenmq.perf.runner import install_event_loop_policy, run_workers  # noqa: E402
from warrenmq.perf.workers import ConsumerSpec, ProducerSpec  # noqa: E402

RESULTS = HERE / "results-cluster.md"
README = HERE / "README.md"
TABLE_START, TABLE_END = "<!-- cluster:start -->", "<!-- cluster:end -->"
BROKERS = {"warren": "WarrenMQ", "rabbitmq": "RabbitMQ"}
CONNECT_TIMEOUT_S = 60.0
START_DELAY_S = 0.2
QUEUE_PREFIX = "bench-cluster"


# -- the brokers --------------------------------------------------------------------------------
@dataclass
class Setup:
    """A running single node or cluster: AMQP URIs in node order, and how to stop it."""

    uris: list[str]
    stop: Callable[[], None]


def _uri(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def start_setup(broker: str, n: int, workdir: Path) -> Setup:
    if broker == "RabbitMQ":
        from tests.support.rabbitmq import start_rabbitmq_cluster

        rabbits = start_rabbitmq_cluster(workdir, n)
        return Setup([_uri(node.port) for node in rabbits], rabbits.stop)
    from tests.support.cluster import start_cluster, stop_cluster

    nodes = start_cluster(workdir, n, "join")
    return Setup([_uri(node.port) for node in nodes], lambda: stop_cluster(nodes))


def server_info(uri: str) -> dict[str, str]:
    async def info() -> dict[str, str]:
        conn = await Connection.open(uri, name="bench cluster info")
        props = conn.server_properties
        await conn.close()
        return {k: str(props.get(k, "")) for k in ("product", "version", "platform")}

    return asyncio.run(info())


# -- (a) metadata operations ----------------------------------------------------------------------
async def _declare_delete(uri: str, barrier: Any, go: Any, start: Any, warmup_s: float,
                          duration_s: float, durable: bool) -> dict[str, Any]:
    conn = await Connection.open(uri, name="bench cluster metadata")
    try:
        ch = await conn.channel()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, barrier.wait, CONNECT_TIMEOUT_S)
        if not await loop.run_in_executor(None, go.wait, CONNECT_TIMEOUT_S):
            raise TimeoutError("no start signal from the parent")
        t0 = start.value
        window_start, window_end = t0 + warmup_s, t0 + warmup_s + duration_s
        while time.monotonic() < t0:
            await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        pairs, latency_us, i = 0, [], 0
        prefix = f"{QUEUE_PREFIX}-{os.getpid()}"
        while (began := time.monotonic()) < window_end:
            name = f"{prefix}-{i}"
            i += 1
            await ch.queue_declare(name, durable=durable)
            await ch.queue_delete(name)
            done = time.monotonic()
            # a pair counts when it completed inside the window
            if window_start <= done <= window_end:
                pairs += 1
                if began >= window_start:
                    latency_us.append(int((done - began) * 1e6))
        return {"pairs": pairs, "window_s": duration_s, "latency_us": latency_us}
    finally:
        await conn.close()


def _meta_worker(uri: str, barrier: Any, go: Any, start: Any, warmup_s: float,
                 duration_s: float, durable: bool, results: Any) -> None:
    install_event_loop_policy()
    try:
        result = asyncio.run(_declare_delete(uri, barrier, go, start, warmup_s, duration_s,
                                             durable))
    except BaseException as exc:  # reported to the parent, which fails the measurement
        barrier.abort()
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    results.put(result)


def measure_metadata(uris: list[str], clients: int, warmup_s: float, duration_s: float,
                     durable: bool) -> dict[str, Any]:
    """declare+delete pairs/s summed over `clients` processes, client i on node i mod n."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    go, start, results = ctx.Event(), ctx.Value("d", 0.0), ctx.Queue()
    procs = [ctx.Process(target=_meta_worker, daemon=True, args=(
        uris[i % len(uris)], barrier, go, start, warmup_s, duration_s, durable, results))
        for i in range(clients)]
    for proc in procs:
        proc.start()
    try:
        try:
            barrier.wait(CONNECT_TIMEOUT_S)
        except Exception:
            pass  # a client failed to connect: its error arrives on `results`
        start.value = time.monotonic() + START_DELAY_S
        go.set()
        deadline = time.monotonic() + START_DELAY_S + warmup_s + duration_s + 60.0
        gathered = []
        while len(gathered) < clients:
            try:
                gathered.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue_mod.Empty:
                raise TimeoutError("metadata clients did not report in time") from None
            if "error" in gathered[-1]:
                raise RuntimeError(gathered[-1]["error"])
    finally:
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
    latency = [x for r in gathered for x in r["latency_us"]]
    return {"pair_rate": round(sum(r["pairs"] / r["window_s"] for r in gathered), 1),
            "pairs": sum(r["pairs"] for r in gathered),
            "clients_per_node": [sum(1 for i in range(clients) if i % len(uris) == k)
                                 for k in range(len(uris))],
            "pair_latency_ms": stats.percentiles(latency)}


# -- (b) publish -> consume -------------------------------------------------------------------------
async def _admin(uri: str, work: Callable[[Any], Any]) -> Any:
    conn = await Connection.open(uri, name="bench cluster admin")
    try:
        return await asyncio.wait_for(work(await conn.channel()), CONNECT_TIMEOUT_S)
    finally:
        await conn.close()


def measure_pubsub(uris: list[str], confirms: bool, warmup_s: float, duration_s: float,
                   multi_ack_every: int) -> dict[str, Any]:
    """Publisher on node 1, consumer on node 2 (both on node 1 when there is one node)."""
    publish_uri, consume_uri = uris[0], uris[1 % len(uris)]
    queue = f"{QUEUE_PREFIX}-q-{os.getpid()}-{int(time.monotonic() * 1000)}"

    async def declare(ch: Any) -> None:
        await ch.queue_declare(queue)

    async def depth_and_delete(ch: Any) -> int:
        depth = (await ch.queue_declare(queue, passive=True)).message_count
        await ch.queue_delete(queue)
        return depth

    asyncio.run(_admin(publish_uri, declare))  # on node 1: where the queue lives
    try:
        producer = ProducerSpec(uri=publish_uri, exchange="", routing_key=queue,
                                size_bytes=1024, confirm_window=100 if confirms else 0)
        consumer = ConsumerSpec(uri=consume_uri, queues=[queue], prefetch=100,
                                multi_ack_every=multi_ack_every)
        run = run_workers([producer], [consumer], warmup_s, duration_s)
    finally:
        depth = asyncio.run(_admin(publish_uri, depth_and_delete))
    p, c = run.producers[0], run.consumers[0]
    out: dict[str, Any] = {
        "publish_rate": round(p["window_count"] / p["window_s"], 1),
        "consume_rate": round(c["window_count"] / c["window_s"], 1),
        "queue_depth_at_end": depth,
        "client_cpu_pct": {"producer": p.get("cpu_pct"), "consumer": c.get("cpu_pct")},
    }
    if confirms:
        out["confirm_rate"] = round(p["confirmed_window"] / p["window_s"], 1)
        out["confirm_latency_ms"] = stats.percentiles(p["confirm_latency_us"])
    return out


# -- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    label: str
    topology: str  # "single" | "cluster"
    measurement: str  # key of the measurement within its topology
    key: str  # dotted path into the measurement's result
    unit: str
    higher_is_better: bool = True


def rows(n: int) -> list[Row]:
    out: list[Row] = []
    for topology, where in (("single", "single node"), ("cluster", f"{n}-node cluster")):
        spread = "" if topology == "single" else ", spread over the nodes"
        out += [
            Row(f"declare+delete, 1 client, {where}", topology, "meta1", "pair_rate",
                "pairs/s"),
            Row(f"declare+delete, 1 client, {where}: pair latency p50", topology, "meta1",
                "pair_latency_ms.p50", "ms", False),
            Row(f"declare+delete, 1 client, {where}: pair latency p99", topology, "meta1",
                "pair_latency_ms.p99", "ms", False),
            Row(f"declare+delete, 4 clients{spread}, {where}", topology, "meta4",
                "pair_rate", "pairs/s"),
        ]
    for topology, where in (("single", "single node, publish and consume on it"),
                            ("cluster", "publish on node 1, consume on node 2")):
        out += [
            Row(f"{where}, no confirms: publish", topology, "pubsub", "publish_rate", "msg/s"),
            Row(f"{where}, no confirms: consume", topology, "pubsub", "consume_rate", "msg/s"),
            Row(f"{where}, confirms: confirmed", topology, "pubsub_confirms", "confirm_rate",
                "msg/s"),
            Row(f"{where}, confirms: consume", topology, "pubsub_confirms", "consume_rate",
                "msg/s"),
        ]
    return out


def run_broker(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement against one broker: {topology: {measurement: result | error}}."""
    out: dict[str, Any] = {}
    for topology, n in (("single", 1), ("cluster", args.nodes)):
        where = "single node" if n == 1 else f"{n}-node cluster"
        print(f"== {broker}: starting a {where}", flush=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"warren-bench-cluster-{broker.lower()}-"))
        results: dict[str, Any] = {}
        out[topology] = results
        started = time.monotonic()
        try:
            setup = start_setup(broker, n, workdir)
        except Exception as exc:  # the whole topology is n/a, with the reason
            reason = (f"the {where} did not start" if n == 1 else "the cluster did not form")
            results["error"] = f"{reason}: {type(exc).__name__}: {exc}"
            print(f"   failed: {results['error'][:400]}", flush=True)
            shutil.rmtree(workdir, ignore_errors=True)
            continue
        results["start_s"] = round(time.monotonic() - started, 2)
        print(f"   up in {results['start_s']} s", flush=True)
        try:
            results["info"] = server_info(setup.uris[0])
            uris = setup.uris
            plan: list[tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...]]] = [
                ("meta1", measure_metadata,
                 (uris, 1, args.warmup, args.meta_duration, args.durable)),
                ("meta4", measure_metadata,
                 (uris, 4, args.warmup, args.meta_duration, args.durable)),
                ("pubsub", measure_pubsub,
                 (uris, False, args.warmup, args.duration, args.multi_ack_every)),
                ("pubsub_confirms", measure_pubsub,
                 (uris, True, args.warmup, args.duration, args.multi_ack_every)),
            ]
            for key, measure, params in plan:
                print(f"-- {broker} {where} {key}", flush=True)
                try:
                    results[key] = measure(*params)
                    shown = {k: v for k, v in results[key].items() if not isinstance(v, dict)}
                    print(f"   {shown}", flush=True)
                except Exception as exc:  # one failed measurement; the others still run
                    results[key] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"   failed: {results[key]['error'][:400]}", flush=True)
        finally:
            setup.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return out


# -- output -----------------------------------------------------------------------------------------
def dig(result: dict[str, Any], dotted: str) -> float | None:
    value: Any = result
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, int | float) else None


def short_reason(error: str) -> str:
    """The gist of an error for a table cell: its first line, without exception class names,
    node addresses (ports change from run to run) or advice."""
    line = error.strip().splitlines()[0] if error.strip() else "failed"
    line = re.sub(r"[\w.-]+@127\.0\.0\.1:\d+", "<node>", line)
    line = re.sub(rf"'{QUEUE_PREFIX}-[^']*'", "'<queue>'", line)
    line = re.sub(r"\b[A-Z]\w*(Error|Exception): ", "", line.replace("-n <node> ", ""))
    line = line.split("; ")[0].replace("|", "/")
    return line if len(line) <= 110 else line[:107] + "..."


def cell(results: dict[str, Any], row: Row) -> tuple[str, float | None]:
    """The table text for one broker's value of a row, and the number (None when n/a)."""
    if not results:
        return "not run", None
    topology = results.get(row.topology, {})
    if "error" in topology:
        return f"n/a ({short_reason(topology['error'])})", None
    measured = topology.get(row.measurement)
    if measured is None:
        return "n/a (not measured)", None
    if "error" in measured:
        return f"n/a ({short_reason(measured['error'])})", None
    value = dig(measured, row.key)
    if value is None:
        return "n/a", None
    if row.unit == "ms":
        return f"{value:,.2f}", value
    return (f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"), value


def table(results: dict[str, dict[str, Any]], n: int) -> str:
    w, r = results.get("WarrenMQ", {}), results.get("RabbitMQ", {})
    lines = ["| measurement | WarrenMQ | RabbitMQ 3.10 | WarrenMQ / RabbitMQ |",
             "|---|---:|---:|---:|"]
    for row in rows(n):
        (wt, wv), (rt, rv) = cell(w, row), cell(r, row)
        ratio = f"{wv / rv:.2f}" if wv is not None and rv else "n/a"
        better = "" if row.higher_is_better else ", lower is better"
        lines.append(f"| {row.label} ({row.unit}{better}) | {wt} | {rt} | {ratio} |")
    return "\n".join(lines)


def failures(results: dict[str, dict[str, Any]]) -> str:
    def first_line(error: str) -> str:  # a worker's traceback follows its message
        return (error.strip().splitlines() or ["failed"])[0][:600].replace("`", "'")

    lines = []
    for broker, per_topology in results.items():
        for topology, measured in per_topology.items():
            if "error" in measured:
                lines.append(f"- {broker} {topology}: `{first_line(measured['error'])}`")
                continue
            for key, result in measured.items():
                if isinstance(result, dict) and "error" in result:
                    lines.append(f"- {broker} {topology} {key}: "
                                 f"`{first_line(result['error'])}`")
    return "\n".join(["", "Failures:", *lines]) if lines else ""


def details(results: dict[str, dict[str, Any]]) -> str:
    """Queue depth at the end of the publish -> consume runs and client CPU use."""
    lines = ["| broker | setup | run | queue depth at end | producer CPU % | consumer CPU % |",
             "|---|---|---|---:|---:|---:|"]
    for broker, per_topology in results.items():
        for topology, measured in per_topology.items():
            for key in ("pubsub", "pubsub_confirms"):
                m = measured.get(key)
                if not isinstance(m, dict) or "error" in m:
                    continue
                cpu = m.get("client_cpu_pct", {})
                lines.append(f"| {broker} | {topology} | {key} | {m['queue_depth_at_end']:,} "
                             f"| {cpu.get('producer')} | {cpu.get('consumer')} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def versions(results: dict[str, dict[str, Any]]) -> str:
    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    seen = []
    for broker, per_topology in results.items():
        info = next((m["info"] for m in per_topology.values() if "info" in m), None)
        if info:
            seen.append(f"{broker} {info.get('version', '?')} ({info.get('platform', '?')})")
        else:
            seen.append(f"{broker} (did not start)")
    return (f"{'; '.join(seen)}; Python {platform.python_version()}; "
            f"warrenmq {pkg('warrenmq')}, pamqp {pkg('pamqp')}, uvloop {pkg('uvloop')}")


SETUP_TEXT = """\
## Setup

- RabbitMQ: Debian's `rabbitmq-server` 3.10, each node with its own AMQP and distribution
  port, mnesia and log directories and `listeners.tcp.default = 127.0.0.1:$PORT`,
  `loopback_users = none`, no plugins; the nodes of a cluster share one HOME (one Erlang
  cookie) and one private epmd. Classic queues, default (non-mirrored) policies: a queue
  lives on the node it was declared on, and a consumer on another node is served through
  Erlang distribution.
- WarrenMQ: `warren-server` processes named `wN@127.0.0.1:PORT` (PORT = the cluster port),
  one cookie file, fixed AMQP ports, default settings.
- Clusters: `stop_app`, `join_cluster <node 1>`, `start_app` on nodes 2..n, then
  `cluster_status` polled until every node lists all as running
  (`tests/support/rabbitmq.py` `start_rabbitmq_cluster`, `tests/support/cluster.py`
  `start_cluster`).
- Metadata clients: `warrenmq/perf`'s asyncio AMQP client, one process and one connection
  per client, `queue.declare` (classic, {durability}) then `queue.delete` of a fresh name,
  back to back; the rate is pairs completed inside the window, summed over clients.
- Publish -> consume: `warren-perf`'s producer and consumer workers (`run_workers`), one
  each, in processes of their own.
- Everything (brokers and clients) shares this machine's cores: a 3-node cluster on two
  cores measures the cost of coordination, not extra capacity.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description="WarrenMQ vs RabbitMQ cluster benchmarks")
    parser.add_argument("--quick", action="store_true", help="3 s windows after 1 s warm-up")
    parser.add_argument("--only", choices=sorted(BROKERS), default=None,
                        help="run one broker only (the other column reads 'not run')")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    parser.add_argument("--duration", type=float, default=None,
                        help="publish -> consume window, s (default 10)")
    parser.add_argument("--meta-duration", type=float, default=None,
                        help="metadata window, s (default 5)")
    parser.add_argument("--warmup", type=float, default=None, help="s (default 2)")
    parser.add_argument("--durable", action="store_true",
                        help="durable queues in the metadata measurement")
    parser.add_argument("--multi-ack-every", type=int, default=10,
                        help="consumer: one multiple ack per N deliveries (1 = ack each)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the table only; leave results-cluster.md alone")
    args = parser.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.meta_duration = args.meta_duration or (3.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    if args.nodes < 2 or args.duration <= 0 or args.meta_duration <= 0:
        parser.error("--nodes must be >= 2, the durations > 0")
    brokers = [BROKERS[args.only]] if args.only else ["RabbitMQ", "WarrenMQ"]

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, Any]] = {}
    for broker in brokers:
        results[broker] = run_broker(broker, args)
    body = table(results, args.nodes)
    print()
    print(body)
    print(failures(results))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.no_write:
        return 0
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"Run: {stamp}, {'quick' if args.quick else 'full'} (metadata windows "
              f"{args.meta_duration:g} s, publish -> consume windows {args.duration:g} s, "
              f"each after {args.warmup:g} s warm-up; consumer acks: a multiple ack every "
              f"{args.multi_ack_every}). Machine: {machine()}; load average {load_before:.1f} "
              f"at the start, {os.getloadavg()[0]:.1f} at the end; "
              f"{time.monotonic() - started:.0f} s in all. Versions: {versions(results)}.")
    flags = " ".join(sys.argv[1:])
    extra = details(results)
    RESULTS.write_text(
        "# Cluster benchmark results\n\n"
        f"Written by `python bench/cluster.py{' ' + flags if flags else ''}`; what each line "
        "measures is in the script's docstring and under Setup below.\n\n"
        f"{header}\n\n{body}\n{failures(results)}\n\n"
        + (f"Publish -> consume runs: queue depth at the end and client CPU use.\n\n"
           f"{extra}\n\n" if extra else "")
        + SETUP_TEXT.format(durability="durable" if args.durable else "non-durable"))
    replace_between(README, TABLE_START, TABLE_END, f"{header}\n\n{body}\n{failures(results)}")
    print(f"wrote {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
