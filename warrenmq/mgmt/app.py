"""The management web application: the API under /api/, the console's static files
everywhere else (index.html for /), both from one aiohttp app in the node's event loop."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

from . import api_access, api_live, api_objects, api_overview  # noqa: F401  (routes)
from .router import Context, dispatch

STATIC_DIR = Path(__file__).parent / "static"
# what may be served from STATIC_DIR, read once: the console is a handful of small files
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "application/javascript",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for path in STATIC_DIR.rglob("*"):
        if path.is_file() and path.suffix in _TYPES:
            rel = path.relative_to(STATIC_DIR).as_posix()
            ctype = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or \
                "application/octet-stream"
            files[rel] = (path.read_bytes(), ctype)
    return files


def build_app(ctx: Context) -> web.Application:
    files = _static_files()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/api" or path.startswith("/api/"):
            return await dispatch(ctx, request)
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        rel = path.lstrip("/") or "index.html"
        found = files.get(rel)
        if found is None:
            raise web.HTTPNotFound(text="404 Not Found\n")
        body, ctype = found
        charset = "utf-8" if ctype.startswith(("text/", "application/javascript")) else None
        return web.Response(body=body, content_type=ctype, charset=charset,
                            headers={"Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff"})

    app = web.Application(client_max_size=128 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
