"""warren-queues add_member [-p <vhost>] <queue> <node>: adds a member (replica) of a quorum
queue on a node of the cluster; it catches up from the leader while the queue serves."""

from __future__ import annotations

import argparse

from ..ctl.context import Context

name = "add_member"
group = "Replication"
description = "Adds a quorum queue member (replica) on the given node"
usage = "add_member [-p <vhost>] <queue> <node>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("queue")
    p.add_argument("member_node", metavar="node")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Adding a member for queue {args.queue} on node {args.member_node}...")
    result = ctx.call("queue_add_member", {"vhost": args.vhost, "queue": args.queue,
                                           "node": args.member_node})
    if ctx.formatter == "json":
        ctx.document(result)
    return None
