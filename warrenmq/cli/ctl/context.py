"""What every warrenctl command module gets: the target node, the output conventions of
rabbitmqctl (informational lines, tab-separated tables with a header row, `--quiet`,
`--formatter json`, `--no-table-headers`) and one authenticated control connection."""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from ...cluster import cookie
from ...cluster.control import (
    EX_CONFIG,
    EX_DATAERR,
    EX_SOFTWARE,
    EX_USAGE,
    ControlClient,
    ControlError,
)
from ...cluster.names import NodeName, resolve

EX_NOINPUT = 66
EX_CANTCREAT = 73


class CtlError(Exception):
    """A failure warrenctl reports as one line on stderr, exiting with `exit_status`."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclass
class Context:
    node: NodeName
    timeout_s: float = 60.0
    quiet: bool = False
    formatter: str = "table"
    table_headers: bool = True
    out: TextIO = field(default_factory=lambda: sys.stdout)
    _client: ControlClient | None = None

    # -- talking to the node ----------------------------------------------------------------------
    def call(self, cmd: str, args: dict | None = None) -> Any:
        if self._client is None:
            try:
                secret = cookie.read(cookie.cookie_path())
            except cookie.CookieError as e:
                raise CtlError(str(e), EX_CONFIG) from None
            self._client = ControlClient(self.node, secret, self.timeout_s).connect()
        return self._client.call(cmd, args or {})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- output -------------------------------------------------------------------------------------
    def info(self, line: str) -> None:
        """An informational line: not with --quiet, and not mixed into JSON output."""
        if not self.quiet and self.formatter != "json":
            print(line, file=self.out)

    def print(self, line: str = "") -> None:
        print(line, file=self.out)

    def table(self, result: dict) -> None:
        columns, rows = result["columns"], result["rows"]
        if self.formatter == "json":
            objects = [json.dumps(dict(zip(columns, row,
                                           strict=True)), separators=(",", ":"),
                                  ensure_ascii=False) for row in rows]
            self.print("[")
            for i, text in enumerate(objects):
                self.print(text if i == 0 else "," + text)
            self.print("]")
            return
        if not rows:
            return  # rabbitmqctl prints no header for an empty listing
        if self.table_headers:
            self.print("\t".join(columns))
        for row in rows:
            self.print("\t".join(_cell(c, v) for c, v in zip(columns, row, strict=True)))

    def document(self, value: Any) -> None:
        """A single JSON document (status, environment) in JSON form."""
        self.print(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False))


def read_password(given: str | None) -> str:
    """The password argument, or one line of standard input (so it stays out of `ps`)."""
    if given is not None:
        return given
    line = sys.stdin.readline()
    if not line:
        raise CtlError("no password given: pass it as an argument or on standard input",
                       EX_USAGE)
    return line.rstrip("\r\n")


def wait_until_down(ctx: Context) -> None:
    """After `stop`: wait (up to the timeout) until the node's cluster port refuses."""
    deadline = time.monotonic() + ctx.timeout_s
    addresses = resolve(ctx.node)
    while time.monotonic() < deadline:
        family, sockaddr = addresses[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(sockaddr)
            except OSError:
                return
        time.sleep(0.05)
    raise CtlError(f"node {ctx.node} did not stop within {ctx.timeout_s:g}s", EX_SOFTWARE)


def show_status(ctx: Context, st: dict) -> None:
    """`status` in rabbitmqctl's sections."""
    p = ctx.print
    p("Runtime")
    p()
    p(f"OS PID: {st['pid']}")
    p(f"OS: {st['os']}")
    p(f"Uptime (seconds): {st['uptime']}")
    p(f"Is under maintenance?: {'true' if st['is_under_maintenance'] else 'false'}")
    p(f"{st['product_name']} version: {st['product_version']}")
    p(f"Node name: {st['node_name']}")
    p(f"Runtime: {st['runtime_version']}")
    p(f"App running: {'true' if st['app_running'] else 'false'}")
    p()
    p("Data directory")
    p()
    p(f"Node data directory: {st['data_directory']}")
    p(f"Pid file: {st['pid_file']}")
    p()
    p("Config files")
    p()
    for f in st["config_files"] or ["(none)"]:
        p(f" * {f}")
    p()
    p("Log file(s)")
    p()
    for f in st["log_files"] or ["<stderr>"]:
        p(f" * {f}")
    p()
    p("Alarms")
    p()
    p(", ".join(st["alarms"]) if st["alarms"] else "(none)")
    p()
    p("Totals")
    p()
    totals = st["totals"]
    p(f"Connection count: {totals['connection_count']}")
    p(f"Queue count: {totals['queue_count']}")
    p(f"Virtual host count: {totals['virtual_host_count']}")
    p()
    p("Listeners")
    p()
    for lst in st["listeners"]:
        p(f"Interface: {lst['interface']}, port: {lst['port']}, protocol: {lst['protocol']}, "
          f"purpose: {lst['purpose']}")


def _erl(v: Any) -> str:
    """A value inside an AMQP table, as rabbitmqctl prints it (strings quoted)."""
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "undefined"
    return str(v)


def _triples(items: list) -> str:
    """[[key, type, value], ...] -> [{"key",value},...] (rabbitmqctl's table notation)."""
    parts = []
    for key, kind, value in items:
        if kind == "table":
            rendered = _triples(value)
        elif kind == "array":
            rendered = "[" + ",".join(_erl(x[1]) for x in value) + "]"
        else:
            rendered = _erl(value)
        parts.append(f"{{{json.dumps(key, ensure_ascii=False)},{rendered}}}")
    return "[" + ",".join(parts) + "]"


def _cell(column: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if column in ("arguments", "client_properties") and isinstance(v, list):
        return _triples(v)
    if column == "protocol" and isinstance(v, list):
        return "{" + ",".join(str(x) for x in v) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"), sort_keys=True)
    return str(v)


__all__ = ["EX_DATAERR", "Context", "ControlError", "CtlError"]
