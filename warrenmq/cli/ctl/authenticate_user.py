"""warrenctl authenticate_user <username> [<password>]: checks a user's password; exits non-zero if
it does not authenticate."""

from __future__ import annotations

import argparse

from .context import Context, read_password

name = "authenticate_user"
group = "Users"
description = "Checks a user's password; exits non-zero if it does not authenticate"
usage = "authenticate_user <username> [<password>]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")
    p.add_argument("password", nargs="?", help="read from standard input when omitted")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    password = read_password(args.password)
    ctx.info(f'Authenticating user "{args.username}" ...')
    ctx.call("authenticate_user", {"username": args.username, "password": password})
    ctx.info("Success")
    return None
