"""warrenctl delete_vhost <vhost>: deletes a virtual host with everything in it, closing its
connections."""

from __future__ import annotations

import argparse

from .context import Context

name = "delete_vhost"
group = "Virtual hosts"
description = "Deletes a virtual host with everything in it, closing its connections"
usage = "delete_vhost <vhost>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("vhost")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Deleting vhost "{args.vhost}" ...')
    ctx.call("delete_vhost", {"vhost": args.vhost})
    return None
