"""warren-queues transfer_leadership [-p <vhost>] <queue> <node>: hands the leadership of a
replicated queue's group to its member on the node (running and in sync), by a Raft
leadership transfer: the leader brings the target up to date, then tells it to campaign."""

from __future__ import annotations

import argparse

from ..ctl.context import Context

name = "transfer_leadership"
group = "Replication"
description = "Moves the leadership of a replicated queue to its member on the given node"
usage = "transfer_leadership [-p <vhost>] <queue> <node>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("queue")
    p.add_argument("member_node", metavar="node")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Transferring leadership of queue '{args.queue}' in vhost '{args.vhost}' to "
             f"node {args.member_node} ...")
    result = ctx.call("queue_transfer_leadership", {"vhost": args.vhost, "queue": args.queue,
                                                    "node": args.member_node})
    if ctx.formatter == "json":
        ctx.document(result)
    else:
        ctx.info(f"Queue leader is now on node {result['leader']}")
    return None
