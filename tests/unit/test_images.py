"""Snapshot images built in a forked child (warrenmq/server/images.py): the bytes come back
whole, the state is the one at the fork (the parent's later changes are not in it), the
loop keeps running meanwhile, and a child that fails is an error, not a short image."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from warrenmq.server.images import ImageError, build_image


async def test_the_image_is_the_state_at_the_fork_and_the_loop_runs_meanwhile() -> None:
    state = {"items": [os.urandom(1024) for _ in range(4096)]}  # 4 MiB

    def make() -> bytes:
        time.sleep(0.3)  # a slow image: the parent must not wait for it
        return b"".join(state["items"])

    want = b"".join(state["items"])
    task = asyncio.create_task(build_image(make))
    await asyncio.sleep(0)  # the fork has happened
    state["items"] = [b"changed after the fork"]
    ticks = 0
    while not task.done():
        ticks += 1
        await asyncio.sleep(0.01)
    assert await task == want
    assert ticks >= 2, "the loop was blocked while the child built the image"


async def test_a_child_that_fails_is_an_error() -> None:
    def make() -> bytes:
        raise RuntimeError("a bug in the snapshot code")

    with pytest.raises(ImageError, match="ended after 0 bytes"):
        await build_image(make)


async def test_an_empty_image_comes_back_empty() -> None:
    assert await build_image(lambda: b"") == b""
