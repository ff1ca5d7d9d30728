"""warrenctl list_unresponsive_queues [-p <vhost>] [--local] [--queue-timeout <seconds>]
[<column> ...]: lists the queues that do not respond from the target node within the timeout
(columns: name, durable, auto_delete, arguments, pid, and ours: type, reason).

A replicated queue is unresponsive when no leader of its group can be reached from the node,
when its leader does not answer in time, or when its leader reaches no majority of its
voters (it could commit nothing); a classic queue when its node is not running."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_unresponsive_queues"
group = "Monitoring"
description = "Tests queues to respond within timeout. Lists those which did not respond"
usage = ("list_unresponsive_queues [-p <vhost>] [--local] [--queue-timeout <seconds>] "
         "[<column> ...]")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("--local", action="store_true",
                   help="only queues with a member (or, classic, their home) on the node")
    p.add_argument("--queue-timeout", dest="queue_timeout", type=float, default=15.0,
                   help="seconds each queue has to respond (default 15)")
    p.add_argument("columns", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Listing unresponsive queues for vhost {args.vhost} ...")
    ctx.table(ctx.call("list_unresponsive_queues", {
        "vhost": args.vhost, "columns": args.columns, "local": args.local,
        "queue_timeout": args.queue_timeout}))
    return None
