"""Crash safety: SIGKILL a process that appends, then every record it was told is durable
is in the log, and the log holds exactly a prefix of what was appended.

SIGKILL loses the process, not the machine: unsynced data may still reach the disk from
the page cache. The test therefore checks the promise (durable means present, the log is
a whole prefix, recovery then appends correctly); power loss, which drops unsynced pages,
belongs to the simulated-disk tests.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warrenmq.store import Location

from .helpers import payload_for

CHILD = Path(__file__).with_name("wal_child.py")


def run_and_kill(directory: Path, seed: int) -> dict[int, Location]:
    """Start the child, SIGKILL it at a moment drawn from `seed`, return what it printed."""
    rng = random.Random(seed)
    kill_after_s = rng.uniform(0.05, 0.6)  # counted from the child's first durable record
    proc = subprocess.Popen([sys.executable, str(CHILD), str(directory), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output = b""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 20
            kill_at = None
            while kill_at is None or time.monotonic() < kill_at:
                assert time.monotonic() < deadline, f"child made no progress: {output[-200:]}"
                if selector.select(timeout=0.01):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    assert chunk, f"child exited early: {proc.stderr.read().decode()}"
                    output += chunk
                if kill_at is None and output.count(b"\n") >= 2:
                    kill_at = time.monotonic() + kill_after_s
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        output += proc.stdout.read()
        proc.stdout.close()
        proc.stderr.close()
    lines = output.split(b"\n")[:-1]  # the last piece is partial (or empty)
    assert lines[0] == b"ready"
    durable = {}
    for line in lines[1:]:
        index, segment_id, offset = map(int, line.split())
        durable[index] = Location(segment_id, offset)
    return durable


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_every_record_reported_durable_survives_sigkill(tmp_path, wals, seed):
    expected_count = 0
    for run in range(2):  # the second run recovers the first run's log, then appends
        durable = run_and_kill(tmp_path, seed * 10 + run)
        assert durable, "the child reported nothing durable"
        assert min(durable) >= expected_count

        wal = wals(tmp_path, segment_bytes_max=64 * 1024)
        recovered = list(wal.open())
        assert len(recovered) > max(durable)
        for index, (_, kind, payload) in enumerate(recovered):
            assert (kind, payload) == (index % 256, payload_for(index)), f"record {index}"
        by_location = {location: index for index, (location, _, _) in enumerate(recovered)}
        for index, location in durable.items():
            assert by_location.get(location) == index
            assert wal.read(location) == (index % 256, payload_for(index))
        expected_count = len(recovered)
        wal.close()
    assert len(list(wals(tmp_path, segment_bytes_max=64 * 1024).open())) == expected_count
