"""warrenctl list_exchanges [-p <vhost>] [<column> ...]: lists exchanges (columns: name, type,
durable, auto_delete, internal, arguments, policy, vhost)."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_exchanges"
group = "Monitoring"
description = (
    "Lists exchanges (columns: name, type, durable, auto_delete, internal, arguments, policy,"
    " vhost)"
)
usage = "list_exchanges [-p <vhost>] [<column> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("columns", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Listing exchanges for vhost {args.vhost} ...")
    ctx.table(ctx.call("list_exchanges", {"vhost": args.vhost, "columns": args.columns}))
    return None
