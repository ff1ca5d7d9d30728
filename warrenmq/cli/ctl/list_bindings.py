"""warrenctl list_bindings [-p <vhost>] [<column> ...]: lists bindings (columns: source_name,
source_kind, destination_name, destination_kind, routing_key, arguments, vhost)."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_bindings"
group = "Monitoring"
description = (
    "Lists bindings (columns: source_name, source_kind, destination_name, destination_kind, "
    "routing_key, arguments, vhost)"
)
usage = "list_bindings [-p <vhost>] [<column> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("columns", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Listing bindings for vhost {args.vhost}...")
    ctx.table(ctx.call("list_bindings", {"vhost": args.vhost, "columns": args.columns}))
    return None
