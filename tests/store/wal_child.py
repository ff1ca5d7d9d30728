"""A process that appends to a WAL until it is killed (run by test_crash.py).

    python wal_child.py DIRECTORY SEED

It recovers the log, then appends record after record (payload_for(index), numbered on
from what it recovered) from several coroutines, and after each record is reported durable
prints `INDEX SEGMENT OFFSET` on its own line. The test SIGKILLs it at a random moment and
checks that every printed record survived.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.store.helpers import payload_for  # noqa: E402
from warrenmq.store import WAL  # noqa: E402

APPENDERS = 8
SEGMENT_BYTES_MAX = 64 * 1024


async def main(directory: Path, seed: int) -> None:
    wal = WAL(directory, segment_bytes_max=SEGMENT_BYTES_MAX)
    next_index = sum(1 for _ in wal.open())
    rng = random.Random(seed)
    print("ready", flush=True)

    async def appender() -> None:
        nonlocal next_index
        while True:
            index, next_index = next_index, next_index + 1
            location = wal.append(index % 256, payload_for(index))
            await wal.wait_durable()
            sys.stdout.write(f"{index} {location.segment_id} {location.offset}\n")
            sys.stdout.flush()
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    await asyncio.gather(*(appender() for _ in range(APPENDERS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
