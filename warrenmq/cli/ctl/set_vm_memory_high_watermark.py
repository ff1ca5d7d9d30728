"""warrenctl set_vm_memory_high_watermark <fraction> | absolute <limit>: changes the memory
alarm threshold of the running node (not persisted, as with rabbitmqctl)."""

from __future__ import annotations

import argparse

from ...cluster.control import EX_USAGE
from ...server.resources import parse_size
from .context import Context, CtlError

name = "set_vm_memory_high_watermark"
group = "Memory"
description = "Sets the memory alarm threshold: a fraction of total memory or an absolute size"
usage = "set_vm_memory_high_watermark <fraction> | absolute <memory_limit>"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("value", nargs="+", help="a fraction like 0.4, or: absolute 2GB")


def run(ctx: Context, args: argparse.Namespace) -> int | None:
    value = args.value
    try:
        if value[0] == "absolute":
            if len(value) != 2:
                raise ValueError("absolute needs one size")
            request = {"absolute": parse_size(value[1])}
        else:
            if len(value) != 1:
                raise ValueError("expected one fraction")
            request = {"relative": float(value[0])}
    except ValueError as e:
        raise CtlError(f"invalid watermark {' '.join(value)!r}: {e}; usage: {usage}",
                       EX_USAGE) from None
    ctx.info(f"Setting memory threshold on {ctx.node} to {' '.join(value)} ...")
    ctx.call(name, request)
    return None
