"""A replicated queue's settings as RabbitMQ 3.10 derives them: which declare arguments a
quorum queue takes (`check_declare_arguments`), and the machine's configuration from the
queue's arguments and its effective policy (`config_from`).

Theory of operation. RabbitMQ refuses, at declare, a known queue argument that the queue
type does not support ("invalid arg 'x-max-priority' for queue '...' in vhost '/' of queue
type rabbit_quorum_queue"); unknown arguments are kept and ignored, and values it takes but
cannot use (a delivery limit that is not a number) are ignored too. So `config_from` never
raises: by the time it runs the queue exists, and every replica must build the same config.

How arguments and policy combine (RabbitMQ 3.10, quorum queues): limits and TTLs take the
smaller of the two; the dead-letter exchange and routing key take the argument first;
`overflow` and `dead-letter-strategy` take the policy first. `at-least-once` dead-lettering
is in force only with a dead-letter exchange and the `reject-publish` overflow, otherwise it
is at-most-once. Deliberately unlike 3.10, a quorum queue honours `reject-publish-dlx` (the
refused message is nacked and dead-lettered with reason `maxlen`, as a classic queue does):
3.10 takes the argument and silently drops the oldest message instead (`drop-head`), which
loses what the application asked to keep. A classic queue replicated by an ha-* policy runs the same machine with
classic rules: argument first, every overflow mode, x-max-priority, classic ordering.

Message priorities, deliberately as RabbitMQ 4.x rather than 3.10 (which ignores them on a
quorum queue): a quorum queue always serves priorities above 4 before the others, 2:1 (see
state.py's FairShareQueue). RabbitMQ 4.0 to 4.2 still refuse `x-max-priority` on a quorum
queue at declare with 3.10's error, so it stays refused here.
"""

from __future__ import annotations

from typing import Any

from ...amqp.constants import PRECONDITION_FAILED
from ...amqp.errors import AMQPError
from .commands import DEAD_LETTER_STRATEGIES, OVERFLOWS
from .state import PRIORITY_MAX, QueueConfig

# Queue arguments RabbitMQ 3.10 validates at declare for every queue type ...
KNOWN_QUEUE_ARGUMENTS = (
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes",
    "x-max-priority", "x-overflow", "x-queue-mode", "x-queue-version",
    "x-single-active-consumer", "x-queue-type", "x-quorum-initial-group-size",
    "x-delivery-limit", "x-dead-letter-strategy", "x-queue-master-locator",
    "x-queue-leader-locator", "x-initial-cluster-size", "x-max-age",
    "x-stream-max-segment-size-bytes",
)
# ... and those of them a quorum queue supports (rabbit_quorum_queue:capabilities/0); the
# list is the same in 4.0 to 4.2, whose quorum queues order by priority yet refuse
# x-max-priority
QUORUM_QUEUE_ARGUMENTS = (
    "x-expires", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-dead-letter-strategy", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length",
    "x-max-in-memory-bytes", "x-overflow", "x-single-active-consumer", "x-queue-type",
    "x-quorum-initial-group-size", "x-delivery-limit", "x-message-ttl",
    "x-queue-leader-locator",
)
AT_LEAST_ONCE = "at-least-once"


def check_declare_arguments(args: dict, resource: str) -> None:
    """Refuse what a quorum queue cannot be declared with (406), after the checks every queue
    type shares and before the durability checks, in RabbitMQ's order."""
    for key in args:
        if key in KNOWN_QUEUE_ARGUMENTS and key not in QUORUM_QUEUE_ARGUMENTS:
            raise AMQPError(PRECONDITION_FAILED, f"invalid arg '{key}' for {resource} of queue "
                            "type rabbit_quorum_queue")
    if "x-dead-letter-strategy" in args:
        value = args["x-dead-letter-strategy"]
        if not isinstance(value, str | bytes):
            raise AMQPError(PRECONDITION_FAILED, f"invalid arg 'x-dead-letter-strategy' for "
                            f"{resource}: {{unacceptable_type,{_type_name(value)}}}")
        if _text(value) not in DEAD_LETTER_STRATEGIES:
            raise AMQPError(PRECONDITION_FAILED, f"invalid arg 'x-dead-letter-strategy' for "
                            f"{resource}: invalid_dlx_strategy")


def config_from(arguments: dict, policy: dict, queue_type: str | None = None) -> QueueConfig:
    """The machine's settings from the queue's arguments, then its effective policy (see the
    module's docstring for who wins). `queue_type` defaults to the x-queue-type argument."""
    quorum = (queue_type or _text(arguments.get("x-queue-type")) or "classic") == "quorum"
    data: dict[str, Any] = {"queue_type": "quorum" if quorum else "classic"}
    for name, arg, key in (("max_length", "x-max-length", "max-length"),
                           ("max_length_bytes", "x-max-length-bytes", "max-length-bytes"),
                           ("delivery_limit", "x-delivery-limit", "delivery-limit"),
                           ("message_ttl_ms", "x-message-ttl", "message-ttl"),
                           ("expires_ms", "x-expires", "expires")):
        value = _smaller(_int(arguments.get(arg)), _int(policy.get(key)))
        if value is not None:
            # a negative delivery limit acts as 0 in RabbitMQ (count > limit on the first
            # return); other limits are refused negative at declare or policy time
            data[name] = max(0, value)
    arg_overflow = _text(arguments.get("x-overflow"))
    policy_overflow = _text(policy.get("overflow"))
    overflow = (policy_overflow or arg_overflow) if quorum else (arg_overflow or policy_overflow)
    if overflow in OVERFLOWS:
        data["overflow"] = overflow
    dlx = _first(arguments.get("x-dead-letter-exchange"), policy.get("dead-letter-exchange"))
    dlrk = _first(arguments.get("x-dead-letter-routing-key"),
                  policy.get("dead-letter-routing-key"))
    data["dead_letter_exchange"], data["dead_letter_routing_key"] = dlx, dlrk
    strategy = _first(policy.get("dead-letter-strategy"), arguments.get("x-dead-letter-strategy"))
    if quorum and strategy == AT_LEAST_ONCE and dlx is not None \
            and data.get("overflow") == "reject-publish":
        data["dead_letter_strategy"] = AT_LEAST_ONCE
    if isinstance(arguments.get("x-single-active-consumer"), bool):
        data["single_active_consumer"] = arguments["x-single-active-consumer"]
    max_priority = _int(arguments.get("x-max-priority"))
    if not quorum and max_priority is not None and 1 <= max_priority <= PRIORITY_MAX:
        data["max_priority"] = max_priority
    return QueueConfig.from_dict(data)


def _first(*values: Any) -> str | None:
    for value in values:
        text = _text(value)
        if text is not None:
            return text
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes | bytearray):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _smaller(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return type(value).__name__
