"""warrenctl close_connection <connection> <explanation>: closes a client connection (by its pid or
name, see list_connections pid name) with 320 CONNECTION_FORCED and the given reason."""

from __future__ import annotations

import argparse

from .context import Context

name = "close_connection"
group = "Operations"
description = (
    "Closes a client connection (by its pid or name, see list_connections pid name) with 320 "
    "CONNECTION_FORCED and the given reason"
)
usage = "close_connection <connection> <explanation>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("connection", help="a pid such as <warren@host.7> or a connection name")
    p.add_argument("explanation")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f"Closing connection {args.connection}, reason: {args.explanation}...")
    ctx.call("close_connection", {"connection": args.connection, "reason": args.explanation})
    return None
