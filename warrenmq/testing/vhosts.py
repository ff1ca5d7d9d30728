"""Virtual hosts for tests: the `VirtualHost` a test gets, and how they are created.

On the embedded broker a vhost is created through the node's command table (what warrenctl
uses). On an external broker AMQP offers no way to create one, so `ExternalBroker` uses the
RabbitMQ management HTTP API (`PUT /api/vhosts/NAME`, `PUT /api/permissions/NAME/USER`,
`DELETE /api/vhosts/NAME`), by default on port 15672 of the AMQP host with the AMQP
credentials. Without that API (plugin disabled, or a user without the administrator tag)
fresh vhosts cannot be had; `shared=True` then hands every test the URL's own vhost,
unisolated, and tests keep apart by naming what they declare with `VirtualHost.unique()`.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlparse

from . import helpers
from .client import Address

MGMT_DEFAULT_PORT = 15672
MGMT_TIMEOUT_S = 10.0


class VhostUnavailable(Exception):
    """Fresh vhosts cannot be created on this broker (the message says why and what to do)."""


@dataclass
class VirtualHost:
    """A vhost for one test: `url` is its AMQP URL; `str(vhost)` is the URL too."""

    name: str
    url: str
    isolated: bool = True  # False: the external broker's shared vhost (see module notes)

    def __str__(self) -> str:
        return self.url

    def unique(self, prefix: str = "t") -> str:
        """A name no other test uses: what to call queues and exchanges when `isolated` is
        False (harmless when it is True)."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def message_count(self, queue: str) -> int:
        return helpers.message_count(self.url, queue)

    def wait_for_messages(self, queue: str, count: int,
                          timeout_s: float = helpers.DEFAULT_TIMEOUT_S) -> None:
        helpers.wait_for_messages(self.url, queue, count, timeout_s)

    def peek(self, queue: str, limit: int | None = None) -> list[helpers.PeekedMessage]:
        return helpers.peek_messages(self.url, queue, limit)

    def assert_dead_lettered(self, queue: str, **match: Any) -> helpers.PeekedMessage:
        return helpers.assert_dead_lettered(self.url, queue, **match)


class ManagementAPI:
    """The few calls of RabbitMQ's management HTTP API that provisioning needs."""

    def __init__(self, base_url: str, user: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method,
                                     headers={"Authorization": self._auth,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=MGMT_TIMEOUT_S) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:200]
            raise VhostUnavailable(f"the management API at {self.base_url} answered "
                                   f"{method} {path} with {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise VhostUnavailable(f"no management API at {self.base_url} ({reason})"
                                   ) from None
        return json.loads(raw) if raw else None

    def check(self) -> None:
        """Raise VhostUnavailable unless the API answers these credentials."""
        self.request("GET", "/api/overview")


class ExternalBroker:
    """A broker the test suite did not start (`--warren-external URL`)."""

    def __init__(self, url: str, mgmt_url: str | None = None, shared: bool = False) -> None:
        self.address = Address.from_url(url)  # ValueError for a URL that is not amqp://
        a = self.address
        self.host, self.port, self.user, self.password = a.host, a.port, a.user, a.password
        self.vhost = a.vhost
        self.url = self.url_for(a.vhost)
        self.shared = shared
        if mgmt_url is None:
            mgmt_url = f"http://{a.host}:{MGMT_DEFAULT_PORT}"
        parsed = urlparse(mgmt_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"expected an http(s):// management URL, got {mgmt_url!r}")
        user = unquote(parsed.username) if parsed.username else a.user
        password = unquote(parsed.password) if parsed.password else a.password
        netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
        self.mgmt = ManagementAPI(f"{parsed.scheme}://{netloc}{parsed.path}", user, password)
        self._mgmt_checked: VhostUnavailable | bool = False

    def url_for(self, vhost: str = "/", user: str | None = None,
                password: str | None = None) -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        return (f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:"
                f"{self.port}/{quote(vhost, safe='')}")

    def management_available(self) -> bool:
        if self._mgmt_checked is False:
            try:
                self.mgmt.check()
                self._mgmt_checked = True
            except VhostUnavailable as e:
                self._mgmt_checked = e
        return self._mgmt_checked is True

    def add_vhost(self, name: str) -> None:
        self.mgmt.request("PUT", f"/api/vhosts/{quote(name, safe='')}", {})

    def set_permissions(self, vhost: str, user: str | None = None, configure: str = ".*",
                        write: str = ".*", read: str = ".*") -> None:
        user = self.user if user is None else user
        self.mgmt.request("PUT", f"/api/permissions/{quote(vhost, safe='')}/"
                          f"{quote(user, safe='')}",
                          {"configure": configure, "write": write, "read": read})

    def delete_vhost(self, name: str) -> None:
        self.mgmt.request("DELETE", f"/api/vhosts/{quote(name, safe='')}")

    def unavailable_reason(self) -> str:
        return str(self._mgmt_checked) if isinstance(self._mgmt_checked, Exception) else ""
