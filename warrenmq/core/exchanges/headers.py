"""headers: route by the message's headers table against the binding arguments.

`x-match` is `all` (default), `any`, `all-with-x` or `any-with-x`; without `-with-x`, binding
arguments whose names start with `x-` are not compared. A binding argument of void value
matches a header of that name with any value, as in RabbitMQ.
"""

from __future__ import annotations

from .base import ExchangeType

_MODES = ("all", "any", "all-with-x", "any-with-x")


class HeadersExchange(ExchangeType):
    def route(self, routing_key, headers):
        if not self.bindings:
            return ()
        hdrs = headers() or {}
        return {b.dest for b in self.bindings if _matches(b.arguments, hdrs)}

    @staticmethod
    def validate_binding(arguments: dict) -> str | None:
        mode = arguments.get("x-match", "all")
        if isinstance(mode, bytes):
            mode = mode.decode()
        if mode not in _MODES:
            return f"Invalid x-match field value {mode!r}; expected all, any, all-with-x, or any-with-x"
        return None


def _matches(arguments: dict, headers: dict) -> bool:
    mode = arguments.get("x-match", "all")
    if isinstance(mode, bytes):
        mode = mode.decode()
    with_x = mode.endswith("-with-x")
    want_all = mode.startswith("all")
    checked = 0
    for key, value in arguments.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        checked += 1
        present = key in headers
        ok = present and (value is None or _equal(headers[key], value))
        if want_all and not ok:
            return False
        if not want_all and ok:
            return True
    return want_all


def _equal(a, b) -> bool:
    # strings and byte arrays compare as the same kind of value, as in RabbitMQ
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    if isinstance(a, (bytes, bytearray)) or isinstance(b, (bytes, bytearray)):
        return isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray)) and \
            bytes(a) == bytes(b)
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b
