"""warrenctl list_consumers [-p <vhost>] [<column> ...]: lists consumers (columns: queue_name,
channel_pid, consumer_tag, ack_required, prefetch_count, active, activity_status, exclusive,
arguments)."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_consumers"
group = "Monitoring"
description = (
    "Lists consumers (columns: queue_name, channel_pid, consumer_tag, ack_required, "
    "prefetch_count, active, activity_status, exclusive, arguments)"
)
usage = "list_consumers [-p <vhost>] [<column> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("columns", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Listing consumers in vhost {args.vhost} ...")
    ctx.table(ctx.call("list_consumers", {"vhost": args.vhost, "columns": args.columns}))
    return None
