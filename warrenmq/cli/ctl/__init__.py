"""warrenctl's commands, one module each (rabbitmq_cli's shape): every module defines `name`,
`group`, `description`, `usage`, `arguments(parser)` and `run(ctx, args)`."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def load_commands() -> dict[str, ModuleType]:
    commands: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "context":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        commands[module.name] = module
    return commands
