"""warrenctl start_app: starts the app again after stop_app or reset."""

from __future__ import annotations

import argparse

from .context import Context

name = "start_app"
group = "Nodes"
description = "Starts the app again after stop_app or reset"
usage = "start_app"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Starting node {ctx.node} ...")
    ctx.call("start_app")
    return None
