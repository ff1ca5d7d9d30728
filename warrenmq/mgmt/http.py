"""HTTP conventions of RabbitMQ's management API: the error body, JSON in and out, and the
list endpoints' query parameters (page, page_size, name, use_regex, sort, sort_reverse,
columns), applied on the server so a console listing 10,000 queues receives one page."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 500


class ApiError(Exception):
    """An error response: status code and RabbitMQ's {"error": ..., "reason": ...} body."""

    def __init__(self, status: int, error: str, reason: Any, extra: dict | None = None) -> None:
        super().__init__(f"{status} {error}: {reason}")
        self.status = status
        self.error = error
        self.reason = reason
        self.extra = extra or {}

    def response(self) -> web.Response:
        body = {"error": self.error, "reason": self.reason, **self.extra}
        if self.status == 503 and "status" in self.extra:
            body = dict(self.extra)  # health checks answer with their own body
        return json_response(body, self.status)


def not_found() -> ApiError:
    return ApiError(404, "Object Not Found", "Not Found")


def bad_request(reason: Any) -> ApiError:
    return ApiError(400, "bad_request", reason)


def forbidden(reason: str) -> ApiError:
    # RabbitMQ 3.10 answers 401 here too; 403 says "authenticated, but not allowed", which
    # keeps browsers from re-prompting for credentials (the issue asks for 403)
    return ApiError(403, "not_authorised", reason)


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(value), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-cache"})


def no_content() -> web.Response:
    return web.Response(status=204)


def created() -> web.Response:
    return web.Response(status=201)


async def read_json(request: web.Request, default: Any = None) -> Any:
    raw = await request.read()
    if not raw.strip():
        if default is not None:
            return default
        raise bad_request("not_json")
    try:
        value = json.loads(raw)
    except ValueError:
        raise bad_request("not_json") from None
    return value


async def read_object(request: web.Request) -> dict:
    value = await read_json(request, {})
    if not isinstance(value, dict):
        raise bad_request("not_json")
    return value


# -- list endpoints ---------------------------------------------------------------------------
def _get_path(item: dict, dotted: str) -> Any:
    value: Any = item
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _sort_key(value: Any) -> tuple:
    # numbers before strings before everything else, None last, as a total order
    if value is None:
        return (3, "")
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str):
        return (1, value.lower(), value)
    return (2, str(value))


def _columns(items: list[dict], columns: str) -> list[dict]:
    wanted = [c for c in columns.split(",") if c]
    out = []
    for item in items:
        picked: dict = {}
        for col in wanted:
            parts = col.split(".")
            value = _get_path(item, col)
            if value is None and not _has_path(item, parts):
                continue
            target = picked
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = value
        out.append(picked)
    return out


def _has_path(item: dict, parts: list[str]) -> bool:
    value: Any = item
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _int_param(query: Any, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request("Pagination parameters are invalid") from None


class ListQuery:
    """The list parameters of one request, validated up front."""

    def __init__(self, query: Any) -> None:
        self.paged = "page" in query
        self.page = _int_param(query, "page", 1)
        self.page_size = _int_param(query, "page_size", PAGE_SIZE_DEFAULT)
        if self.paged and (self.page < 1 or not 1 <= self.page_size <= PAGE_SIZE_MAX):
            raise ApiError(400, "invalid_pagination_parameters",
                           f"Invalid pagination parameters: page number {self.page}, page "
                           f"size {self.page_size}")
        self.name = query.get("name", "")
        self.use_regex = query.get("use_regex", "false") == "true"
        self.sort = query.get("sort", "")
        self.sort_reverse = query.get("sort_reverse", "false") == "true"
        self.columns = query.get("columns", "")
        self.pattern: re.Pattern[str] | None = None
        if self.name and self.use_regex:
            try:
                self.pattern = re.compile(self.name)
            except re.error as e:
                raise bad_request(f"invalid regular expression {self.name!r}: {e}") from None

    def matches(self, name: str) -> bool:
        if not self.name:
            return True
        if self.pattern is not None:
            return self.pattern.search(name) is not None
        return self.name.lower() in name.lower()


def respond_list(request: web.Request, records: Iterable[Any], render: Any,
                 name_of: Any = None, sort_fast: dict | None = None) -> web.Response:
    """Filter by name, sort, page and pick columns; `render` turns a record into its JSON
    object only for the items of the requested page when the sort key is cheap (`sort_fast`
    maps sort keys to functions over records), which is what keeps 10,000 queues fast."""
    lq = ListQuery(request.query)
    items = list(records)
    total = len(items)
    if lq.name and name_of is not None:
        items = [r for r in items if lq.matches(name_of(r))]
    filtered = len(items)
    fast = (sort_fast or {}).get(lq.sort or "name") if name_of is not None else None
    rendered: list[dict] | None = None
    if fast is not None:
        items.sort(key=lambda r: _sort_key(fast(r)), reverse=lq.sort_reverse)
    else:
        rendered = [render(r) for r in items]
        if lq.name and name_of is None:
            rendered = [o for o in rendered if lq.matches(str(o.get("name", "")))]
            filtered = len(rendered)
        if lq.sort:
            rendered.sort(key=lambda o: _sort_key(_get_path(o, lq.sort)),
                          reverse=lq.sort_reverse)
    if lq.paged:
        page_count = max(math.ceil(filtered / lq.page_size), 1)
        if lq.page > page_count:
            raise ApiError(400, "bad_request", "Page out of range")
        lo = (lq.page - 1) * lq.page_size
        hi = lo + lq.page_size
        page = rendered[lo:hi] if rendered is not None else [render(r) for r in items[lo:hi]]
        if lq.columns:
            page = _columns(page, lq.columns)
        return json_response({"filtered_count": filtered, "item_count": len(page),
                              "items": page, "page": lq.page, "page_count": page_count,
                              "page_size": lq.page_size, "total_count": total})
    out = rendered if rendered is not None else [render(r) for r in items]
    if lq.columns:
        out = _columns(out, lq.columns)
    return json_response(out)
