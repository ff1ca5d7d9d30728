"""warrenctl import_definitions <file|->: imports RabbitMQ's definitions JSON from a file or
standard input (-); the whole file is validated before anything changes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .context import EX_DATAERR, EX_NOINPUT, Context, CtlError

name = "import_definitions"
group = "Definitions"
description = (
    "Imports RabbitMQ's definitions JSON from a file or standard input (-); the whole file is"
    " validated before anything changes"
)
usage = "import_definitions <file|->"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    source = "standard input" if args.file == "-" else f'a file at "{args.file}"'
    ctx.info(f"Importing definitions in JSON from {source} ...")
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    except OSError as e:
        raise CtlError(f"cannot read {args.file}: {e.strerror}", EX_NOINPUT) from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CtlError(f"{args.file} is not valid JSON: {e}", EX_DATAERR) from None
    result = ctx.call("import_definitions", {"definitions": doc})
    for note in result["notes"]:
        ctx.info(f"Note: {note}")
    ctx.info(f"Successfully imported definitions ({result['applied']} changes)")
    return None
