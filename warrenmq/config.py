"""Typed node settings: defaults, then the config file (RabbitMQ's `key = value`), then the
environment (WARREN_*), then command-line flags; later sources win."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path


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
    queue_page_bytes: int = 64 * 1024 * 1024  # ready bodies a queue keeps in memory
    default_vhost: str = "/"
    default_user: str = "guest"
    default_pass: str = "guest"
    loopback_users: tuple[str, ...] = ("guest",)
    log_level: str = "info"
    vm_memory_high_watermark_relative: float | None = 0.4
    vm_memory_high_watermark_absolute: int | None = None
    disk_free_limit_absolute: int = 50 * 1000 * 1000


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
}

# RabbitMQ config keys -> (attribute, parser)
_FILE_KEYS = {
    "listeners.tcp.default": ("amqp_port", "listener"),
    "management.tcp.port": ("mgmt_port", int),
    "management.tcp.ip": ("bind", str),
    "distribution.listener.port_range.min": ("dist_port", int),
    "default_user": ("default_user", str),
    "default_pass": ("default_pass", str),
    "default_vhost": ("default_vhost", str),
    "loopback_users": ("loopback_users", "loopback"),
    "heartbeat": ("heartbeat", int),
    "frame_max": ("frame_max", int),
    "channel_max": ("channel_max", int),
    "handshake_timeout": ("handshake_timeout_s", "ms"),
    "max_message_size": ("max_message_size", int),
    "cluster_name": ("cluster_name", str),
    "log.file.level": ("log_level", str),
    "vm_memory_high_watermark.relative": ("vm_memory_high_watermark_relative", float),
    "vm_memory_high_watermark.absolute": ("vm_memory_high_watermark_absolute", "size"),
    "disk_free_limit.absolute": ("disk_free_limit_absolute", "size"),
    "log.console.level": ("log_level", str),
}


def _coerce(cfg: Config, attr: str, value: object) -> None:
    current = getattr(cfg, attr)
    if isinstance(current, bool):
        value = str(value).lower() in ("1", "true", "yes")
    elif isinstance(current, int):
        value = int(value)  # type: ignore[arg-type]
    elif isinstance(current, Path) or attr in ("config_file", "ports_file"):
        value = Path(str(value))
    setattr(cfg, attr, value)


def parse_config_file(cfg: Config, path: Path) -> None:
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
        spec = _FILE_KEYS.get("loopback_users" if loopback else key)
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
                    (users.add if value == "true" else users.discard)(user)
                    cfg.loopback_users = tuple(sorted(users))
                else:
                    raise ValueError(value)
            elif kind == "size":
                from .server.resources import parse_size

                setattr(cfg, attr, parse_size(value))
            elif kind == "ms":
                setattr(cfg, attr, int(value) / 1000.0)
            else:
                setattr(cfg, attr, kind(value))
        except ValueError:
            raise ConfigError(f"{path}:{lineno}: invalid value {value!r} for '{key}'") from None


def load(overrides: dict | None = None, environ: dict | None = None) -> Config:
    env = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = Config()
    config_file = overrides.get("config_file") or env.get("WARREN_CONFIG_FILE")
    if config_file:
        cfg.config_file = Path(config_file)
        parse_config_file(cfg, cfg.config_file)
    for var, attr in _ENV.items():
        if var in env and env[var] != "":
            try:
                _coerce(cfg, attr, env[var])
            except ValueError:
                raise ConfigError(f"invalid value {env[var]!r} for {var}") from None
    for attr, value in overrides.items():
        _coerce(cfg, attr, value)
    return cfg
