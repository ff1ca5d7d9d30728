"""Benchmark WarrenMQ against RabbitMQ on this machine, one broker at a time.

Starts a private RabbitMQ node, runs every scenario of `warren-perf` against it, stops
it; then the same with a WarrenMQ node. Prints a markdown table (WarrenMQ vs RabbitMQ and
the ratio), writes it with the machine, versions and exact commands to bench/results.md
and refreshes the table in bench/README.md. Numbers only: nothing here asserts a timing.

    python bench/run.py            # 10 s windows after a 2 s warm-up
    python bench/run.py --quick    # 3 s windows after a 1 s warm-up
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from brokers import (  # noqa: E402
    RABBITMQ_SERVER,
    Broker,
    replace_between,
    start_rabbitmq,
    start_warren,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.md"
README = HERE / "README.md"
TABLE_START, TABLE_END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Metric:
    key: str  # dotted path into the scenario's metrics
    label: str
    unit: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Scenario:
    name: str
    args: tuple[str, ...]
    metrics: tuple[Metric, ...]
    timed: bool = True  # takes --duration/--warmup


SCENARIOS = (
    # First, on a fresh broker: its baseline RSS is not still shrinking from earlier runs.
    Scenario("idle-connections", ("idle-connections", "--connections", "1000"), (
        Metric("rss_per_connection_kib", "RSS per connection", "KiB", False),
        Metric("open_rate", "connections opened", "conn/s")), timed=False),
    Scenario("publish", ("publish",), (Metric("publish_rate", "publish", "msg/s"),)),
    Scenario("confirm", ("confirm", "--confirm", "100"), (
        Metric("confirm_rate", "confirmed", "msg/s"),
        Metric("confirm_latency_ms.p99", "confirm p99", "ms", False))),
    Scenario("confirm-persistent", ("confirm", "--confirm", "100", "--persistent"), (
        Metric("confirm_rate", "confirmed", "msg/s"),
        Metric("confirm_latency_ms.p99", "confirm p99", "ms", False))),
    Scenario("throughput", ("throughput", "--prefetch", "100", "--multi-ack-every", "10"), (
        Metric("publish_rate", "publish", "msg/s"),
        Metric("consume_rate", "consume", "msg/s"))),
    Scenario("latency", ("latency", "--rate", "1000"), (
        Metric("latency_ms.p50", "p50", "ms", False),
        Metric("latency_ms.p95", "p95", "ms", False),
        Metric("latency_ms.p99", "p99", "ms", False),
        Metric("latency_ms.max", "max", "ms", False))),
    Scenario("fanout", ("fanout", "--queues", "10"), (
        Metric("publish_rate", "publish", "msg/s"),
        Metric("delivery_rate", "deliveries (all queues)", "msg/s"))),
)


def dig(metrics: dict[str, Any], dotted: str) -> float | None:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, int | float) else None


def perf_command(scenario: Scenario, broker: Broker, duration_s: float, warmup_s: float,
                 hold_s: float) -> list[str]:
    cmd = [sys.executable, "-m", "warrenmq.cli.perf", "--uri", broker.uri, "--json",
           "--broker-pid", str(broker.pid), *scenario.args]
    if scenario.timed:
        cmd += ["--duration", str(duration_s), "--warmup", str(warmup_s)]
    else:
        cmd += ["--hold", str(hold_s)]
    return cmd


def run_scenario(cmd: list[str], timeout_s: float) -> dict[str, Any]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f}s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip() or out.stdout.strip())[-800:]}
    return json.loads(out.stdout)


def run_broker(name: str, scenarios: list[Scenario], args: argparse.Namespace,
               commands: list[str]) -> dict[str, dict[str, Any]]:
    print(f"== starting {name}", flush=True)
    broker = start_rabbitmq(args.rabbitmq_server) if name == "RabbitMQ" else start_warren()
    commands.append(describe_broker(broker))
    results: dict[str, dict[str, Any]] = {}
    try:
        for scenario in scenarios:
            cmd = perf_command(scenario, broker, args.duration, args.warmup, args.hold)
            commands.append(sanitize(shlex.join(cmd), broker))
            print(f"-- {name} {scenario.name}", flush=True)
            result = run_scenario(cmd, timeout_s=args.duration + args.warmup + 180)
            if "error" in result:
                print(f"   failed: {result['error']}", flush=True)
            else:
                summary = {m.label: dig(result["metrics"], m.key) for m in scenario.metrics}
                print(f"   {summary}", flush=True)
            results[scenario.name] = result
            if broker.proc.poll() is not None:
                print(f"   {name} exited with {broker.proc.returncode}; log tail:\n"
                      f"{broker.log_tail()}", flush=True)
                break
    finally:
        broker.stop()
    return results


def sanitize(text: str, broker: Broker) -> str:
    """Commands as a reader would type them: no temporary paths, no interpreter path."""
    text = text.replace(str(broker.workdir), "$WORKDIR").replace(sys.executable, "python")
    for key, name in (("RABBITMQ_NODE_PORT", "$PORT"), ("RABBITMQ_DIST_PORT", "$DIST_PORT")):
        if key in broker.env:
            text = text.replace(f"{key}={broker.env[key]}", f"{key}={name}")
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:$PORT", text).replace(
        f"--broker-pid {broker.pid}", "--broker-pid $BROKER_PID")


def describe_broker(broker: Broker) -> str:
    if broker.name == "RabbitMQ":
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in broker.env.items())
        conf = "listeners.tcp.default = 127.0.0.1:$PORT; loopback_users = none"
        return sanitize(f"# RabbitMQ ({conf}; BROKER_PID = beam.smp)\n"
                        f"{env} {shlex.join(broker.command)}", broker)
    return sanitize(f"# WarrenMQ (BROKER_PID = the server process)\n"
                    f"{shlex.join(broker.command)}", broker)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("ms",):
        return f"{value:.2f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def table(scenarios: list[Scenario], warren: dict[str, Any], rabbit: dict[str, Any]) -> str:
    rows = ["| scenario | metric | WarrenMQ | RabbitMQ | WarrenMQ / RabbitMQ |",
            "|---|---|---:|---:|---:|"]
    for scenario in scenarios:
        w, r = warren.get(scenario.name, {}), rabbit.get(scenario.name, {})
        for metric in scenario.metrics:
            wv = None if "error" in w or not w else dig(w["metrics"], metric.key)
            rv = None if "error" in r or not r else dig(r["metrics"], metric.key)
            ratio = f"{wv / rv:.2f}" if wv is not None and rv else "n/a"
            better = "" if metric.higher_is_better else ", lower is better"
            ws = "failed" if "error" in w else fmt(wv, metric.unit)
            rs = "failed" if "error" in r else fmt(rv, metric.unit)
            rows.append(f"| {scenario.name} | {metric.label} ({metric.unit}{better}) "
                        f"| {ws} | {rs} | {ratio} |")
    rows += ["", "| scenario | broker CPU % W / R | broker peak RSS MiB W / R |",
             "|---|---:|---:|"]
    for scenario in scenarios:
        if not scenario.timed:
            continue
        w = warren.get(scenario.name, {}).get("metrics", {})
        r = rabbit.get(scenario.name, {}).get("metrics", {})

        def mib(m: dict[str, Any]) -> str:
            v = m.get("broker_rss_peak_kib")
            return f"{v / 1024:,.0f}" if v else "n/a"

        rows.append(f"| {scenario.name} | {w.get('broker_cpu_pct', 'n/a')} / "
                    f"{r.get('broker_cpu_pct', 'n/a')} | {mib(w)} / {mib(r)} |")
    return "\n".join(rows)


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kib = 0
    return (f"{os.cpu_count()} cores, {model}, {mem_kib / 1024 / 1024:.0f} GiB RAM, "
            f"Linux {platform.release()}")


def versions(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    brokers = []
    for name, per_scenario in results.items():
        info: dict[str, str] = next(
            (r["broker"] for r in per_scenario.values() if "broker" in r), {})
        brokers.append(f"{name} {info.get('version', '?')} ({info.get('platform', '?')})")
    return (f"{'; '.join(brokers)}; Python {platform.python_version()}; "
            f"warrenmq {pkg('warrenmq')}, pamqp {pkg('pamqp')}, uvloop {pkg('uvloop')}")


def errors_section(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for name, per_scenario in results.items():
        for scenario, result in per_scenario.items():
            if "error" in result:
                lines.append(f"- {name} {scenario}: `{result['error'].splitlines()[-1][:300]}`")
    return "\n".join(["", "Failures:", *lines]) if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description="WarrenMQ vs RabbitMQ benchmarks")
    parser.add_argument("--quick", action="store_true", help="3 s windows, 1 s warm-up")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--hold", type=float, default=None,
                        help="idle-connections hold time in seconds")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--brokers", default="RabbitMQ,WarrenMQ",
                        help="which brokers to run, comma-separated")
    parser.add_argument("--rabbitmq-server", default=RABBITMQ_SERVER)
    parser.add_argument("--no-write", action="store_true",
                        help="print the table only; leave results.md and README.md alone")
    args = parser.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.hold = args.hold or (2.0 if args.quick else 5.0)
    wanted = {s for s in args.only.split(",") if s}
    scenarios = [s for s in SCENARIOS if not wanted or s.name in wanted]

    commands: list[str] = []
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in [b for b in args.brokers.split(",") if b]:
        try:
            results[name] = run_broker(name, scenarios, args, commands)
        except Exception as exc:  # a broker that cannot start fails all its scenarios
            print(f"== {name} could not run: {exc}", flush=True)
            results[name] = {s.name: {"error": f"broker did not start: {exc}"}
                             for s in scenarios}
    body = table(scenarios, results.get("WarrenMQ", {}), results.get("RabbitMQ", {}))
    print()
    print(body)
    print(errors_section(results))
    if args.no_write:
        return 0
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick" if args.quick else "full"
    header = (f"Run: {stamp}, {mode} ({args.duration:g} s window after {args.warmup:g} s "
              f"warm-up). Machine: {machine()}. Versions: {versions(results)}.")
    RESULTS.write_text(
        "# Benchmark results\n\n"
        "Written by `python bench/run.py"
        f"{' --quick' if args.quick else ''}`; see README.md for what each scenario "
        "measures.\n\n"
        f"{header}\n\n{body}\n{errors_section(results)}\n\n"
        "## Exact commands\n\n"
        "`$WORKDIR` is a fresh temporary directory per broker; `$PORT`/`$DIST_PORT` free "
        "loopback ports.\n\n```\n" + "\n".join(commands) + "\n```\n")
    replace_between(README, TABLE_START, TABLE_END,
                    f"{header}\n\n{body}\n{errors_section(results)}")
    print(f"\nwrote {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
