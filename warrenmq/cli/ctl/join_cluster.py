"""warrenctl join_cluster: makes the node (its app stopped) a member of another node's cluster.

As with rabbitmqctl, the node is reset first: it starts from a virgin state and takes the
cluster's metadata. Each failure (host that does not resolve, closed port, cookie mismatch,
version mismatch, a node already in another cluster) is explained in one line with the fix."""

from __future__ import annotations

import argparse

from .context import Context

name = "join_cluster"
group = "Cluster"
description = "Instructs the node to become a member of the cluster the given node is in"
usage = "join_cluster [--disc|--ram] <existing_cluster_member>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("existing_cluster_member")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--disc", action="store_true", help="a disk node (the only kind)")
    kind.add_argument("--ram", action="store_true",
                      help="accepted for compatibility: every node keeps metadata on disk")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Clustering node {ctx.node} with {args.existing_cluster_member}")
    result = ctx.call("join_cluster", {"node": args.existing_cluster_member})
    if ctx.formatter == "json":
        ctx.document(result)
    return None
