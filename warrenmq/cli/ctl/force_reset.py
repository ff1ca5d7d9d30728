"""warrenctl force_reset: resets the node even when no other cluster member is reachable."""

from __future__ import annotations

import argparse

from .context import Context

name = "force_reset"
group = "Nodes"
description = ("Forcefully returns a node to its virgin state, even if the other members of its "
               "cluster cannot be told")
usage = "force_reset"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Forcefully resetting node {ctx.node} ...")
    result = ctx.call("force_reset") or {}
    if result.get("note"):
        ctx.info(result["note"])
    return None
