"""`warrenctl`: the operator's tool, with rabbitmqctl's command names, arguments and output.

It talks to a running node over the node's cluster port, authenticated with the cookie (see
cluster/control.py). Every failure is one line on stderr and a distinct exit status
(sysexits): 64 usage, 65 bad data / refused by the node, 67 no such user, 68 the host does
not resolve, 69 the node is not running, 70 internal error or conflict, 75 the app is
stopped, 77 cookie mismatch, 78 cookie file problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TextIO

from ..cluster.control import EX_USAGE, ControlError
from ..cluster.names import NodeNameError, parse, short_hostname
from .ctl import load_commands
from .ctl.context import Context, CtlError

GROUPS = ("Help", "Nodes", "Users", "Virtual hosts", "Access control", "Policies", "Queues",
          "Monitoring", "Operations", "Definitions")
GLOBAL_USAGE = ("warrenctl [-n <node>] [-t <timeout>] [-q] [--formatter table|json] "
                "[--no-table-headers] <command> [<command options>]")
_VALUED = ("-n", "--node", "-t", "--timeout", "--formatter")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    def d(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    p.add_argument("-n", "--node", default=d(None),
                   help="NAME@HOST or NAME@HOST:PORT (env WARREN_NODENAME)")
    p.add_argument("-t", "--timeout", type=float, default=d(60.0))
    p.add_argument("-q", "--quiet", action="store_true", default=d(False))
    p.add_argument("--formatter", choices=("table", "json"), default=d("table"))
    p.add_argument("--no-table-headers", dest="no_table_headers", action="store_true",
                   default=d(False))


def _split(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Global options before the command, the command, and what follows it."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in _VALUED:
            i += 2
            continue
        if token.startswith("-"):
            i += 1
            continue
        return argv[:i], token, argv[i + 1:]
    return argv, None, []


def _command_parser(module: ModuleType) -> _Parser:
    p = _Parser(prog=f"warrenctl {module.name}", add_help=False)
    _global_options(p, suppress=True)
    module.arguments(p)
    return p


def print_help(out: TextIO, command: str | None = None) -> int:
    commands = load_commands()
    if command:
        module = commands.get(command)
        if module is None:
            print(f"Error: unknown command '{command}'; see 'warrenctl help'", file=sys.stderr)
            return EX_USAGE
        print(f"Usage: warrenctl [-n <node>] [-q] {module.usage}", file=out)
        print("", file=out)
        print(module.description + ".", file=out)
        return 0
    print(f"Usage: {GLOBAL_USAGE}", file=out)
    print("", file=out)
    print("Commands:", file=out)
    for group in GROUPS:
        members = sorted((m for m in commands.values() if m.group == group),
                         key=lambda m: m.name)
        if not members:
            continue
        print(f"\n{group}:", file=out)
        for m in members:
            print(f"   {m.name:<28}{m.description}", file=out)
    print("\nUse 'warrenctl help <command>' to learn about a command.", file=out)
    return 0


def _fail(message: str, status: int) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    return run_tool("warrenctl", load_commands(), print_help, argv)


def run_tool(prog: str, commands: dict[str, ModuleType],
             help_fn: Callable[[TextIO], object], argv: list[str] | None = None) -> int:
    """Parse the global options and one command of `commands`, reach the node, run it: the
    body of warrenctl and warren-queues, which differ only by their command sets."""
    argv = list(sys.argv[1:] if argv is None else argv)
    global_argv, name, rest = _split(argv)
    if name is None:
        help_fn(sys.stderr)
        return EX_USAGE
    module = commands.get(name)
    if module is None:
        return _fail(f"unknown command '{name}'; '{prog} help' lists the commands", EX_USAGE)
    try:
        top = _Parser(prog=prog, add_help=False)
        _global_options(top, suppress=False)
        options = top.parse_args(global_argv)
        args = _command_parser(module).parse_args(rest, namespace=options)
    except UsageError as e:
        return _fail(f"{e}\nUsage: {prog} [-n <node>] [-q] {module.usage}", EX_USAGE)
    node_text = args.node or os.environ.get("WARREN_NODENAME") or f"warren@{short_hostname()}"
    try:
        node = parse(node_text)
    except NodeNameError as e:
        return _fail(str(e), EX_USAGE)
    ctx = Context(node, timeout_s=args.timeout, quiet=args.quiet, formatter=args.formatter,
                  table_headers=not args.no_table_headers)
    try:
        status = module.run(ctx, args)
    except (CtlError, ControlError) as e:
        return _fail(str(e), e.exit_status)
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()
    return status or 0

if __name__ == "__main__":
    sys.exit(main())
