"""warrenctl cut_cluster_links: partitions this node from the rest of its cluster (fault
injection for drills and tests): its links are closed and refused until heal_cluster_links."""

from __future__ import annotations

import argparse

from .context import Context

name = "cut_cluster_links"
group = "Diagnostics"
description = ("Closes this node's links to the given cluster members (default: all) and "
               "refuses them until heal_cluster_links: a network partition, for drills")
usage = "cut_cluster_links [<node> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    result = ctx.call("cut_cluster_links", {"peers": args.nodes})
    ctx.info(f"Cut the links of node {ctx.node} to: {', '.join(result['cut']) or '(none)'}")
    return None
