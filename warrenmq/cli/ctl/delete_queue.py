"""warrenctl delete_queue [-p <vhost>] [--if-empty|-e] [--if-unused|-u] <queue>: deletes a queue,
optionally only if it is empty or unused."""

from __future__ import annotations

import argparse

from .context import Context

name = "delete_queue"
group = "Queues"
description = "Deletes a queue, optionally only if it is empty or unused"
usage = "delete_queue [-p <vhost>] [--if-empty|-e] [--if-unused|-u] <queue>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("-e", "--if-empty", action="store_true")
    p.add_argument("-u", "--if-unused", action="store_true")
    p.add_argument("queue")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Deleting queue '{args.queue}' on vhost '{args.vhost}' ...")
    result = ctx.call("delete_queue", {"vhost": args.vhost, "queue": args.queue,
                                       "if_empty": args.if_empty,
                                       "if_unused": args.if_unused})
    ctx.info(f"Queue was successfully deleted with {result['message_count']} ready messages")
    return None
