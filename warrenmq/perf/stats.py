"""Numbers: percentiles of latency samples, and a broker's RSS and CPU time from /proc."""

from __future__ import annotations

import os


def percentiles(samples_us: list[int], points: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (plus min/max/count) of microsecond samples, in ms."""
    if not samples_us:
        return {"count": 0}
    ordered = sorted(samples_us)
    n = len(ordered)
    out: dict[str, float] = {"count": n, "min": ordered[0] / 1000.0}
    for p in points:
        rank = max(1, -(-int(p * n) // 100))  # ceil(p * n / 100), at least 1
        out[f"p{p:g}"] = ordered[min(rank, n) - 1] / 1000.0
    out["max"] = ordered[-1] / 1000.0
    return out


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far, or None when unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may hold spaces: fields are counted after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
