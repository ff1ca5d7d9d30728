"""warrenctl environment: displays the node's effective configuration."""

from __future__ import annotations

import argparse

from .context import Context

name = "environment"
group = "Nodes"
description = "Displays the node's effective configuration"
usage = "environment"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Application environment of node {ctx.node} ...")
    env = ctx.call("environment")
    if ctx.formatter == "json":
        ctx.document(env)
        return None
    for key, value in env.items():
        ctx.print(f"{key} = {'' if value is None else value}")
    return None
