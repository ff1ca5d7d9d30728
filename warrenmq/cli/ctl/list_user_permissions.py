"""warrenctl list_user_permissions <username>: lists a user's permissions in every virtual host."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_user_permissions"
group = "Access control"
description = "Lists a user's permissions in every virtual host"
usage = "list_user_permissions <username>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Listing permissions for user "{args.username}" ...')
    ctx.table(ctx.call("list_user_permissions", {"user": args.username}))
    return None
