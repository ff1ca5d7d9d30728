"""warrenctl list_vhosts [<column> ...]: lists virtual hosts (columns: name, description, tags,
tracing)."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_vhosts"
group = "Virtual hosts"
description = "Lists virtual hosts (columns: name, description, tags, tracing)"
usage = "list_vhosts [<column> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("columns", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info("Listing vhosts ...")
    ctx.table(ctx.call("list_vhosts", {"columns": args.columns}))
    return None
