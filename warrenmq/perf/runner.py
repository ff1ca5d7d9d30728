"""Run producer and consumer workers as separate OS processes on one shared clock.

Why processes: one Python process can parse or build only so many frames per second,
and the number measured must be the broker's limit. Every worker connects first, then
waits on a barrier; the parent then fixes the start time (a little in the future) and
releases them. While they run, the parent samples the broker's CPU time and RSS (when
its pid is known) at the window's boundaries; in count mode, where the run ends when the
workers are done, from the start until the last worker reports.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue as queue_mod
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from . import stats
from .workers import ConsumerSpec, ProducerSpec, Window, consume, produce

CONNECT_TIMEOUT_S = 60.0
START_DELAY_S = 0.1


@dataclass
class RunResult:
    producers: list[dict[str, Any]] = field(default_factory=list)
    consumers: list[dict[str, Any]] = field(default_factory=list)
    broker: dict[str, Any] = field(default_factory=dict)


def install_event_loop_policy() -> str:
    """Use uvloop when it is installed; return the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _worker_main(kind: str, spec: Any, barrier: Any, go: Any, start: Any,
                 warmup_s: float, duration_s: float, results: Any) -> None:
    install_event_loop_policy()

    async def window_of() -> Window:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, barrier.wait, CONNECT_TIMEOUT_S)
        if not await loop.run_in_executor(None, go.wait, CONNECT_TIMEOUT_S):
            raise TimeoutError("no start signal from the parent")
        t0 = start.value
        return Window(t0, t0 + warmup_s, t0 + warmup_s + duration_s)

    body = produce if kind == "producer" else consume
    try:
        result = asyncio.run(body(spec, window_of))
    except BaseException as exc:  # reported to the parent, which fails the run
        barrier.abort()
        result = {"role": kind, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    results.put(result)


def run_workers(producers: list[ProducerSpec], consumers: list[ConsumerSpec],
                warmup_s: float, duration_s: float, broker_pid: int | None = None,
                count_mode: bool = False) -> RunResult:
    ctx = mp.get_context("spawn")
    total = len(producers) + len(consumers)
    barrier = ctx.Barrier(total + 1)
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    results = ctx.Queue()
    procs = []
    for kind, specs in (("consumer", consumers), ("producer", producers)):
        for spec in specs:
            proc = ctx.Process(target=_worker_main, daemon=True, args=(
                kind, spec, barrier, go, start, warmup_s, duration_s, results))
            proc.start()
            procs.append(proc)
    out = RunResult()
    try:
        try:
            barrier.wait(CONNECT_TIMEOUT_S)
        except Exception:
            pass  # a worker failed to connect: its error arrives on `results`
        t0 = time.monotonic() + START_DELAY_S
        start.value = t0
        go.set()
        if broker_pid and not count_mode:
            out.broker = _sample_broker(broker_pid, t0 + warmup_s, t0 + warmup_s + duration_s)
        sampling: _Sampling | None = None
        if broker_pid and count_mode:
            sampling = _Sampling(broker_pid)
        limit_s = warmup_s + duration_s + 60.0
        deadline = t0 + (min(limit_s, 3600.0) if count_mode else limit_s)
        gathered: list[dict[str, Any]] = []
        try:
            while len(gathered) < total:
                try:
                    gathered.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
                except queue_mod.Empty:
                    raise TimeoutError("workers did not report in time") from None
                if "error" in gathered[-1]:
                    raise RuntimeError(
                        f"{gathered[-1]['role']} failed: {gathered[-1]['error']}\n"
                        f"{gathered[-1].get('traceback', '')}")
        finally:
            if sampling is not None:
                out.broker = sampling.stop()
        for result in gathered:
            (out.producers if result["role"] == "producer" else out.consumers).append(result)
        return out
    finally:
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)


def _sample_broker(pid: int, window_start: float, window_end: float) -> dict[str, Any]:
    """Broker CPU use over the window and its peak RSS (sampled every 0.2 s)."""
    rss_peak = stats.rss_kib(pid) or 0
    cpu_start = None
    while time.monotonic() < window_end:
        now = time.monotonic()
        if cpu_start is None and now >= window_start:
            cpu_start = stats.cpu_seconds(pid)
        rss_peak = max(rss_peak, stats.rss_kib(pid) or 0)
        next_tick = window_start if cpu_start is None else window_end
        time.sleep(max(0.0, min(0.2, next_tick - now)))
    cpu_end = stats.cpu_seconds(pid)
    sample: dict[str, Any] = {"rss_peak_kib": rss_peak}
    if cpu_start is not None and cpu_end is not None:
        sample["cpu_pct"] = round(100.0 * (cpu_end - cpu_start) / (window_end - window_start), 1)
    return sample


class _Sampling:
    """Count mode: the broker's peak RSS and CPU use from now until stopped, sampled every
    0.2 s by a thread while the parent waits for its workers."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = time.monotonic()
        self.rss_peak_kib = stats.rss_kib(pid) or 0
        self.cpu_start = stats.cpu_seconds(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            self.rss_peak_kib = max(self.rss_peak_kib, stats.rss_kib(self.pid) or 0)

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self._thread.join(5.0)
        end = time.monotonic()
        rss = stats.rss_kib(self.pid)
        self.rss_peak_kib = max(self.rss_peak_kib, rss or 0)
        sample: dict[str, Any] = {"rss_peak_kib": self.rss_peak_kib, "rss_end_kib": rss}
        cpu_end = stats.cpu_seconds(self.pid)
        if self.cpu_start is not None and cpu_end is not None and end > self.start:
            sample["cpu_pct"] = round(100.0 * (cpu_end - self.cpu_start) / (end - self.start), 1)
        return sample
