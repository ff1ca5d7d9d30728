"""Routing and authorisation of API requests.

Paths are matched on the raw path split at '/', each segment percent-decoded afterwards, so
a vhost named '/' travels as %2F exactly as RabbitMQ's API expects. Every route names the
tag it needs, with RabbitMQ's hierarchy: administrator > monitoring, policymaker >
management; a user with none of these tags cannot use the API at all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from ..amqp.errors import AMQPError
from .http import ApiError, forbidden, not_found

if TYPE_CHECKING:
    from ..core.node import Node
    from ..meta.records import User, VHost
    from .stats import Sampler

SYNC_DEADLINE_S = 30.0
REALM = 'Basic realm="WarrenMQ Management"'

# tag -> the tags that satisfy it
SATISFIES = {
    "management": {"management", "policymaker", "monitoring", "administrator"},
    "policymaker": {"policymaker", "administrator"},
    "monitoring": {"monitoring", "administrator"},
    "administrator": {"administrator"},
}
REFUSAL = {
    "management": "Not management user",
    "policymaker": "User not authorised to access object",
    "monitoring": "Not monitor user",
    "administrator": "Not administrator user",
}


class Context:
    """What handlers reach: the runtime (its app and node change across stop_app/start_app,
    so they are always looked up, never kept) and the rate sampler."""

    def __init__(self, runtime: Any, sampler: Sampler) -> None:
        self.rt = runtime
        self.sampler = sampler

    @property
    def node(self) -> Node:
        return self.rt.app.node

    async def synced(self) -> None:
        """Wait until every change made so far is on disk (the reply then means durable)."""
        app = self.rt.app
        journal = app.journal
        if journal is None or not getattr(journal, "durable", True):
            app.schedule_flush()
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        journal.after_sync(lambda: done.done() or done.set_result(None))
        app.schedule_flush()
        try:
            await asyncio.wait_for(done, SYNC_DEADLINE_S)
        except TimeoutError:
            raise ApiError(500, "internal_error", "the change was applied but the write-ahead "
                           f"log did not confirm it within {SYNC_DEADLINE_S:g}s") from None


@dataclass
class Call:
    ctx: Context
    request: web.Request
    user: User
    params: dict[str, str] = field(default_factory=dict)

    @property
    def node(self) -> Node:
        return self.ctx.node

    def has(self, tag: str) -> bool:
        return bool(SATISFIES[tag] & set(self.user.tags))

    def require(self, tag: str) -> None:
        if not self.has(tag):
            raise forbidden(REFUSAL[tag])

    @property
    def sees_everything(self) -> bool:
        """Monitoring users and administrators see every vhost, connection and channel."""
        return self.has("monitoring")

    def can_access_vhost(self, name: str) -> bool:
        return self.sees_everything or (self.user.name, name) in self.node.meta.permissions

    def vhost(self, name: str | None = None) -> VHost:
        """The vhost of the path (404 if missing, 403 if this user may not see it)."""
        name = self.params["vhost"] if name is None else name
        v = self.node.meta.vhosts.get(name)
        if v is None:
            raise not_found()
        if not self.can_access_vhost(name):
            raise forbidden("User not authorised to access virtual host")
        return v

    def visible_vhosts(self) -> list[VHost]:
        return [v for v in self.node.meta.vhosts.values() if self.can_access_vhost(v.name)]


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass
class Route:
    method: str
    parts: list[str]
    tag: str
    handler: Handler


ROUTES: list[Route] = []


def route(method: str, pattern: str, tag: str = "management") -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ROUTES.append(Route(method, pattern.strip("/").split("/"), tag, fn))
        return fn
    return register


def match(path: str) -> list[tuple[Route, dict[str, str]]]:
    segments = [unquote(s) for s in path.strip("/").split("/")]
    found = []
    for r in ROUTES:
        if len(r.parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, seg in zip(r.parts, segments, strict=True):
            if part.startswith("{"):
                params[part[1:-1]] = seg
            elif part != seg:
                break
        else:
            found.append((r, params))
    return found


def authenticate(ctx: Context, request: web.Request) -> User:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        raise ApiError(401, "not_authorized", "Not_Authorized")
    try:
        username, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "not_authorized", "Not_Authorized") from None
    node = ctx.node
    peer = request.transport.get_extra_info("peername") if request.transport else None
    refusal = node.authenticate(username, password, tuple(peer[:2]) if peer else None)
    if refusal is not None:
        raise ApiError(401, "not_authorized", "Login failed")
    user = node.meta.users[username]
    if not SATISFIES["management"] & set(user.tags):
        raise ApiError(401, "not_authorized", "Not management user")
    return user


async def dispatch(ctx: Context, request: web.Request) -> web.StreamResponse:
    try:
        candidates = match(request.raw_path.split("?", 1)[0])
        if not candidates:
            raise not_found()
        chosen = [(r, p) for r, p in candidates if r.method == request.method]
        if not chosen:
            allowed = sorted({r.method for r, _ in candidates})
            raise ApiError(405, "method_not_allowed", f"allowed: {', '.join(allowed)}")
        if not ctx.rt.app.running:
            raise ApiError(503, "service_unavailable", "the node's app is stopped")
        r, params = chosen[0]
        user = authenticate(ctx, request)
        call = Call(ctx, request, user, params)
        call.require(r.tag)
        return await r.handler(call)
    except ApiError as e:
        resp = e.response()
        if e.status == 401 and "Authorization" not in request.headers:
            # only to clients that sent no credentials: with a refused login the header would
            # make a browser pop up its own dialog over the console's login form
            resp.headers["WWW-Authenticate"] = REALM
        return resp
    except AMQPError as e:
        return amqp_error(e).response()


def amqp_error(e: AMQPError) -> ApiError:
    """An AMQP refusal from the shared code paths, as the API reports it."""
    if e.reply_code == 404:
        return ApiError(404, "not_found", e.text)
    if e.reply_code == 403:
        return forbidden(e.text)
    return ApiError(400, "bad_request", e.text)
