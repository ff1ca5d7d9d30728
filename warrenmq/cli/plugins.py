"""`warren-plugins`: rabbitmq-plugins for WarrenMQ.

    warren-plugins list [PATTERN] [-E|-e] [--formatter json]
    warren-plugins enable PLUGIN... [--offline]
    warren-plugins disable PLUGIN... [--offline]

Online (the default) it reaches the running node over the control channel with the cookie,
like warrenctl (`-n NODE`); the node persists the change in its enabled-plugins file and
starts or stops the listeners at once, without a restart. `--offline` edits the
enabled-plugins file in the data directory (`--data-dir`, WARREN_DATA_DIR or the config
file) of a node that is not running; the change applies when it starts. RabbitMQ's plugin
names (rabbitmq_management, rabbitmq_prometheus) are accepted too. Failures are one line on
stderr and warrenctl's exit statuses.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from ..cluster import cookie
from ..cluster.control import EX_CONFIG, EX_DATAERR, EX_USAGE, ControlClient, ControlError
from ..cluster.names import NodeNameError, parse, short_hostname
from ..config import ConfigError, load
from ..mgmt import plugins


class Failure(Exception):
    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise Failure(f"{message}\n{self.format_usage().strip()}", EX_USAGE)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="warren-plugins", description="List, enable and disable plugins.")
    p.add_argument("-n", "--node", help="NAME@HOST or NAME@HOST:PORT (env WARREN_NODENAME)")
    p.add_argument("-t", "--timeout", type=float, default=60.0)
    p.add_argument("-q", "--quiet", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    lst = sub.add_parser("list", help="list plugins and their state")
    lst.add_argument("pattern", nargs="?", default=".*")
    lst.add_argument("-E", "--explicit", action="store_true", help="only enabled plugins")
    lst.add_argument("-e", "--enabled", action="store_true", help="only enabled plugins")
    lst.add_argument("--formatter", choices=("table", "json"), default="table")
    for name in ("enable", "disable"):
        cmd = sub.add_parser(name, help=f"{name} plugins")
        cmd.add_argument("plugins", nargs="+")
        cmd.add_argument("--offline", action="store_true",
                         help="edit the enabled-plugins file of a node that is not running")
        cmd.add_argument("--data-dir", help="the node's data directory (with --offline)")
        cmd.add_argument("--config-file", help="the node's config file (with --offline)")
    for cmd_name in ("list",):
        s = sub.choices[cmd_name]
        s.add_argument("--offline", action="store_true",
                       help="read the enabled-plugins file instead of asking the node")
        s.add_argument("--data-dir")
        s.add_argument("--config-file")
    return p


def _node_name(args: argparse.Namespace) -> str:
    return args.node or os.environ.get("WARREN_NODENAME") or f"warren@{short_hostname()}"


def _call(args: argparse.Namespace, cmd: str, payload: dict) -> Any:
    try:
        node = parse(_node_name(args))
    except NodeNameError as e:
        raise Failure(str(e), EX_USAGE) from None
    try:
        secret = cookie.read(cookie.cookie_path())
    except cookie.CookieError as e:
        raise Failure(str(e), EX_CONFIG) from None
    client = ControlClient(node, secret, args.timeout).connect()
    try:
        return client.call(cmd, payload)
    finally:
        client.close()


def _offline_state(args: argparse.Namespace) -> tuple[str, Any]:
    try:
        cfg = load({"data_dir": args.data_dir, "config_file": args.config_file})
    except ConfigError as e:
        raise Failure(str(e), EX_CONFIG) from None
    return str(cfg.data_dir), cfg


def _describe_offline(data_dir: str) -> dict:
    return {"node": "", "enabled": plugins.read_enabled(data_dir), "running": [],
            "file": str(plugins.path_in(data_dir)),
            "plugins": [{"name": p.name, "version": plugins.VERSION,
                         "description": p.description} for p in plugins.PLUGINS.values()]}


def show_list(args: argparse.Namespace, state: dict) -> None:
    try:
        pattern = re.compile(args.pattern)
    except re.error as e:
        raise Failure(f"invalid pattern {args.pattern!r}: {e}", EX_USAGE) from None
    rows = [p for p in state["plugins"] if pattern.search(p["name"])]
    if args.explicit or args.enabled:
        rows = [p for p in rows if p["name"] in state["enabled"]]
    if args.formatter == "json":
        print(json.dumps([{"name": p["name"], "version": p["version"],
                           "enabled": "enabled" if p["name"] in state["enabled"]
                           else "not_enabled",
                           "running": p["name"] in state["running"],
                           "description": p["description"]} for p in rows]))
        return
    if not args.quiet:
        print(f'Listing plugins with pattern "{args.pattern}" ...')
        print(" Configured: E = explicitly enabled; e = implicitly enabled")
        where = f"running on {state['node']}" if state["node"] else "running (node not asked)"
        print(f" | Status: * = {where}")
        print(" |/")
    for p in rows:
        e = "E" if p["name"] in state["enabled"] else " "
        r = "*" if p["name"] in state["running"] else " "
        print(f"[{e}{r}] {p['name']:<32} {p['version']}")


def change(args: argparse.Namespace) -> None:
    try:
        wanted = plugins.resolve(args.plugins)
    except plugins.PluginsError as e:
        raise Failure(str(e), EX_DATAERR) from None
    verb = "Enabling" if args.command == "enable" else "Disabling"
    if args.offline:
        data_dir, _ = _offline_state(args)
        try:
            enabled = plugins.read_enabled(data_dir)
        except plugins.PluginsError as e:
            raise Failure(str(e), EX_DATAERR) from None
        new = [p for p in plugins.PLUGINS if p in enabled or p in wanted] \
            if args.command == "enable" else [p for p in enabled if p not in wanted]
        try:
            plugins.write_enabled(data_dir, new)
        except OSError as e:
            raise Failure(f"cannot write {plugins.path_in(data_dir)}: {e.strerror}",
                          EX_CONFIG) from None
        if not args.quiet:
            print(f"{verb} plugins into {plugins.path_in(data_dir)}: {', '.join(wanted)}")
            print("The following plugins have been configured:")
            for p in new:
                print(f"  {p}")
            print("Offline change; changes will take effect at broker restart.")
        return
    before = _call(args, "plugins_list", {})
    state = _call(args, "plugins_change", {"action": args.command, "plugins": wanted})
    if args.quiet:
        return
    print(f"{verb} plugins on node {state['node']}:")
    for p in wanted:
        print(p)
    print("The following plugins have been configured:")
    for p in state["enabled"]:
        print(f"  {p}")
    print(f"Applying plugin configuration to {state['node']}...")
    started = [p for p in state["running"] if p not in before["running"]]
    stopped = [p for p in before["running"] if p not in state["running"]]
    if started:
        print("The following plugins have been enabled:")
        for p in started:
            print(f"  {p}")
        print(f"\nstarted {len(started)} plugins.")
    if stopped:
        print("The following plugins have been disabled:")
        for p in stopped:
            print(f"  {p}")
        print(f"\nstopped {len(stopped)} plugins.")
    if not started and not stopped:
        print("Plugin configuration unchanged.")


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.command == "list":
            if args.offline:
                data_dir, _ = _offline_state(args)
                try:
                    state = _describe_offline(data_dir)
                except plugins.PluginsError as e:
                    raise Failure(str(e), EX_DATAERR) from None
            else:
                state = _call(args, "plugins_list", {})
            show_list(args, state)
        else:
            change(args)
    except Failure as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_status
    except ControlError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
