"""The cookie: the shared secret every node of a cluster and `warrenctl` hold.

It lives in ~/.warren.cookie unless WARREN_COOKIE_FILE names another file. A node creates it
on first start (20 random uppercase letters, mode 0400, as Erlang does for .erlang.cookie).
A cookie that group or others can read is refused: anyone who can read it can run every
warrenctl command against the node, so a readable cookie is a hole, not a warning.
"""

from __future__ import annotations

import os
import secrets
import stat
import string
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "WARREN_COOKIE_FILE"
LENGTH = 20


class CookieError(Exception):
    """The cookie file is missing, unreadable, unsafe or empty (the message says which)."""


def cookie_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    configured = env.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".warren.cookie"


def generate() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(LENGTH))


def ensure(path: Path) -> str:
    """Read the cookie, creating it first if there is none (what a node does at boot)."""
    if not path.exists():
        _create(path)
    return read(path)


def _create(path: Path) -> None:
    # Write a private temporary file, then link it into place: link() fails if another node
    # created the cookie meanwhile, so two nodes starting at once agree on one cookie and
    # nobody ever reads a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, generate().encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path) -> str:
    """The cookie's value; CookieError if the file cannot be used."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CookieError(f"cookie file {path} does not exist: start the node once to create "
                          f"it, or copy the node's cookie there (or point {ENV_VAR} at it)"
                          ) from None
    except OSError as e:
        raise CookieError(f"cannot read cookie file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CookieError(f"cookie file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise CookieError(f"cookie file {path} must be accessible by owner only (its mode is "
                          f"{stat.S_IMODE(st.st_mode):04o}): run chmod 400 {path}")
    try:
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "it is not ASCII text"
        raise CookieError(f"cannot read cookie file {path}: {why}") from None
    if not value:
        raise CookieError(f"cookie file {path} is empty: copy the cluster's cookie into it")
    return value
