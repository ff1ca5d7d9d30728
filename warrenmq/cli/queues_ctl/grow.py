"""warren-queues grow <node> <all | even> [--vhost-pattern <pattern>] [--queue-pattern
<pattern>] [--errors-only]: adds a member on the node to every matching quorum queue that has
none there (`even`: only to those with an even number of members). One row per queue:
vhost, name, size, result."""

from __future__ import annotations

import argparse

from ..ctl.context import Context

name = "grow"
group = "Replication"
description = "Grows quorum queue clusters by adding a member (replica) on the specified " \
    "node for all matching queues"
usage = ("grow <node> <all | even> [--vhost-pattern <pattern>] [--queue-pattern <pattern>] "
         "[--errors-only]")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("member_node", metavar="node")
    p.add_argument("strategy", choices=("all", "even"))
    p.add_argument("--vhost-pattern", dest="vhost_pattern", default=".*")
    p.add_argument("--queue-pattern", dest="queue_pattern", default=".*")
    p.add_argument("--errors-only", dest="errors_only", action="store_true")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Growing {args.strategy} quorum queues on {args.member_node}...")
    ctx.table(ctx.call("queues_grow", {
        "node": args.member_node, "strategy": args.strategy,
        "vhost_pattern": args.vhost_pattern, "queue_pattern": args.queue_pattern,
        "errors_only": args.errors_only}))
    return None
