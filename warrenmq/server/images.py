"""Snapshot images of deep replicated queues, built off the event loop in a forked child.

Theory of operation. A replicated queue's snapshot holds its machine state and every live
body: for a queue of 300,000 messages that is over a second of Python work (the machine's
image, then msgpack), and done on the event loop it silences the node for longer than the
failure detector's timeout, so that its peers suspect it and its groups lose their leaders
(seen in the benchmark's deep-queue phases). So a big image is built the way Redis saves
in the background: `os.fork()` gives a child the process's memory as it was at that instant
(copy on write), the child builds the image there and writes it into a pipe, and the loop
only waits for the bytes (read by a worker thread). The caller reads the group's applied
index with no await between it and the fork, so image and index agree (`RaftHost.compact`
takes the index). Small images are built inline: a fork costs more than they do.

The child touches nothing but the queue's state and the pipe: no event loop, no logging,
no locks another thread may have held at the fork; it ends with `os._exit`, and dies with
its parent (PR_SET_PDEATHSIG) so that a killed node leaves no child holding its sockets.
The image travels with its length in front, so a child that died half way is told from a
whole image whatever its exit status says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import sys
from collections.abc import Callable

FORK_ABOVE_BYTES = 16 * 1024 * 1024  # images lighter than this are built inline
_LEN = struct.Struct(">Q")
_PR_SET_PDEATHSIG = 1


class ImageError(RuntimeError):
    """The child building an image failed (or was killed) before it was whole."""


async def build_image(make: Callable[[], bytes]) -> bytes:
    """`make()`, run in a forked child; its bytes, read off the loop."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(r)
            _die_with_parent()
            data = make()
            _write_all(w, _LEN.pack(len(data)))
            _write_all(w, data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        raw = await loop.run_in_executor(None, _read_all, r)
    finally:
        os.close(r)
        await loop.run_in_executor(None, _reap, pid)
    if len(raw) < _LEN.size or _LEN.unpack_from(raw)[0] != len(raw) - _LEN.size:
        raise ImageError(f"the child building a snapshot image ended after {len(raw)} bytes")
    return raw[_LEN.size:]


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # reaped by someone else: the length says
        os.waitpid(pid, 0)
