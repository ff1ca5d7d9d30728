"""warrenctl list_connections [<column> ...]: lists client connections (columns: pid, name, user,
vhost, state, peer_host, peer_port, host, port, protocol, channels, channel_max, frame_max,
timeout, auth_mechanism, client_properties, ssl, node)."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_connections"
group = "Monitoring"
description = (
    "Lists client connections (columns: pid, name, user, vhost, state, peer_host, peer_port, "
    "host, port, protocol, channels, channel_max, frame_max, timeout, auth_mechanism, "
    "client_properties, ssl, node)"
)
usage = "list_connections [<column> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("columns", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info("Listing connections ...")
    ctx.table(ctx.call("list_connections", {"columns": args.columns}))
    return None
