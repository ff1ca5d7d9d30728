"""A small blocking HTTP client for the management API tests (urllib, basic auth, JSON)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

TIMEOUT_S = 30.0


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""


def q(name: str) -> str:
    """A path segment (vhost, queue, user name) as the API wants it: %2F for '/'."""
    return quote(name, safe="")


@dataclass
class Api:
    base: str  # http://127.0.0.1:PORT
    user: str | None = "guest"
    password: str | None = "guest"

    def as_user(self, user: str | None, password: str | None = None) -> Api:
        return Api(self.base, user, password)

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                return _reply(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as e:
            return _reply(e.code, e.read(), dict(e.headers))

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PUT", path, body if body is not None else {}, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body if body is not None else {}, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.call("DELETE", path, **kw)

    def ok(self, method: str, path: str, body: Any = None, status: int | tuple = (200, 201, 204)
           ) -> Any:
        r = self.call(method, path, body)
        want = status if isinstance(status, tuple) else (status,)
        assert r.status in want, f"{method} {path} -> {r.status} {r.text}"
        return r.body


def _reply(status: int, raw: bytes, headers: dict[str, str]) -> Reply:
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    return Reply(status, body, headers, text)
