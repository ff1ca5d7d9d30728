"""warrenctl set_user_tags <username> [<tag> ...]: sets a user's tags (administrator, monitoring,
management, policymaker, impersonator, or any other); no tags clears them."""

from __future__ import annotations

import argparse

from .context import Context

name = "set_user_tags"
group = "Users"
description = (
    "Sets a user's tags (administrator, monitoring, management, policymaker, impersonator, or"
    " any other); no tags clears them"
)
usage = "set_user_tags <username> [<tag> ...]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")
    p.add_argument("tags", nargs="*")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Setting tags for user "{args.username}" to [{", ".join(args.tags)}] ...')
    ctx.call("set_user_tags", {"username": args.username, "tags": args.tags})
    return None
