"""warrenctl list_queues [-p <vhost>] [<column> ...]: lists queues (columns: name, messages,
messages_ready, messages_unacknowledged, message_bytes_ready, consumers, durable, auto_delete,
exclusive, arguments, policy, effective_policy_definition, type, state, owner_pid, vhost, node,
leader, members, online, slave_nodes, synchronised_slave_nodes)."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_queues"
group = "Monitoring"
description = (
    "Lists queues (columns: name, messages, messages_ready, messages_unacknowledged, "
    "message_bytes_ready, consumers, durable, auto_delete, exclusive, arguments, policy, "
    "effective_policy_definition, type, state, owner_pid, vhost, node, leader, members, "
    "online, slave_nodes, synchronised_slave_nodes)"
)
usage = "list_queues [-p <vhost>] [<column> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("columns", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Timeout: {ctx.timeout_s:.1f} seconds ...")
    ctx.info(f"Listing queues for vhost {args.vhost} ...")
    ctx.table(ctx.call("list_queues", {"vhost": args.vhost, "columns": args.columns}))
    return None
