"""warrenctl list_channels [<column> ...]: lists channels (columns: pid, name, connection, number,
user, vhost, transactional, confirm, consumer_count, messages_unacknowledged,
messages_unconfirmed, prefetch_count, global_prefetch_count, state, node)."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_channels"
group = "Monitoring"
description = (
    "Lists channels (columns: pid, name, connection, number, user, vhost, transactional, "
    "confirm, consumer_count, messages_unacknowledged, messages_unconfirmed, prefetch_count, "
    "global_prefetch_count, state, node)"
)
usage = "list_channels [<column> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("columns", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info("Listing channels ...")
    ctx.table(ctx.call("list_channels", {"columns": args.columns}))
    return None
