"""warren-queues help [<command>]: lists the commands, or shows one command's usage."""

from __future__ import annotations

import argparse

from ..ctl.context import Context

name = "help"
group = "Help"
description = "Displays usage information for a command, or lists the commands"
usage = "help [<command>]"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("command", nargs="?")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    from ..queues import print_help

    return print_help(ctx.out, args.command)
