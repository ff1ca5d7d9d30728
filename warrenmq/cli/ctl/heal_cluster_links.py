"""warrenctl heal_cluster_links: ends a partition made by cut_cluster_links."""

from __future__ import annotations

import argparse

from .context import Context

name = "heal_cluster_links"
group = "Diagnostics"
description = "Lets this node link to its cluster members again after cut_cluster_links"
usage = "heal_cluster_links"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    result = ctx.call("heal_cluster_links")
    ctx.info(f"Healed the links of node {ctx.node} to: "
             f"{', '.join(result['healed']) or '(none)'}")
    return None
