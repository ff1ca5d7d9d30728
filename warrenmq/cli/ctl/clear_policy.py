"""warrenctl clear_policy [-p <vhost>] <name>: clears a policy."""

from __future__ import annotations

import argparse

from .context import Context

name = "clear_policy"
group = "Policies"
description = "Clears a policy"
usage = "clear_policy [-p <vhost>] <name>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("name")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Clearing policy "{args.name}" on vhost "{args.vhost}" ...')
    ctx.call("clear_policy", {"vhost": args.vhost, "name": args.name})
    return None
