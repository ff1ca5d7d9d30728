"""warrenctl purge_queue [-p <vhost>] <queue>: removes every ready message from a queue."""

from __future__ import annotations

import argparse

from .context import Context

name = "purge_queue"
group = "Queues"
description = "Removes every ready message from a queue"
usage = "purge_queue [-p <vhost>] <queue>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("queue")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Purging queue '{args.queue}' in vhost '{args.vhost}' ...")
    ctx.call("purge_queue", {"vhost": args.vhost, "queue": args.queue})
    return None
