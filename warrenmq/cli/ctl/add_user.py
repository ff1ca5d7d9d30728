"""warrenctl add_user <username> [<password>]: create a user; the password is hashed here, so it
never crosses the wire."""

from __future__ import annotations

import argparse

from ...meta.access import hash_password
from .context import Context, read_password

name = "add_user"
group = "Users"
description = (
    "Creates a user with no tags and no permissions; without PASSWORD, reads it from standard"
    " input"
)
usage = "add_user <username> [<password>]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")
    p.add_argument("password", nargs="?", help="read from standard input when omitted")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    password = read_password(args.password)
    ctx.info(f'Adding user "{args.username}" ...')
    ctx.call("add_user", {"username": args.username, "password_hash": hash_password(password)})
    ctx.info("Done. Don't forget to grant the user permissions to some virtual hosts! See "
             "'warrenctl help set_permissions' to learn more.")
    return None
