"""warrenctl reset: returns a node whose app is stopped to its virgin state: no users, vhosts,
queues or messages beyond the defaults."""

from __future__ import annotations

import argparse

from .context import Context

name = "reset"
group = "Nodes"
description = (
    "Returns a node whose app is stopped to its virgin state: no users, vhosts, queues or "
    "messages beyond the defaults"
)
usage = "reset"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Resetting node {ctx.node} ...")
    result = ctx.call("reset") or {}
    if result.get("note"):
        ctx.info(result["note"])  # how a clustered node left its cluster
    return None
