"""warrenctl list_permissions [-p <vhost>]: lists the users' permissions in a virtual host."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_permissions"
group = "Access control"
description = "Lists the users' permissions in a virtual host"
usage = "list_permissions [-p <vhost>]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Listing permissions for vhost "{args.vhost}" ...')
    ctx.table(ctx.call("list_permissions", {"vhost": args.vhost}))
    return None
