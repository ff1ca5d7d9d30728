"""warrenctl list_users: lists users and their tags."""

from __future__ import annotations

import argparse

from .context import Context

name = "list_users"
group = "Users"
description = "Lists users and their tags"
usage = "list_users"


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info("Listing users ...")
    ctx.table(ctx.call("list_users"))
    return None
