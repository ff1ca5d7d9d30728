"""warrenctl add_vhost <vhost> [--description <text>] [--tags <tag,...>]: creates a virtual host
(nothing happens if it exists)."""

from __future__ import annotations

import argparse

from .context import Context

name = "add_vhost"
group = "Virtual hosts"
description = "Creates a virtual host (nothing happens if it exists)"
usage = "add_vhost <vhost> [--description <text>] [--tags <tag,...>]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("vhost")
    p.add_argument("--description", default="")
    p.add_argument("--tags", default="", help="comma-separated")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Adding vhost "{args.vhost}" ...')
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    ctx.call("add_vhost", {"vhost": args.vhost, "description": args.description, "tags": tags})
    return None
