"""`warren-queues`: rabbitmq-queues' verbs for replicated queues (quorum queues, and classic
queues under an ha-mode policy): add_member, delete_member, grow, shrink, rebalance,
check_if_node_is_quorum_critical, and transfer_leadership.

It shares warrenctl's global options (-n node, -t timeout, -q, --formatter,
--no-table-headers), its cookie, its output conventions and its exit statuses (see
cli/warrenctl.py); the commands live one per module in cli/queues_ctl/. The node it reaches
runs each change on the queue's leader, wherever that is.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ..cluster.control import EX_USAGE
from .queues_ctl import load_commands
from .warrenctl import run_tool

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
    return run_tool("warren-queues", load_commands(), print_help, argv)

if __name__ == "__main__":
    sys.exit(main())
