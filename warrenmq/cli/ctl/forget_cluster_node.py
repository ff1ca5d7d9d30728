"""warrenctl forget_cluster_node: removes a stopped node from the cluster, run on a member."""

from __future__ import annotations

import argparse

from .context import Context

name = "forget_cluster_node"
group = "Cluster"
description = "Removes a node from the cluster (the node must not be running)"
usage = "forget_cluster_node [--offline] <existing_cluster_member_to_remove>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("node_to_remove")
    p.add_argument("--offline", action="store_true",
                   help="accepted for compatibility: the command runs on a running member")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Removing node {args.node_to_remove} from the cluster")
    ctx.call("forget_cluster_node", {"node": args.node_to_remove})
    return None
