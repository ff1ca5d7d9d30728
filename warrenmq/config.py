"""Typed node settings: defaults, then the config file (RabbitMQ's `key = value`), then the
environment (WARREN_*), then command-line flags; later sources win.

Every value is checked where it is read: an unknown key or a bad value stops start-up with
FILE:LINE and the key, because a node that silently ignores a typo in its config is worse
than one that refuses to start. A node name with a port (NAME@HOST:PORT) names the cluster
port too: the node listens there, and a different cluster port set elsewhere is an error.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def default_nodename() -> str:
    return f"warren@{socket.gethostname().split('.')[0]}"


@dataclass
class Config:
    nodename: str = field(default_factory=default_nodename)
    bind: str = "0.0.0.0"
    amqp_port: int = 5672
    dist_port: int = 25672
    mgmt_port: int = 15672
    data_dir: Path = field(default_factory=lambda: Path.home() / ".warren" / "data")
    config_file: Path | None = None
    ports_file: Path | None = None
    cluster_name: str = ""
    # AMQP limits, as RabbitMQ's defaults
    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    handshake_timeout_s: float = 10.0
    max_message_size: int = 134217728
    consumer_timeout_ms: int = 1_800_000  # delivery acknowledgement timeout, as RabbitMQ's
    queue_page_bytes: int = 64 * 1024 * 1024  # ready bodies a queue keeps in memory
    default_vhost: str = "/"
    default_user: str = "guest"
    default_pass: str = "guest"
    loopback_users: tuple[str, ...] = ("guest",)
    log_level: str = "info"
    vm_memory_high_watermark_relative: float | None = 0.4
    vm_memory_high_watermark_absolute: int | None = None
    disk_free_limit_absolute: int = 50 * 1000 * 1000
    # None: stderr only in the foreground, <log_dir>/<nodename>.log when detached
    log_file: Path | None = None
    log_dir: Path | None = None
    log_console: bool = True
    pid_file: Path | None = None  # default <data_dir>/warren.pid
    # the peers a fresh node tries to join (cluster_formation.classic_config.nodes.N)
    cluster_nodes: tuple[str, ...] = ()
    peer_discovery_backend: str = "classic_config"


class ConfigError(Exception):
    pass


_ENV = {
    "WARREN_NODENAME": "nodename",
    "WARREN_NODE_PORT": "amqp_port",
    "WARREN_DIST_PORT": "dist_port",
    "WARREN_MGMT_PORT": "mgmt_port",
    "WARREN_DATA_DIR": "data_dir",
    "WARREN_CONFIG_FILE": "config_file",
    "WARREN_NODE_IP_ADDRESS": "bind",
    "WARREN_LOG_BASE": "log_dir",
    "WARREN_PID_FILE": "pid_file",
}

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency",
              "none")


def _fraction(value: str) -> float:
    f = float(value)
    if not 0 < f <= 1:
        raise ValueError(value)
    return f


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(value)
    return value.lower()


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(value)
    return value.lower() == "true"


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port < 65536:
        raise ValueError(value)
    return port


def _node_name(value: str) -> str:
    from .cluster.names import NodeNameError, parse

    try:
        parse(value)
    except NodeNameError:
        raise ValueError(value) from None
    return value


def _discovery_backend(value: str) -> str:
    if value not in ("classic_config", "rabbit_peer_discovery_classic_config"):
        raise ValueError(value)
    return "classic_config"


def _log_file(value: str) -> Path | None:
    return None if value == "false" else Path(value)

# RabbitMQ config keys -> (attribute, parser: a callable or the name of a special case)
_FILE_KEYS: dict[str, tuple[str, Any]] = {
    "listeners.tcp.default": ("amqp_port", "listener"),
    "management.tcp.port": ("mgmt_port", _port),
    "management.tcp.ip": ("bind", str),
    "distribution.listener.port_range.min": ("dist_port", _port),
    "default_user": ("default_user", str),
    "default_pass": ("default_pass", str),
    "default_vhost": ("default_vhost", str),
    "loopback_users": ("loopback_users", "loopback"),
    "heartbeat": ("heartbeat", int),
    "frame_max": ("frame_max", int),
    "channel_max": ("channel_max", int),
    "handshake_timeout": ("handshake_timeout_s", "ms"),
    "max_message_size": ("max_message_size", int),
    "consumer_timeout": ("consumer_timeout_ms", int),
    "queue_page_bytes": ("queue_page_bytes", "size"),
    "cluster_name": ("cluster_name", str),
    "log.file.level": ("log_level", _log_level),
    "log.file": ("log_file", _log_file),
    "log.dir": ("log_dir", Path),
    "log.console": ("log_console", _bool),
    "cluster_formation.peer_discovery_backend": ("peer_discovery_backend", _discovery_backend),
    "cluster_formation.classic_config.nodes": ("cluster_nodes", "node_list"),
    "vm_memory_high_watermark.relative": ("vm_memory_high_watermark_relative", _fraction),
    "vm_memory_high_watermark.absolute": ("vm_memory_high_watermark_absolute", "size"),
    "disk_free_limit.absolute": ("disk_free_limit_absolute", "size"),
    "log.console.level": ("log_level", _log_level),
}


def _coerce(cfg: Config, attr: str, value: object) -> None:
    current = getattr(cfg, attr)
    if isinstance(current, bool):
        value = str(value).lower() in ("1", "true", "yes")
    elif isinstance(current, int):
        value = int(value)  # type: ignore[arg-type]
    elif isinstance(current, Path) or attr in ("config_file", "ports_file", "pid_file",
                                               "log_dir", "log_file"):
        value = Path(str(value))
    setattr(cfg, attr, value)


def parse_config_file(cfg: Config, path: Path) -> set[str]:
    """Apply the file's settings to `cfg`; the names of the attributes it set."""
    given: set[str] = set()
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    for lineno, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ConfigError(f"{path}:{lineno}: expected 'key = value', got {raw.strip()!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        loopback = key.startswith("loopback_users.")
        indexed = key.startswith("cluster_formation.classic_config.nodes.")
        lookup = "loopback_users" if loopback else (
            "cluster_formation.classic_config.nodes" if indexed else key)
        spec = _FILE_KEYS.get(lookup)
        if spec is None:
            raise ConfigError(f"{path}:{lineno}: unknown key '{key}'")
        attr, kind = spec
        try:
            if kind == "listener":
                host, _, port = value.rpartition(":")
                if host:
                    cfg.bind = host
                cfg.amqp_port = int(port)
            elif kind == "loopback":
                if key == "loopback_users" and value == "none":
                    cfg.loopback_users = ()
                elif loopback:
                    user = key.split(".", 1)[1]
                    users = set(cfg.loopback_users)
                    (users.add if _bool(value) else users.discard)(user)
                    cfg.loopback_users = tuple(sorted(users))
                else:
                    raise ValueError(value)
            elif kind == "size":
                from .server.resources import parse_size

                setattr(cfg, attr, parse_size(value))
            elif kind == "node_list":
                if not indexed:
                    raise ValueError(value)
                cfg.cluster_nodes = (*cfg.cluster_nodes, _node_name(value))
            elif kind == "ms":
                setattr(cfg, attr, int(value) / 1000.0)
            else:
                setattr(cfg, attr, kind(value))
        except ValueError:
            raise ConfigError(f"{path}:{lineno}: invalid value {value!r} for '{key}'") from None
        given.add(attr)
    return given


def _explicit_port(nodename: str) -> int | None:
    """The port a NAME@HOST:PORT name carries, None when it has none (or is not a name)."""
    from .cluster.names import NodeNameError, parse

    try:
        port = parse(nodename).port
    except NodeNameError:
        return None  # the caller reports a bad name where it checks the name
    host = nodename.partition("@")[2]
    explicit = "]:" in host if host.startswith("[") else ":" in host
    return port if explicit else None


def _dist_port_from_name(cfg: Config, dist_port_given: bool) -> None:
    # A name with a port is the address peers and warrenctl use to reach this node, so the
    # node must listen there: the name's port becomes the cluster port. A different cluster
    # port given elsewhere (0, "any free port", included) would make the name a lie: refused.
    port = _explicit_port(cfg.nodename)
    if port is None:
        return
    if not dist_port_given:
        cfg.dist_port = port
    elif cfg.dist_port != port:
        raise ConfigError(f"node name '{cfg.nodename}' says the cluster port is {port}, but "
                          f"the cluster port is set to {cfg.dist_port}: give the same port to "
                          "both, or drop one of them")


def load(overrides: dict | None = None, environ: dict | None = None) -> Config:
    env = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = Config()
    given: set[str] = set()
    config_file = overrides.get("config_file") or env.get("WARREN_CONFIG_FILE")
    if config_file:
        cfg.config_file = Path(config_file)
        given |= parse_config_file(cfg, cfg.config_file)
    for var, attr in _ENV.items():
        if var in env and env[var] != "":
            try:
                _coerce(cfg, attr, env[var])
            except ValueError:
                raise ConfigError(f"invalid value {env[var]!r} for {var}") from None
            given.add(attr)
    for attr, value in overrides.items():
        _coerce(cfg, attr, value)
        given.add(attr)
    _dist_port_from_name(cfg, "dist_port" in given)
    return cfg
