"""warrenctl set_permissions [-p <vhost>] <username> <conf> <write> <read>: sets a user's
configure, write and read permissions (regular expressions) in a virtual host."""

from __future__ import annotations

import argparse

from .context import Context

name = "set_permissions"
group = "Access control"
description = (
    "Sets a user's configure, write and read permissions (regular expressions) in a virtual "
    "host"
)
usage = "set_permissions [-p <vhost>] <username> <conf> <write> <read>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("username")
    p.add_argument("conf")
    p.add_argument("write")
    p.add_argument("read")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Setting permissions for user "{args.username}" in vhost "{args.vhost}" ...')
    ctx.call("set_permissions", {"vhost": args.vhost, "user": args.username,
                                 "configure": args.conf, "write": args.write,
                                 "read": args.read})
    return None
