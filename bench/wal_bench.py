"""Benchmark the write-ahead log's group commit on this machine's disk.

N appenders (coroutines on one event loop) each append a 1 KiB record and wait until it
is durable, over and over, for a fixed window. Prints, for N = 1, 10 and 100, durable
records/s, fdatasyncs/s and records per fsync (the batch size group commit reached).
Numbers only: nothing here asserts a timing.

    python bench/wal_bench.py                      # 3 s per run, in a temporary directory
    python bench/wal_bench.py --duration 10 --dir DIR --appenders 1,10,100,1000
    python bench/wal_bench.py --no-sync            # no fdatasync: the writer's CPU cost
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from warrenmq.store import WAL  # noqa: E402

RECORD_BYTES = 1024


async def run(directory: Path, appenders: int, duration_s: float, sync: bool) -> dict:
    wal = WAL(directory, sync=sync)
    list(wal.open())
    payload = os.urandom(RECORD_BYTES)
    durable = 0
    stop_at = time.monotonic() + duration_s

    async def appender() -> None:
        nonlocal durable
        while time.monotonic() < stop_at:
            wal.append(1, payload)
            await wal.wait_durable()
            durable += 1

    started = time.monotonic()
    cpu_started = time.process_time()
    fsyncs_started = wal.stats.fsyncs
    await asyncio.gather(*(appender() for _ in range(appenders)))
    elapsed_s = time.monotonic() - started
    cpu_s = time.process_time() - cpu_started
    fsyncs = wal.stats.fsyncs - fsyncs_started
    batches = wal.stats.batches
    wal.close()
    return {
        "appenders": appenders,
        "records_per_s": durable / elapsed_s,
        "fsyncs_per_s": fsyncs / elapsed_s,
        "records_per_batch": durable / max(batches, 1),
        "cpu_percent": 100 * cpu_s / elapsed_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--appenders", default="1,10,100",
                        help="comma-separated numbers of concurrent appenders")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory on the disk to measure (default: a temporary one)")
    parser.add_argument("--no-sync", action="store_true", help="skip fdatasync (sync=False)")
    args = parser.parse_args()
    try:
        counts = [int(n) for n in args.appenders.split(",")]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--appenders must be positive integers separated by commas, "
                     f"got {args.appenders!r}")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    try:
        import uvloop  # the broker runs on uvloop when it is installed

        uvloop.install()
    except ImportError:
        pass
    base = Path(tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir))
    try:
        print(f"{RECORD_BYTES} B records, {args.duration:g} s per run, "
              f"sync={'off' if args.no_sync else 'fdatasync'}, Python {sys.version.split()[0]}")
        print()
        print("| appenders | records/s | fsyncs/s | records/batch | CPU % |")
        print("|---:|---:|---:|---:|---:|")
        for count in counts:
            directory = base / f"appenders-{count}"
            result = asyncio.run(run(directory, count, args.duration, not args.no_sync))
            shutil.rmtree(directory)
            print(f"| {count} | {result['records_per_s']:,.0f} | {result['fsyncs_per_s']:,.0f} "
                  f"| {result['records_per_batch']:,.1f} | {result['cpu_percent']:.0f} |",
                  flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
