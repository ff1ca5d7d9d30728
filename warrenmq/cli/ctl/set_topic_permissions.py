"""warrenctl set_topic_permissions [-p <vhost>] <username> <exchange> <write> <read>: sets a user's
topic permissions (routing key regular expressions) on a topic exchange."""

from __future__ import annotations

import argparse

from .context import Context

name = "set_topic_permissions"
group = "Access control"
description = (
    "Sets a user's topic permissions (routing key regular expressions) on a topic exchange"
)
usage = "set_topic_permissions [-p <vhost>] <username> <exchange> <write> <read>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("username")
    p.add_argument("exchange")
    p.add_argument("write")
    p.add_argument("read")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Setting topic permissions on "{args.exchange}" for user "{args.username}" in '
             f'vhost "{args.vhost}" ...')
    ctx.call("set_topic_permissions", {"vhost": args.vhost, "user": args.username,
                                       "exchange": args.exchange, "write": args.write,
                                       "read": args.read})
    return None
