"""The plugin catalogue and the enabled-plugins file (RabbitMQ's `enabled_plugins`).

The file lives in the node's data directory and holds one Erlang list term, as RabbitMQ's
does: `[warren_management,warren_prometheus].` A node whose file does not exist runs the
default set, the management plugin, so that the quick start gives a console at once (as
the `rabbitmq:management` image most RabbitMQ users start from does); the first
enable/disable writes the file and from then on the file is the whole truth. RabbitMQ's
plugin names are accepted as aliases, so `rabbitmq_management` enables ours.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

FILE_NAME = "enabled_plugins"
MANAGEMENT = "warren_management"
PROMETHEUS = "warren_prometheus"


@dataclass(frozen=True)
class Plugin:
    name: str
    description: str


PLUGINS: dict[str, Plugin] = {
    MANAGEMENT: Plugin(MANAGEMENT, "Management HTTP API and web console (port 15672)"),
    PROMETHEUS: Plugin(PROMETHEUS, "Prometheus exporter on /metrics (port 15692)"),
}
ALIASES = {
    "rabbitmq_management": MANAGEMENT,
    "rabbitmq_management_agent": MANAGEMENT,
    "rabbitmq_web_dispatch": MANAGEMENT,
    "rabbitmq_prometheus": PROMETHEUS,
}
DEFAULT_ENABLED = (MANAGEMENT,)
VERSION = __version__


class PluginsError(ValueError):
    """An unknown plugin name or an unreadable enabled-plugins file; the text says which."""


def path_in(data_dir: Path | str) -> Path:
    return Path(data_dir) / FILE_NAME


def resolve(names: list[str]) -> list[str]:
    """Plugin names as given (ours or RabbitMQ's) -> ours, in catalogue order; unknown names
    are an error naming them all."""
    out: list[str] = []
    unknown: list[str] = []
    for name in names:
        real = ALIASES.get(name, name)
        if real not in PLUGINS:
            unknown.append(name)
        elif real not in out:
            out.append(real)
    if unknown:
        raise PluginsError(f"plugin(s) not found: {', '.join(unknown)}; known plugins: "
                           f"{', '.join(PLUGINS)}")
    return [p for p in PLUGINS if p in out]


_TERM = re.compile(r"^\s*\[\s*(.*?)\s*\]\s*\.\s*$", re.S)
_ATOM = re.compile(r"^'?([a-z][a-zA-Z0-9_@]*)'?$")


def parse(text: str, where: str = "enabled plugins file") -> list[str]:
    m = _TERM.match(text)
    if m is None:
        raise PluginsError(f"{where}: expected an Erlang list such as "
                           f"'[{MANAGEMENT}].', got {text.strip()[:60]!r}")
    names: list[str] = []
    for part in (p.strip() for p in m.group(1).split(",")):
        if not part:
            continue
        atom = _ATOM.match(part)
        if atom is None:
            raise PluginsError(f"{where}: {part!r} is not a plugin name")
        names.append(atom.group(1))
    known = [ALIASES.get(n, n) for n in names]
    # names this version does not know (a newer node's file) are kept out, not fatal
    return [p for p in PLUGINS if p in known]


def read_enabled(data_dir: Path | str) -> list[str]:
    path = path_in(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return list(DEFAULT_ENABLED)
    except OSError as e:
        raise PluginsError(f"cannot read {path}: {e.strerror}") from None
    return parse(text, str(path))


def write_enabled(data_dir: Path | str, names: list[str]) -> None:
    path = path_in(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("[" + ",".join(names) + "].\n")
    os.replace(tmp, path)
