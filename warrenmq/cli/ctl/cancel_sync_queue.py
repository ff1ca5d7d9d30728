"""warrenctl cancel_sync_queue [-p <vhost>] <queue>: stops synchronising the members of a
classic queue mirrored with `ha-sync-mode: manual` that are still catching up: they leave
the queue's Raft group and stay recorded, not synchronised, until the next sync_queue."""

from __future__ import annotations

import argparse

from .context import Context

name = "cancel_sync_queue"
group = "Queues"
description = "Instructs a synchronising mirrored queue to stop synchronising itself"
usage = "cancel_sync_queue [-p <vhost>] <queue>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("queue")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Stopping synchronising queue '{args.queue}' in vhost '{args.vhost}' ...")
    result = ctx.call("cancel_sync_queue", {"vhost": args.vhost, "queue": args.queue})
    if ctx.formatter == "json":
        ctx.document(result)
    return None
