"""warrenctl stop_app: stops the app (AMQP listener, connections, queues), leaving the runtime
running."""

from __future__ import annotations

import argparse

from .context import Context

name = "stop_app"
group = "Nodes"
description = "Stops the app (AMQP listener, connections, queues), leaving the runtime running"
usage = "stop_app"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Stopping the app on node {ctx.node} ...")
    ctx.call("stop_app")
    return None
