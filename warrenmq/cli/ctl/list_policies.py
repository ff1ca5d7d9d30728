"""warrenctl list_policies [-p <vhost>]: lists the policies of a virtual host, lowest priority
first."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_policies"
group = "Policies"
description = "Lists the policies of a virtual host, lowest priority first"
usage = "list_policies [-p <vhost>]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Listing policies for vhost "{args.vhost}" ...')
    ctx.table(ctx.call("list_policies", {"vhost": args.vhost}))
    return None
