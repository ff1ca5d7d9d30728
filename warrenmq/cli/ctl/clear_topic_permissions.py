"""warrenctl clear_topic_permissions [-p <vhost>] <username> [<exchange>]: clears a user's topic
permissions in a virtual host, for one exchange or all."""

from __future__ import annotations

import argparse

from .context import Context

name = "clear_topic_permissions"
group = "Access control"
description = "Clears a user's topic permissions in a virtual host, for one exchange or all"
usage = "clear_topic_permissions [-p <vhost>] <username> [<exchange>]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("username")
    p.add_argument("exchange", nargs="?")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Clearing topic permissions for user "{args.username}" in vhost "{args.vhost}" ...')
    ctx.call("clear_topic_permissions", {"vhost": args.vhost, "user": args.username,
                                         "exchange": args.exchange})
    return None
