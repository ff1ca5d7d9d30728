"""warrenctl clear_permissions [-p <vhost>] <username>: revokes a user's permissions in a virtual
host."""

from __future__ import annotations

import argparse

from .context import Context

name = "clear_permissions"
group = "Access control"
description = "Revokes a user's permissions in a virtual host"
usage = "clear_permissions [-p <vhost>] <username>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("username")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Clearing permissions for user "{args.username}" in vhost "{args.vhost}" ...')
    ctx.call("clear_permissions", {"vhost": args.vhost, "user": args.username})
    return None
