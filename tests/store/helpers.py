"""Helpers shared by the store tests: deterministic payloads and WAL shortcuts."""

from __future__ import annotations

import asyncio
import random

from warrenmq.store import WAL, WALError


def payload_for(index: int, size_max: int = 2000) -> bytes:
    """The payload of record `index`: its index, then bytes drawn from a seed of `index`."""
    rng = random.Random(index)
    return index.to_bytes(8, "big") + rng.randbytes(rng.randint(0, size_max))


def close_quietly(wal: WAL) -> None:
    try:
        wal.close()
    except WALError:
        pass


def record_bytes(payload: bytes) -> int:
    return 9 + len(payload)


async def wait_until(predicate, timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` on the event loop until it is true or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.002)
