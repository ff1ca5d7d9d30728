"""`warren-queues`: rabbitmq-queues' verbs for replicated queues (quorum queues, and classic
queues under an ha-mode policy): add_member, delete_member, grow, shrink, rebalance,
check_if_node_is_quorum_critical, and transfer_leadership.

It shares warrenctl's global options (-n node, -t timeout, -q, --formatter,
--no-table-headers), its cookie, its output conventions and its exit statuses (see
cli/warrenctl.py); the commands live one per module in cli/queues_ctl/. The node it reaches
runs each change on the queue's leader, wherever that is.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ..cluster.control import EX_USAGE, ControlError
from ..cluster.names import NodeNameError, parse, short_hostname
from .ctl.context import Context, CtlError
from .queues_ctl import load_commands
from .warrenctl import UsageError, _command_parser, _fail, _global_options, _Parser, _split

GROUPS = ("Help", "Replication", "Health checks")
GLOBAL_USAGE = ("warren-queues [-n <node>] [-t <timeout>] [-q] [--formatter table|json] "
                "[--no-table-headers] <command> [<command options>]")


def print_help(out: TextIO, command: str | None = None) -> int:
    commands = load_commands()
    if command:
        module = commands.get(command)
        if module is None:
            print(f"Error: unknown command '{command}'; see 'warren-queues help'",
                  file=sys.stderr)
            return EX_USAGE
        print(f"Usage: warren-queues [-n <node>] [-q] {module.usage}", file=out)
        print("", file=out)
        print(module.description + ".", file=out)
        return 0
    print(f"Usage: {GLOBAL_USAGE}", file=out)
    print("", file=out)
    print("Commands:", file=out)
    for group in GROUPS:
        members = sorted((m for m in commands.values() if m.group == group),
                         key=lambda m: m.name)
        if members:
            print(f"\n{group}:", file=out)
            for m in members:
                print(f"   {m.name:<36}{m.description}", file=out)
    print("\nUse 'warren-queues help <command>' to learn about a command.", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = load_commands()
    global_argv, name, rest = _split(argv)
    if name is None:
        print_help(sys.stderr)
        return EX_USAGE
    module = commands.get(name)
    if module is None:
        return _fail(f"unknown command '{name}'; 'warren-queues help' lists the commands",
                     EX_USAGE)
    try:
        top = _Parser(prog="warren-queues", add_help=False)
        _global_options(top, suppress=False)
        options = top.parse_args(global_argv)
        args = _command_parser(module).parse_args(rest, namespace=options)
    except UsageError as e:
        return _fail(f"{e}\nUsage: warren-queues [-n <node>] [-q] {module.usage}", EX_USAGE)
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
