"""Baseline: how hard a plain pika publisher loop drives a broker, next to warren-perf.

Runs a pika BlockingConnection publisher (1 KiB messages to a fresh queue, no confirms)
for a few seconds, then `warren-perf publish` for the same time against the same broker,
and prints both rates. It shows that the load generator is not the bottleneck: it must
publish at least as fast as pika does.

    python bench/pika_baseline.py --uri amqp://guest:guest@127.0.0.1:5672/ --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time

import pika


def pika_publish(uri: str, duration_s: float, size_bytes: int) -> dict[str, float]:
    params = pika.URLParameters(uri)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    queue = f"pika-baseline-{os.getpid()}-{secrets.token_hex(4)}"
    ch.queue_declare(queue)
    body = b"\x00" * size_bytes
    sent = 0
    cpu0 = time.process_time()
    t0 = time.monotonic()
    deadline = t0 + duration_s
    try:
        while time.monotonic() < deadline:
            for _ in range(100):
                ch.basic_publish("", queue, body)
            sent += 100
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
    finally:
        ch.queue_delete(queue)
        conn.close()
    return {"publish_rate": round(sent / elapsed, 1), "client_cpu_pct": round(100 * cpu / elapsed, 1)}


def warren_perf_publish(uri: str, duration_s: float, size_bytes: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "warrenmq.cli.perf", "--uri", uri, "--json", "publish",
           "--duration", str(duration_s), "--warmup", "0", "--size", str(size_bytes)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=duration_s + 120)
    metrics = json.loads(out.stdout)["metrics"]
    return {"publish_rate": metrics["publish_rate"],
            "client_cpu_pct": metrics["client_cpu_pct"]["producers"][0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    results = {
        "pika BlockingConnection loop": pika_publish(args.uri, args.duration, args.size),
        "warren-perf publish": warren_perf_publish(args.uri, args.duration, args.size),
    }
    print("| publisher | msg/s | client CPU % |")
    print("|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['publish_rate']:,.0f} | {r['client_cpu_pct']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
