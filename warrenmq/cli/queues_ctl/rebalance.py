"""warren-queues rebalance <all | classic | quorum> [--vhost-pattern <pattern>]
[--queue-pattern <pattern>]: spreads the leaders of replicated queues over the running nodes
by leadership transfers (membership does not change); prints the leaders per node after."""

from __future__ import annotations

import argparse

from ...cluster.control import EX_USAGE
from ..ctl.context import Context, CtlError

name = "rebalance"
group = "Replication"
description = "Re-balances leaders of replicated queues across up-and-running cluster nodes"
usage = "rebalance < all | classic | quorum > [--vhost-pattern <pattern>] " \
    "[--queue-pattern <pattern>]"
BANNERS = {
    "all": "Re-balancing leaders of all replicated queues...",
    "classic": "Re-balancing leaders of replicated (mirrored, non-exclusive) classic queues...",
    "quorum": "Re-balancing leaders of quorum queues...",
}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("type")
    p.add_argument("--vhost-pattern", dest="vhost_pattern", default=".*")
    p.add_argument("--queue-pattern", dest="queue_pattern", default=".*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    if args.type not in BANNERS:
        raise CtlError(f"type {args.type} is not supported. Try one of all, classic, quorum.",
                       EX_USAGE)
    ctx.info(BANNERS[args.type])
    ctx.table(ctx.call("queues_rebalance", {"type": args.type,
                                            "vhost_pattern": args.vhost_pattern,
                                            "queue_pattern": args.queue_pattern}))
    return None
