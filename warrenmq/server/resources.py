"""Resource monitoring for the memory and disk alarms (RabbitMQ's vm_memory_high_watermark
and disk_free_limit): readings from /proc and statvfs, limits from the config, and the
decision whether each alarm is on. The node blocks publishers while an alarm is on; it is
never killed by its own memory use."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def total_memory_bytes() -> int:
    """Physical memory, or the cgroup limit when one is lower."""
    total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except OSError:
        total = os.sysconf("SC_PHYS_PAGES") * _PAGE
    for cg in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(cg).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < total:
            total = int(value)
    return total


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


@dataclass
class Watermarks:
    memory_relative: float | None = 0.4  # RabbitMQ's default
    memory_absolute: int | None = None
    disk_free_absolute: int = 50 * 1000 * 1000  # RabbitMQ's default, 50MB

    def memory_limit(self, total: int) -> int:
        if self.memory_absolute is not None:
            return self.memory_absolute
        return int(total * (self.memory_relative or 0.4))


def parse_size(text: str) -> int:
    """RabbitMQ's information units: 1000000, 500MB, 2GB, 1GiB, 512MiB, 10kB."""
    t = text.strip()
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2,
             "gb": 1000**3, "k": 1024, "m": 1024**2, "g": 1024**3}
    lower = t.lower()
    for suffix, factor in units.items():
        if lower.endswith(suffix):
            return int(float(t[: -len(suffix)]) * factor)
    return int(t)


class ResourceMonitor:
    def __init__(self, data_dir: Path, marks: Watermarks) -> None:
        self.data_dir = Path(data_dir)
        self.marks = marks
        self.total_memory = total_memory_bytes()
        self.memory_used = 0
        self.disk_free = 0

    @property
    def memory_limit(self) -> int:
        return self.marks.memory_limit(self.total_memory)

    def check(self) -> dict[str, bool]:
        """Take readings; the alarm state they imply."""
        self.memory_used = rss_bytes()
        try:
            self.disk_free = shutil.disk_usage(self.data_dir).free
        except OSError:
            self.disk_free = 0
        return {
            "memory": self.memory_used > self.memory_limit,
            "disk": self.disk_free < self.marks.disk_free_absolute,
        }
