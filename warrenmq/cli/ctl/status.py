"""warrenctl status: displays the status of the node: runtime, listeners, files, alarms, totals."""

from __future__ import annotations

import argparse

from .context import Context, show_status

name = "status"
group = "Nodes"
description = "Displays the status of the node: runtime, listeners, files, alarms, totals"
usage = "status"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Status of node {ctx.node} ...")
    result = ctx.call("status")
    if ctx.formatter == "json":
        ctx.document(result)
        return None
    show_status(ctx, result)
    return None
