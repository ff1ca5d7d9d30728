"""warrenctl delete_user <username>: deletes a user and closes its connections."""

from __future__ import annotations

import argparse

from .context import Context

name = "delete_user"
group = "Users"
description = "Deletes a user and closes its connections"
usage = "delete_user <username>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Deleting user "{args.username}" ...')
    ctx.call("delete_user", {"username": args.username})
    return None
