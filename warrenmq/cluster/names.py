"""Node names: NAME@HOST, or NAME@HOST:PORT when the cluster port is not the default.

A name is both an identity (NAME@HOST, what `status` prints and a cluster records) and an
address (HOST and the cluster port). The port suffix exists so several nodes can share a host
in tests and demos; IPv6 literals go in brackets (`warren@[::1]:25673`).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

DEFAULT_DIST_PORT = 25672

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_HOST = re.compile(r"^[A-Za-z0-9_.\-]+$")


class NodeNameError(ValueError):
    """The text is not a valid node name."""


class HostUnresolved(OSError):
    """The host part of a node name does not resolve to an address."""


@dataclass(frozen=True)
class NodeName:
    name: str
    host: str
    port: int = DEFAULT_DIST_PORT

    @property
    def identity(self) -> str:
        """NAME@HOST: the node's name without the port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}@{host}"

    def __str__(self) -> str:
        if self.port == DEFAULT_DIST_PORT:
            return self.identity
        return f"{self.identity}:{self.port}"


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def parse(text: str, default_port: int = DEFAULT_DIST_PORT) -> NodeName:
    """Parse NAME, NAME@HOST or NAME@HOST:PORT (a bare NAME means this host)."""
    if not text:
        raise NodeNameError("node name is empty")
    name, at, rest = text.partition("@")
    if not _NAME.match(name):
        raise NodeNameError(f"invalid node name '{text}': the part before '@' may only hold "
                            "letters, digits, '_', '-' and '.'")
    if not at:
        return NodeName(name, short_hostname(), default_port)
    port_text = ""
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not host:
            raise NodeNameError(f"invalid node name '{text}': unclosed '[' in the host")
        if tail:
            if not tail.startswith(":"):
                raise NodeNameError(f"invalid node name '{text}': expected ':PORT' after ']'")
            port_text = tail[1:]
    else:
        host, colon, port_text = rest.partition(":")
        if colon and not port_text:
            raise NodeNameError(f"invalid node name '{text}': missing port after ':'")
        if not _HOST.match(host or "-") or not host:
            raise NodeNameError(f"invalid node name '{text}': expected NAME@HOST or "
                                "NAME@HOST:PORT")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise NodeNameError(f"invalid node name '{text}': port '{port_text}' is not a "
                                "number from 1 to 65535")
        port = int(port_text)
    return NodeName(name, host, port)


def resolve(node: NodeName) -> list[tuple[int, tuple]]:
    """The addresses to try for a node's cluster port: [(family, sockaddr)], IPv4 first."""
    try:
        infos = socket.getaddrinfo(node.host, node.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HostUnresolved(f"host '{node.host}' does not resolve ({e.strerror})") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    seen: list[tuple[int, tuple]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    return seen
