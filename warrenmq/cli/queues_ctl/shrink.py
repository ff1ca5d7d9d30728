"""warren-queues shrink <node> [--errors-only]: removes the members (replicas) on the node of
every quorum queue; a queue whose only member is there keeps it (an error row). One row per
queue: vhost, name, size, result."""

from __future__ import annotations

import argparse

from ..ctl.context import Context

name = "shrink"
group = "Replication"
description = "Shrinks quorum queue clusters by removing any members (replicas) on the " \
    "given node"
usage = "shrink <node> [--errors-only]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("member_node", metavar="node")
    p.add_argument("--errors-only", dest="errors_only", action="store_true")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Shrinking quorum queues on {args.member_node}...")
    ctx.table(ctx.call("queues_shrink", {"node": args.member_node,
                                         "errors_only": args.errors_only}))
    return None
