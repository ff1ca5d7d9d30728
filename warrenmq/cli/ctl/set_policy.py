"""warrenctl set_policy [-p <vhost>] [--priority <priority>] [--apply-to <queues|exchanges|all>]
<name> <pattern> <definition>: sets or updates a policy: a pattern, a JSON definition, a
priority and what it applies to."""

from __future__ import annotations

import argparse

from .context import Context

name = "set_policy"
group = "Policies"
description = (
    "Sets or updates a policy: a pattern, a JSON definition, a priority and what it applies "
    "to"
)
usage = (
    "set_policy [-p <vhost>] [--priority <priority>] [--apply-to <queues|exchanges|all>] "
    "<name> <pattern> <definition>"
)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--apply-to", dest="apply_to", default="all")
    p.add_argument("name")
    p.add_argument("pattern")
    p.add_argument("definition", help="JSON object, such as '{\"max-length\":1000}'")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    ctx.info(f'Setting policy "{args.name}" for pattern "{args.pattern}" to "{args.definition}" '
             f'with priority "{args.priority}" for vhost "{args.vhost}" ...')
    ctx.call("set_policy", {"vhost": args.vhost, "name": args.name, "pattern": args.pattern,
                            "definition": args.definition, "priority": args.priority,
                            "apply_to": args.apply_to})
    return None
