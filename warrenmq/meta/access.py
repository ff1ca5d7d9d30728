"""Authentication and authorisation checks over the metadata (RabbitMQ's rules).

Passwords are RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt +
password)) with a 4-byte salt, so definitions move between RabbitMQ and WarrenMQ.
Permission patterns are regular expressions searched (not anchored) in the resource name,
and the empty pattern grants nothing, as in RabbitMQ.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from .records import Permission, User

if TYPE_CHECKING:
    from .machine import MetaMachine


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def check_password(user: User, password: str) -> bool:
    try:
        raw = base64.b64decode(user.password_hash)
    except ValueError:
        return False
    if user.hashing_algorithm == "rabbit_password_hashing_sha512":
        salt, want = raw[:4], raw[4:]
        got = hashlib.sha512(salt + password.encode("utf-8")).digest()
    elif user.hashing_algorithm == "rabbit_password_hashing_md5":
        salt, want = raw[:4], raw[4:]
        got = hashlib.md5(salt + password.encode("utf-8")).digest()
    else:
        salt, want = raw[:4], raw[4:]
        got = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return bool(want) and hmac.compare_digest(got, want)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def permitted(permission: Permission | None, kind: str, name: str) -> bool:
    """kind is 'configure', 'write' or 'read'."""
    if permission is None:
        return False
    pattern = getattr(permission, kind)
    if pattern == "":
        return False
    try:
        return _compiled(pattern).search(name) is not None
    except re.error:
        return False


def topic_permitted(meta: MetaMachine, user: str, vhost: str, exchange: str, kind: str,
                    routing_key: str) -> bool:
    """Topic authorisation (RabbitMQ's internal backend): with no topic permission for this
    user, vhost and exchange, everything is allowed; otherwise the routing key must match the
    'write' (publish) or 'read' (bind) pattern, after expanding {username} and {vhost}."""
    per_exchange = meta.topic_permissions.get((user, vhost))
    if not per_exchange:
        return True
    tp = per_exchange.get(exchange)
    if tp is None:
        return True
    pattern = getattr(tp, kind).replace("{username}", user).replace("{vhost}", vhost)
    if pattern == "":
        return False
    try:
        return _compiled(pattern).search(routing_key) is not None
    except re.error:
        return False
