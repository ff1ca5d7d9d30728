"""warren-queues check_if_node_is_quorum_critical: a health check run before stopping a node.
It fails (exit 69, one line per queue on stderr) if some replicated queue with a voting
member on the target node would lose its majority were the node stopped; queues that have
lost it already are listed too."""

from __future__ import annotations

import argparse
import json
import sys

from ...cluster.control import EX_UNAVAILABLE
from ..ctl.context import Context

name = "check_if_node_is_quorum_critical"
group = "Health checks"
description = "Health check that exits with a non-zero code if there are queues with " \
    "minimum online quorum (queues that would lose their quorum if the target node is shut " \
    "down)"
usage = "check_if_node_is_quorum_critical"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Checking if node {ctx.node} is critical for quorum of any quorum queues ...")
    queues = ctx.call("queues_quorum_critical")["queues"]
    if ctx.formatter == "json":
        doc = {"result": "ok"} if not queues else {
            "result": "error", "queues": queues,
            "message": f"Node {ctx.node} reported local queues with minimum online quorum"}
        ctx.print(json.dumps(doc, separators=(",", ":")))
        return EX_UNAVAILABLE if queues else None
    if not queues:
        ctx.info(f"Node {ctx.node} reported no quorum queues with minimum quorum")
        return None
    print("Error:", file=sys.stderr)
    for q in queues:
        print(f"{q['readable_name']} would lose quorum if node {ctx.node} is stopped",
              file=sys.stderr)
    return EX_UNAVAILABLE
