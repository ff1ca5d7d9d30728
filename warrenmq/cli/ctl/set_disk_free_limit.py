"""warrenctl set_disk_free_limit <limit>: changes the free-disk alarm threshold of the running
node (not persisted, as with rabbitmqctl)."""

from __future__ import annotations

import argparse

from ...cluster.control import EX_USAGE
from ...server.resources import parse_size
from .context import Context, CtlError

name = "set_disk_free_limit"
group = "Disk"
description = "Sets the disk alarm threshold: the free space below which publishers are blocked"
usage = "set_disk_free_limit <disk_limit>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("limit", help="bytes, or a size like 50MB or 2GiB")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    try:
        limit = parse_size(args.limit)
    except ValueError:
        raise CtlError(f"invalid disk limit {args.limit!r}; usage: {usage}", EX_USAGE) from None
    ctx.info(f"Setting disk free limit on {ctx.node} to {limit} bytes ...")
    ctx.call(name, {"absolute": limit})
    return None
