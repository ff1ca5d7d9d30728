"""warrenctl sync_queue [-p <vhost>] <queue>: synchronises the members of a classic queue
mirrored with `ha-sync-mode: manual`: members recorded but not yet in the queue's Raft group
join it and catch up from the leader in the background, while the queue keeps serving.
Returns once they are in sync, or after a while with those still catching up named."""

from __future__ import annotations

import argparse

from .context import Context

name = "sync_queue"
group = "Queues"
description = "Instructs a mirrored queue with unsynchronised mirrors (follower replicas) to "\
    "synchronise them"
usage = "sync_queue [-p <vhost>] <queue>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("queue")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Synchronising queue '{args.queue}' in vhost '{args.vhost}' ...")
    result = ctx.call("sync_queue", {"vhost": args.vhost, "queue": args.queue})
    if ctx.formatter == "json":
        ctx.document(result)
    elif result.get("catching_up"):
        ctx.info(f"Still catching up (the queue serves meanwhile): "
                 f"{', '.join(result['catching_up'])}")
    return None
