"""A peer in its own process, for the tests that stop it with SIGSTOP: a ControlServer on an
ephemeral loopback port with PeerLinks plugged in, serving "echo" requests and counting
"blob" messages. It prints `PORT <n>` once it listens, and exits when its stdin closes
(so it never outlives the test that started it).

    python peer_process.py NAME NODE_ID COOKIE
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from warrenmq.cluster.control import CommandError, ControlServer
from warrenmq.cluster.links import PeerLinks


async def _no_commands(cmd: str, args: dict) -> Any:
    raise CommandError(f"no control command here ({cmd})")


async def main(name: str, node_id: int, cookie: str) -> None:
    links = PeerLinks(name, node_id, cookie, ping_interval_s=0.2, dead_after_s=30.0)
    blobs = 0

    def blob(_from: str, payload: Any) -> None:
        nonlocal blobs
        blobs += 1

    async def echo(_from: str, payload: Any) -> Any:
        return {"echo": payload, "blobs": blobs}

    links.on("blob", blob)
    links.on_request("echo", echo)
    server = ControlServer(name, cookie, _no_commands)
    port = await server.start("127.0.0.1", 0)
    server.link_handler = links.accept
    await links.start()
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    # stdin closing (the test ended, or died) is the signal to exit.
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    await links.stop()
    await server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
