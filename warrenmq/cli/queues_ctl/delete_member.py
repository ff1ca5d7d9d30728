"""warren-queues delete_member [-p <vhost>] <queue> <node>: removes the member (replica) of a
quorum queue on a node. A leader that is removed hands its leadership over first; the last
member cannot be removed (delete the queue instead)."""

from __future__ import annotations

import argparse

from ..ctl.context import Context

name = "delete_member"
group = "Replication"
description = "Removes a quorum queue member (replica) on the given node"
usage = "delete_member [-p <vhost>] <queue> <node>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("queue")
    p.add_argument("member_node", metavar="node")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Removing a replica of queue {args.queue} on node {args.member_node}...")
    result = ctx.call("queue_delete_member", {"vhost": args.vhost, "queue": args.queue,
                                              "node": args.member_node})
    if ctx.formatter == "json":
        ctx.document(result)
    return None
