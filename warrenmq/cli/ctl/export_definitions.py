"""warrenctl export_definitions <file|->: exports users, vhosts, permissions, policies, exchanges,
queues and bindings as RabbitMQ's definitions JSON, to a file or to standard output (-)."""

from __future__ import annotations

import argparse
import json

from .context import EX_CANTCREAT, Context, CtlError

name = "export_definitions"
group = "Definitions"
description = (
    "Exports users, vhosts, permissions, policies, exchanges, queues and bindings as "
    "RabbitMQ's definitions JSON, to a file or to standard output (-)"
)
usage = "export_definitions <file|->"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    doc = ctx.call("export_definitions")
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if args.file == "-":
        ctx.out.write(text)
        return None
    ctx.info(f'Exporting definitions in JSON to a file at "{args.file}" ...')
    try:
        with open(args.file, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise CtlError(f"cannot write {args.file}: {e.strerror}", EX_CANTCREAT) from None
    return None
