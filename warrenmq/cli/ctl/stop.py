"""warrenctl stop: stops the node: the app, then its runtime; waits until the process has exited."""

from __future__ import annotations

import argparse

from .context import Context, wait_until_down

name = "stop"
group = "Nodes"
description = "Stops the node: the app, then its runtime; waits until the process has exited"
usage = "stop"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Stopping and halting node {ctx.node} ...")
    ctx.call("stop")
    ctx.close()
    wait_until_down(ctx)
    return None
