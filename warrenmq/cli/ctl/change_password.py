"""warrenctl change_password <username> [<password>]: change a password; it is hashed here, so it
never crosses the wire."""

from __future__ import annotations

import argparse

from ...meta.access import hash_password
from .context import Context, read_password

name = "change_password"
group = "Users"
description = "Changes a user's password; without PASSWORD, reads it from standard input"
usage = "change_password <username> [<password>]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")
    p.add_argument("password", nargs="?", help="read from standard input when omitted")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    password = read_password(args.password)
    ctx.info(f'Changing password for user "{args.username}" ...')
    ctx.call("change_password", {"username": args.username,
                                 "password_hash": hash_password(password)})
    return None
