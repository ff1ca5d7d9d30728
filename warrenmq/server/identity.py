"""A node's identity inside Raft: a positive 63-bit id derived from its name and a random
token made at first start (and again after `reset`), kept in the data directory.

The token matters: a node that lost its disk (or was reset) must not reuse the Raft id of
its former self, whose votes and log the other members still remember.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

FILE = "node.id"


def node_id(name: str, token: str) -> int:
    digest = hashlib.blake2b(f"{name}/{token}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1) or 1


class IdentityError(Exception):
    pass


def load(data_dir: Path, name: str) -> int:
    """The node's Raft id; the file also records whose directory this is: a node started
    under another name on it is refused (its queues and votes belong to the first name)."""
    path = Path(data_dir) / FILE
    if path.exists():
        token, _, owner = path.read_text().strip().partition(" ")
        if owner and owner != name:
            raise IdentityError(
                f"the data directory {data_dir} belongs to node {owner}, not {name}: start "
                f"the node as {owner}, or give {name} its own data directory")
    else:
        token = secrets.token_hex(16)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{token} {name}\n")
        tmp.replace(path)
    return node_id(name, token)
