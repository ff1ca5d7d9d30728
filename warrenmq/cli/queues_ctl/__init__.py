"""warren-queues' commands, one module each (rabbitmq-queues' verbs): every module defines
`name`, `group`, `description`, `usage`, `arguments(parser)` and `run(ctx, args)`, as
warrenctl's do, and runs with warrenctl's Context (node, cookie, output conventions)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def load_commands() -> dict[str, ModuleType]:
    commands: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        commands[module.name] = module
    return commands
