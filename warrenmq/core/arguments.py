"""Queue and exchange arguments: validation at declare, equivalence at redeclare.

RabbitMQ refuses a redeclaration whose properties or (known) arguments differ from the
existing entity's with 406 PRECONDITION_FAILED; unknown arguments are stored and ignored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..amqp.constants import PRECONDITION_FAILED
from ..amqp.errors import AMQPError

# Arguments compared on queue redeclaration (rabbit_amqqueue's declare_args()).
QUEUE_EQUIVALENCE_ARGS = (
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes",
    "x-max-priority", "x-overflow", "x-queue-mode", "x-queue-version", "x-single-active-consumer",
    "x-queue-type", "x-quorum-initial-group-size", "x-delivery-limit", "x-queue-master-locator",
    "x-queue-leader-locator",
)
EXCHANGE_EQUIVALENCE_ARGS = ("alternate-exchange",)

_OVERFLOW = ("drop-head", "reject-publish", "reject-publish-dlx")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _invalid(arg: str, resource: str, why: str) -> AMQPError:
    return AMQPError(PRECONDITION_FAILED, f"invalid arg '{arg}' for {resource}: {why}")


def validate_queue_args(args: dict, resource: str) -> None:
    for key, check in _QUEUE_CHECKS.items():
        if key in args:
            why = check(args[key], args)
            if why:
                raise _invalid(key, resource, why)


def _non_neg_int(v: Any, _args: dict) -> str | None:
    if not _is_int(v):
        return f'"expected integer, got {_type_name(v)}"'
    if v < 0:
        return f"{{value_negative,{v}}}"
    return None


def _pos_int(v: Any, _args: dict) -> str | None:
    if not _is_int(v):
        return f'"expected integer, got {_type_name(v)}"'
    if v == 0:
        return "{value_zero,0}"
    if v < 0:
        return f"{{value_negative,{v}}}"
    return None


def _string(v: Any, _args: dict) -> str | None:
    return None if isinstance(v, (str, bytes)) else f"{{unacceptable_type,{_type_name(v)}}}"


def _dlrk(v: Any, args: dict) -> str | None:
    if not isinstance(v, (str, bytes)):
        return f"{{unacceptable_type,{_type_name(v)}}}"
    if "x-dead-letter-exchange" not in args:
        return "{missing_dead_letter_exchange}"
    return None


def _max_priority(v: Any, _args: dict) -> str | None:
    why = _non_neg_int(v, _args)
    if why:
        return why
    return f"{{value_too_large,{v},255}}" if v > 255 else None


def _one_of(*allowed: str):
    def check(v: Any, _args: dict) -> str | None:
        text = v.decode() if isinstance(v, bytes) else v
        return None if text in allowed else f"{{invalid_value,{text!r}}}"
    return check


def _queue_type(v: Any, _args: dict) -> str | None:
    text = v.decode() if isinstance(v, bytes) else v
    if text in ("classic", "quorum"):
        return None
    if text == "stream":
        return f"queue type '{text}' is not supported by this node yet"
    return f"{{invalid_value,{text!r}}}"


def _bool(v: Any, _args: dict) -> str | None:
    return None if isinstance(v, bool) else f"{{unacceptable_type,{_type_name(v)}}}"


def _ttl(v: Any, _args: dict) -> str | None:
    why = _non_neg_int(v, _args)
    if why:
        return why
    return f"{{value_too_large,{v}}}" if v > 0xFFFFFFFF else None


def _expires(v: Any, _args: dict) -> str | None:
    why = _pos_int(v, _args)
    if why:
        return why
    return f"{{value_too_large,{v}}}" if v > 0xFFFFFFFF else None


_QUEUE_CHECKS = {
    "x-expires": _expires,
    "x-message-ttl": _ttl,
    "x-dead-letter-exchange": _string,
    "x-dead-letter-routing-key": _dlrk,
    "x-max-length": _non_neg_int,
    "x-max-length-bytes": _non_neg_int,
    "x-max-priority": _max_priority,
    "x-overflow": _one_of(*_OVERFLOW),
    "x-queue-mode": _one_of("default", "lazy"),
    "x-queue-type": _queue_type,
    "x-single-active-consumer": _bool,
}


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "long"
    if isinstance(v, float):
        return "double"
    if isinstance(v, Decimal):
        return "decimal"
    if isinstance(v, (str, bytes)):
        return "longstr"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, list):
        return "array"
    return type(v).__name__


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bytes):
        a = a.decode(errors="replace")
    if isinstance(b, bytes):
        b = b.decode(errors="replace")
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return str(v)


def _inequivalent(arg: str, resource: str, received: Any, current: Any) -> AMQPError:
    return AMQPError(PRECONDITION_FAILED,
                     f"inequivalent arg '{arg}' for {resource}: received '{_fmt(received)}' but "
                     f"current is '{_fmt(current)}'")


def _check_args(keys: tuple[str, ...], received: dict, current: dict, resource: str) -> None:
    for key in keys:
        r, c = received.get(key), current.get(key)
        if key == "x-queue-type":
            r, c = r or "classic", c or "classic"
        if r is None and c is None:
            continue
        if r is None or c is None or not _same(r, c):
            if r is not None and c is not None and _type_name(r) == _type_name(c):
                raise _inequivalent(key, resource, r, c)
            if c is None:
                raise AMQPError(PRECONDITION_FAILED,
                                f"inequivalent arg '{key}' for {resource}: received the value "
                                f"'{_fmt(r)}' of type '{_type_name(r)}' but current is none")
            if r is None:
                raise AMQPError(PRECONDITION_FAILED,
                                f"inequivalent arg '{key}' for {resource}: received none but "
                                f"current is the value '{_fmt(c)}' of type '{_type_name(c)}'")
            raise AMQPError(PRECONDITION_FAILED,
                            f"inequivalent arg '{key}' for {resource}: received the value "
                            f"'{_fmt(r)}' of type '{_type_name(r)}' but current is the value "
                            f"'{_fmt(c)}' of type '{_type_name(c)}'")


def check_exchange_equivalence(x, type_: str, durable: bool, auto_delete: bool, internal: bool,
                               args: dict, resource: str) -> None:
    if x.type != type_:
        raise _inequivalent("type", resource, type_, x.type)
    if x.durable != durable:
        raise _inequivalent("durable", resource, durable, x.durable)
    if x.auto_delete != auto_delete:
        raise _inequivalent("auto_delete", resource, auto_delete, x.auto_delete)
    if x.internal != internal:
        raise _inequivalent("internal", resource, internal, x.internal)
    _check_args(EXCHANGE_EQUIVALENCE_ARGS, args, x.arguments, resource)


def check_queue_equivalence(record, durable: bool, exclusive: bool, auto_delete: bool,
                            args: dict, resource: str) -> None:
    if record.durable != durable:
        raise _inequivalent("durable", resource, durable, record.durable)
    if record.auto_delete != auto_delete:
        raise _inequivalent("auto_delete", resource, auto_delete, record.auto_delete)
    _check_args(QUEUE_EQUIVALENCE_ARGS, args, record.arguments, resource)
