"""Durability benchmarks: WarrenMQ and RabbitMQ side by side in one run, one broker at a time.

For each broker (started by `brokers.py` on free loopback ports in a temporary directory):
  1. persistent messages with publisher confirms to a durable queue, 1 and 10 publishers
     (`warren-perf confirm --persistent`): confirmed msg/s, confirm latency p50/p99;
  2. deep queue: N persistent 1 KiB messages with confirms into a durable queue with no
     consumer (`warren-perf confirm --messages N --queue Q`): publish rate, the broker's
     RSS at the end and its disk use;
  3. restart: SIGTERM, then the same command on the same data; the time from the process
     start until a passive declare answers with all N messages and a basic.get returns one
     (it is rejected back), and the RSS then;
  4. drain of that queue by one consumer, prefetch 100, a multiple ack every 10
     (`warren-perf drain`): drain rate and peak RSS;
  5. optionally M small (100-byte) transient messages in one queue: does it fit, RSS per
     message.
The drain runs after the restart so that N messages are published once, not twice.
Prints a markdown table with ratios, writes bench/results-durability.md (date, machine,
versions, exact commands) and refreshes the durability table in bench/README.md.
Numbers only: nothing here asserts a timing.

    python bench/durability.py            # N = 1,000,000, M = 10,000,000
    python bench/durability.py --quick    # N = 100,000, M = 1,000,000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from brokers import (  # noqa: E402
    RABBITMQ_SERVER,
    Broker,
    _comm,
    _group_pids,
    replace_between,
    start_rabbitmq,
    start_warren,
    wait_for,
)
from run import describe_broker, machine, run_scenario, sanitize, versions  # noqa: E402

from warrenmq.perf.client import AmqpError, Connection  # noqa: E402
from warrenmq.perf.stats import rss_kib  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-durability.md"
README = HERE / "README.md"
TABLE_START, TABLE_END = "<!-- durability:start -->", "<!-- durability:end -->"
DEEP_QUEUE = "bench-durability-deep"
SMALL_QUEUE = "bench-durability-small"
STOP_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 15.0  # one readiness probe (connect, declare, get)
STUCK_COUNT_S = 20.0  # a restarted queue answering with the same short count this long: lost


def perf(broker: Broker, args: list[str], commands: list[str],
         timeout_s: float) -> dict[str, Any]:
    """Run one warren-perf scenario against the broker; its metrics, or {"error": ...}."""
    cmd = [sys.executable, "-m", "warrenmq.cli.perf", "--uri", broker.uri, "--json",
           "--broker-pid", str(broker.pid), *args]
    commands.append(sanitize(shlex.join(cmd), broker))
    result = run_scenario(cmd, timeout_s)
    if "error" in result:
        return result
    return {**result["metrics"], "broker_info": result["broker"]}


def disk_kib(path: Path) -> int:
    """Blocks a directory tree occupies on disk, in KiB."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total // 1024


def data_dir(broker: Broker) -> Path:
    return broker.workdir / ("mnesia" if broker.name == "RabbitMQ" else "data")


def terminate(broker: Broker) -> float:
    """SIGTERM the broker and wait for all its processes to exit: the seconds it took."""
    started = time.monotonic()
    for pid in {broker.pid, broker.proc.pid}:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    wait_for(lambda: broker.proc.poll() is not None and not _group_pids(broker.proc.pid),
             STOP_TIMEOUT_S, f"{broker.name} to exit after SIGTERM")
    return time.monotonic() - started


def relaunch(broker: Broker) -> float:
    """Start the broker again with the same command, environment and data; the start time."""
    if broker.name == "WarrenMQ":
        ports_file = Path(broker.command[broker.command.index("--ports-file") + 1])
        ports_file.unlink(missing_ok=True)
        log_path = broker.workdir / "warren.log"
    else:
        log_path = broker.workdir / "stdout.log"
    with open(log_path, "ab") as log:
        started = time.monotonic()
        broker.proc = subprocess.Popen(broker.command, env={**os.environ, **broker.env},
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
    broker.pid = broker.proc.pid
    return started


def _current_uri(broker: Broker) -> str | None:
    if broker.name == "RabbitMQ":
        return broker.uri
    ports_file = Path(broker.command[broker.command.index("--ports-file") + 1])
    try:
        port = json.loads(ports_file.read_text())["amqp"]
    except (OSError, ValueError, KeyError):
        return None
    return f"amqp://guest:guest@127.0.0.1:{port}/"


async def _probe(uri: str, queue: str) -> tuple[str, int, bool]:
    """(stage reached, message count, got a message) for one attempt on a restarting broker."""
    try:
        conn = await Connection.open(uri, name="bench durability probe", timeout_s=5.0)
    except (OSError, TimeoutError, AmqpError):
        return "down", -1, False
    try:
        ch = await conn.channel()
        ok = await ch.queue_declare(queue, passive=True)
        got = await ch.basic_get(queue)
        if got is not None:
            ch.basic_reject(got[0].delivery_tag or 0, requeue=True)
        return "declared", ok.message_count or 0, got is not None and len(got[1]) > 0
    except (OSError, AmqpError):  # not there yet (404 while queues recover) or dropped
        return "listening", -1, False
    finally:
        await conn.close()


def wait_serving(broker: Broker, started: float, expected: int,
                 timeout_s: float) -> dict[str, Any]:
    """Poll until the deep queue answers with `expected` messages and gives one."""
    out: dict[str, Any] = {}
    deadline = started + timeout_s
    last_count, same_since = -1, 0.0
    while time.monotonic() < deadline:
        if broker.proc.poll() is not None:
            raise RuntimeError(f"{broker.name} exited {broker.proc.returncode} while "
                               f"restarting:\n{broker.log_tail()}")
        uri = _current_uri(broker)
        if uri is None:
            time.sleep(0.05)
            continue
        broker.uri = uri
        try:
            stage, count, got = asyncio.run(asyncio.wait_for(_probe(uri, DEEP_QUEUE),
                                                             PROBE_TIMEOUT_S))
        except TimeoutError:  # accepted the connection but too busy to answer yet
            stage, count, got = "listening", -1, False
        now = time.monotonic()
        if stage != "down":
            out.setdefault("listening_s", round(now - started, 2))
        if stage == "declared":
            out["count"] = count
            if count >= expected and got:
                out["serving_s"] = round(now - started, 2)
                return out
            if count != last_count:
                last_count, same_since = count, now
            elif now - same_since > STUCK_COUNT_S:
                return out  # the queue is back with messages missing: reported, not waited on
        time.sleep(0.05)
    return out


def queue_depth(broker: Broker, queue: str) -> int | None:
    async def depth() -> int | None:
        conn = await Connection.open(broker.uri, name="bench durability depth")
        try:
            ch = await conn.channel()
            return (await ch.queue_declare(queue, passive=True)).message_count
        finally:
            await conn.close()

    try:
        return asyncio.run(asyncio.wait_for(depth(), PROBE_TIMEOUT_S))
    except (OSError, TimeoutError, AmqpError):
        return None


def recovery_lines(broker: Broker, sizes_before: dict[Path, int]) -> list[str]:
    """What the broker itself logged about recovery since the restart (its own timings)."""
    lines = []
    for path in sorted(broker.workdir.rglob("*.log")):
        with open(path, "rb") as log:
            log.seek(sizes_before.get(path, 0))
            text = log.read().decode(errors="replace")
        lines += [sanitize(line.strip(), broker)[:240] for line in text.splitlines()
                  if "recover" in line.lower()]
    return lines[-8:]


def find_beam(broker: Broker) -> None:
    """After a restart RabbitMQ's memory is beam.smp's, a child of the start script."""
    if broker.name != "RabbitMQ":
        return
    beams = [p for p in _group_pids(broker.proc.pid) if _comm(p) == "beam.smp"]
    if beams:
        broker.pid = beams[0]


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def run_broker(name: str, args: argparse.Namespace, commands: list[str]) -> dict[str, Any]:
    """All phases against one broker; metrics by key, and failures under "errors"."""
    m: dict[str, Any] = {"errors": []}
    print(f"== starting {name}", flush=True)
    started = time.monotonic()
    broker = start_rabbitmq(args.rabbitmq_server) if name == "RabbitMQ" else start_warren()
    m["cold_start_s"] = round(time.monotonic() - started, 2)
    commands.append(describe_broker(broker))
    n, timed = args.messages, ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    log_sizes: dict[Path, int] = {}  # where the logs ended before the restart

    def phase(key: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        print(f"-- {name} {key}", flush=True)
        try:
            result = run()
        except Exception as exc:  # one failed phase is reported; the others still run
            result = {"error": f"{type(exc).__name__}: {exc}"}
        if broker.proc.poll() is not None:
            result.setdefault("error", f"{name} exited with {broker.proc.returncode}")
            result["log_tail"] = sanitize(broker.log_tail(60), broker)
        if "error" in result:
            print(f"   failed: {result['error']}", flush=True)
            m["errors"].append(f"{key}: {result['error']}")
            if "log_tail" in result:
                m["log_tail"] = result["log_tail"]
        else:
            print("   " + ", ".join(f"{k}={v}" for k, v in result.items()
                                     if not isinstance(v, dict | list)), flush=True)
        m[key] = result
        return result

    try:
        for producers in (1, 10):
            confirm = ["confirm", "--persistent", "--producers", str(producers),
                       "--confirm", "100", *timed]
            phase(f"confirm{producers}", lambda c=confirm: perf(  # type: ignore[misc]
                broker, c, commands, args.duration + args.warmup + 180))
        rss_before = rss_kib(broker.pid)
        deep = phase("deep", lambda: {**perf(broker, [
            "confirm", "--persistent", "--messages", str(n), "--confirm", "1000",
            "--queue", DEEP_QUEUE], commands, 120 + n / 1000),
            "disk_kib": disk_kib(data_dir(broker)), "rss_before_kib": rss_before})
        if "error" not in deep and broker.proc.poll() is None:
            depth = deep.get("queue_depth_at_end") or n
            commands.append(f"# restart: SIGTERM the broker, then start it with the same "
                            f"command on the same data; probe until the queue {DEEP_QUEUE} "
                            f"answers a passive declare with {depth} messages and a basic.get")

            def restart() -> dict[str, Any]:
                stop_s = terminate(broker)
                log_sizes.update({p: p.stat().st_size for p in broker.workdir.rglob("*.log")})
                launched = relaunch(broker)
                out = wait_serving(broker, launched, depth, args.restart_timeout)
                find_beam(broker)
                out.update(stop_s=round(stop_s, 2), expected=depth,
                           rss_kib=rss_kib(broker.pid))
                if "serving_s" not in out:
                    out["error"] = (f"not serving {depth} messages {args.restart_timeout:g} s "
                                    f"after the start (last count {out.get('count')})")
                return out

            restarted = phase("restart", restart)
            if "serving_s" in restarted:
                phase("drain", lambda: perf(broker, [
                    "drain", "--queue", DEEP_QUEUE, "--prefetch", "100",
                    "--multi-ack-every", "10"], commands, 120 + n / 1000))
        if args.small_messages and broker.proc.poll() is None:
            # 1 KiB a message: above WarrenMQ's index entry; RabbitMQ pages to disk at its
            # memory watermark (0.4 of RAM) and stays near it.
            need_kib = args.small_messages
            if mem_available_kib() < need_kib:
                m["small"] = {"error": f"skipped: less than {need_kib // 1024 ** 2} GiB free"}
                m["errors"].append(f"small: {m['small']['error']}")
            else:
                before = rss_kib(broker.pid) or 0

                def small() -> dict[str, Any]:
                    # Time-boxed: a broker that pages slows down a lot (RabbitMQ took
                    # ~10 minutes for 10 million here); how far it got is the result.
                    out = perf(broker, [
                        "confirm", "--messages", str(args.small_messages), "--size", "100",
                        "--producers", "2", "--confirm", "1000", "--queue", SMALL_QUEUE,
                        "--max-duration", f"{args.small_timeout:g}"],
                        commands, args.small_timeout + 150)
                    if "error" in out:  # where it got to: the depth and memory at the end
                        out["rss_at_failure_kib"] = rss_kib(broker.pid)
                        out["depth_at_failure"] = queue_depth(broker, SMALL_QUEUE)
                    elif out.get("broker_rss_end_kib") and out.get("queue_depth_at_end"):
                        out["rss_per_message_bytes"] = round(
                            (out["broker_rss_end_kib"] - before) * 1024
                            / out["queue_depth_at_end"])
                    out["rss_before_kib"] = before
                    return out

                phase("small", small)
    finally:
        if log_sizes and isinstance(m.get("restart"), dict):
            # Read at the end: RabbitMQ writes its log asynchronously, after it serves.
            m["restart"]["recovery_log"] = recovery_lines(broker, log_sizes)
        broker.stop()
    return m


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


# (label, phase, key or function of the phase's metrics, unit, higher is better)
Row = tuple[str, str, Any, str, bool]


def rows(n: int, small: int) -> list[Row]:
    def pct(p: str) -> Callable[[dict[str, Any]], Any]:
        return lambda r: (r.get("confirm_latency_ms") or {}).get(p)

    out: list[Row] = []
    for producers in (1, 10):
        k = f"confirm{producers}"
        who = f"persistent + confirms, {producers} publisher{'s' if producers > 1 else ''}"
        out += [(f"{who}: confirmed", k, "confirm_rate", "msg/s", True),
                (f"{who}: confirm p50", k, pct("p50"), "ms", False),
                (f"{who}: confirm p99", k, pct("p99"), "ms", False)]
    deep = f"deep queue, {n:,} persistent 1 KiB"
    out += [(f"{deep}: publish (confirms)", "deep", "publish_rate", "msg/s", True),
            (f"{deep}: RSS before publishing", "deep",
             lambda r: _mib(r.get("rss_before_kib")), "MiB", False),
            (f"{deep}: RSS at the end", "deep",
             lambda r: _mib(r.get("broker_rss_end_kib")), "MiB", False),
            (f"{deep}: data directory on disk", "deep",
             lambda r: _mib(r.get("disk_kib")), "MiB", False),
            (f"restart with {n:,}: SIGTERM to exit", "restart", "stop_s", "s", False),
            (f"restart with {n:,}: start to serving", "restart", "serving_s", "s", False),
            (f"restart with {n:,}: RSS once serving", "restart",
             lambda r: _mib(r.get("rss_kib")), "MiB", False),
            (f"drain {n:,} (prefetch 100, multi-ack)", "drain", "consume_rate", "msg/s", True),
            (f"drain {n:,}: peak RSS", "drain",
             lambda r: _mib(r.get("broker_rss_peak_kib")), "MiB", False),
            ("empty node: start to serving", "", "cold_start_s", "s", False)]
    if small:
        who = f"{small:,} transient 100 B in one queue"
        out += [(f"{who}: messages in the queue at the end", "small",
                 lambda r: r.get("queue_depth_at_end", r.get("depth_at_failure")), "msg", True),
                (f"{who}: publish (confirms)", "small", "publish_rate", "msg/s", True),
                (f"{who}: seconds spent publishing", "small", "elapsed_s", "s", False),
                (f"{who}: RSS at the end", "small",
                 lambda r: _mib(r.get("broker_rss_end_kib")), "MiB", False),
                (f"{who}: peak RSS", "small",
                 lambda r: _mib(r.get("broker_rss_peak_kib")), "MiB", False),
                (f"{who}: RSS per message", "small", "rss_per_message_bytes", "B", False)]
    return out


def value(metrics: dict[str, Any], row: Row) -> float | str | None:
    _, phase_key, key, _, _ = row
    source = metrics if not phase_key else metrics.get(phase_key)
    if source is None:
        return None
    got = key(source) if callable(key) else source.get(key)
    if got is None and "error" in source:
        return "failed"
    return got


def fmt(v: float | str | None, unit: str) -> str:
    if v is None or isinstance(v, str):
        return v or "n/a"
    if unit in ("ms", "s"):
        return f"{v:,.2f}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def table(results: dict[str, dict[str, Any]], n: int, small: int) -> str:
    w, r = results.get("WarrenMQ", {}), results.get("RabbitMQ", {})
    lines = ["| measurement | WarrenMQ | RabbitMQ | WarrenMQ / RabbitMQ |",
             "|---|---:|---:|---:|"]
    for row in rows(n, small):
        label, _, _, unit, higher = row
        wv, rv = value(w, row), value(r, row)
        ratio = (f"{wv / rv:.2f}" if isinstance(wv, int | float) and isinstance(rv, int | float)
                 and rv else "n/a")
        better = "" if higher else ", lower is better"
        lines.append(f"| {label} ({unit}{better}) | {fmt(wv, unit)} | {fmt(rv, unit)} "
                     f"| {ratio} |")
    return "\n".join(lines)


def failures(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, m in results.items():
        lines += [f"- {name} {e.splitlines()[0][:300]}" for e in m.get("errors", [])]
    return "\n".join(["", "Failures:", *lines]) if lines else ""


def log_sections(results: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, m in results.items():
        lines = (m.get("restart") or {}).get("recovery_log")
        if lines:
            parts.append(f"\n## {name}: what it logged about recovery after the restart\n\n"
                         "```\n" + "\n".join(lines) + "\n```\n")
        if m.get("log_tail"):
            parts.append(f"\n## {name} log tail after the failure\n\n```\n{m['log_tail']}\n```\n")
    return "".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description="WarrenMQ vs RabbitMQ durability benchmarks")
    parser.add_argument("--quick", action="store_true",
                        help="100,000 deep-queue and 1,000,000 small messages; 3 s windows")
    parser.add_argument("--messages", type=int, default=None,
                        help="deep-queue and restart messages (default 1,000,000)")
    parser.add_argument("--small-messages", type=int, default=None,
                        help="transient 100 B messages in one queue (0 = skip; "
                             "default 10,000,000)")
    parser.add_argument("--duration", type=float, default=None,
                        help="confirm measurement window, s (default 10)")
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--restart-timeout", type=float, default=300.0,
                        help="give up on a restart after this many seconds")
    parser.add_argument("--small-timeout", type=float, default=None,
                        help="stop publishing the small messages after this many seconds "
                             "(default 300; quick: 120)")
    parser.add_argument("--brokers", default="RabbitMQ,WarrenMQ",
                        help="which brokers to run, comma-separated")
    parser.add_argument("--rabbitmq-server", default=RABBITMQ_SERVER)
    parser.add_argument("--no-write", action="store_true",
                        help="print the table only; leave the results files alone")
    args = parser.parse_args()
    args.messages = args.messages or (100_000 if args.quick else 1_000_000)
    if args.small_messages is None:
        args.small_messages = 1_000_000 if args.quick else 10_000_000
    args.small_timeout = args.small_timeout or (120.0 if args.quick else 300.0)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    brokers = [b for b in args.brokers.split(",") if b]
    bad = [b for b in brokers if b not in ("RabbitMQ", "WarrenMQ")]
    if bad or args.messages < 1 or args.small_messages < 0 or args.duration <= 0:
        parser.error(f"unknown broker {bad[0]!r}" if bad else
                     "--messages must be >= 1, --small-messages >= 0, --duration > 0")

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    commands: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    for name in brokers:
        try:
            results[name] = run_broker(name, args, commands)
        except Exception as exc:  # a broker that cannot start fails all its phases
            print(f"== {name} could not run: {exc}", flush=True)
            results[name] = {"errors": [f"start: {exc}"]}
    body = table(results, args.messages, args.small_messages)
    print()
    print(body)
    print(failures(results))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.no_write:
        return 0
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    by_scenario = {name: {k: {"broker": v["broker_info"]} for k, v in m.items()
                          if isinstance(v, dict) and "broker_info" in v}
                   for name, m in results.items()}
    header = (f"Run: {stamp}, {'quick' if args.quick else 'full'} ({args.messages:,} deep-queue "
              f"messages; confirm windows {args.duration:g} s after {args.warmup:g} s warm-up). "
              f"Machine: {machine()}; load average {load_before:.1f} at the start, "
              f"{os.getloadavg()[0]:.1f} at the end; {time.monotonic() - started:.0f} s in "
              f"all. Versions: {versions(by_scenario)}.")
    flags = " ".join(a for a in sys.argv[1:])
    RESULTS.write_text(
        "# Durability benchmark results\n\n"
        f"Written by `python bench/durability.py{' ' + flags if flags else ''}`; see "
        "README.md (Durability) for what each line measures.\n\n"
        f"{header}\n\n{body}\n{failures(results)}\n{log_sections(results)}\n"
        "## Exact commands\n\n"
        "`$WORKDIR` is a fresh temporary directory per broker; `$PORT`/`$DIST_PORT` free "
        "loopback ports.\n\n```\n" + "\n".join(commands) + "\n```\n")
    replace_between(README, TABLE_START, TABLE_END, f"{header}\n\n{body}\n{failures(results)}")
    print(f"wrote {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
