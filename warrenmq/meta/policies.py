"""Policies: validation of a definition, and which policy applies to a queue or exchange.

A policy matches a queue or exchange when its apply-to covers the kind and its pattern (a
regular expression, searched, not anchored) matches the name. Of the matching policies the
highest priority wins. RabbitMQ leaves a tie to the order of its parameter table, which no
operator can see; we break ties by policy name (the first in sort order wins) so every node
of a cluster picks the same policy.

Validation follows RabbitMQ 3.10's rules (rabbit_policies, rabbit_mirror_queue_misc): every
key must be known, each value of the right type and range; `ha-*` keys are validated now and
act once queues are replicated. Messages use JSON notation for values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .machine import MetaMachine
    from .records import Policy

APPLY_TO = ("all", "queues", "exchanges")


class PolicyError(ValueError):
    """The policy is invalid; the message says why, as RabbitMQ's validation would."""


def _j(value: Any) -> str:
    return json.dumps(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _non_neg_int(what: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if _is_int(v) and v >= 0 else f"{_j(v)} is not a valid {what}"
    return check


def _pos_int(what: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if _is_int(v) and v >= 1 else f"{_j(v)} is not a valid {what}"
    return check


def _string(what: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if isinstance(v, str) else f"{_j(v)} is not a valid {what}"
    return check


def _one_of(what: str, *values: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in values and type(v) is type(values[0]) else \
            f"{_j(v)} is not a valid {what} value"
    return check


# key -> check(value) -> error text or None (rabbit_policies:validate_policy0/2 in 3.10)
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "alternate-exchange": _string("alternate exchange name"),
    "dead-letter-exchange": _string("dead letter exchange name"),
    "dead-letter-routing-key": _string("dead letter routing key"),
    "dead-letter-strategy": _one_of("dead-letter-strategy", "at-most-once", "at-least-once"),
    "message-ttl": _non_neg_int("message TTL"),
    "expires": _pos_int("queue expiry"),
    "max-length": _non_neg_int("maximum length"),
    "max-length-bytes": _non_neg_int("maximum length in bytes"),
    "max-in-memory-length": _non_neg_int("maximum memory in bytes"),
    "max-in-memory-bytes": _non_neg_int("maximum memory in bytes"),
    "delivery-limit": _non_neg_int("delivery limit"),
    "queue-mode": _one_of("queue mode", "default", "lazy"),
    "queue-version": _one_of("queue version", 1, 2),
    "overflow": _one_of("overflow", "drop-head", "reject-publish", "reject-publish-dlx"),
    "queue-master-locator": _one_of("queue-master-locator", "min-masters", "client-local",
                                    "random"),
    "queue-leader-locator": _one_of("queue-leader-locator", "client-local", "balanced"),
    "max-age": _string("max-age"),
    "stream-max-segment-size-bytes": _non_neg_int("segment size in bytes"),
}

_HA_KEYS = ("ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size",
            "ha-promote-on-shutdown", "ha-promote-on-failure")


def _validate_ha(d: dict) -> str | None:
    if not any(k in d for k in _HA_KEYS):
        return None
    mode = d.get("ha-mode")
    if mode is None:
        return ("ha-mode must be specified to specify ha-params, ha-sync-mode or "
                "ha-promote-on-shutdown")
    params = d.get("ha-params")
    if mode == "all":
        if "ha-params" in d:
            return 'ha-mode="all" does not take parameters'
    elif mode == "exactly":
        if params is None:
            return 'ha-mode="exactly" takes an integer, none given'
        if not _is_int(params) or params <= 0:
            return f'ha-mode="exactly" takes an integer, {_j(params)} given'
    elif mode == "nodes":
        if "ha-params" not in d:
            return 'ha-mode="nodes" takes a list of strings, none given'
        if not isinstance(params, list) or not params or \
                not all(isinstance(p, str) for p in params):
            return f'ha-mode="nodes" takes a list of strings, {_j(params)} given'
    else:
        return f"{_j(mode)} is not a valid ha-mode value"
    sync = d.get("ha-sync-mode", "manual")
    if sync not in ("manual", "automatic"):
        return f'ha-sync-mode must be "manual" or "automatic", got {_j(sync)}'
    if "ha-sync-batch-size" in d:
        size = d["ha-sync-batch-size"]
        if not _is_int(size) or size <= 0:
            return f"ha-sync-batch-size takes an integer greater than 0, {_j(size)} given"
    for key in ("ha-promote-on-shutdown", "ha-promote-on-failure"):
        if key in d and d[key] not in ("always", "when-synced"):
            return f'{key} must be "always" or "when-synced", got {_j(d[key])}'
    return None


def validate_definition(definition: Any) -> None:
    if not isinstance(definition, dict):
        raise PolicyError(f"definition must be a dictionary: {_j(definition)}")
    if not definition:
        raise PolicyError("no policy provided")
    unknown = [k for k in definition if k not in _CHECKS and k not in _HA_KEYS]
    if unknown:
        listed = ", ".join(_j({k: definition[k]}) for k in unknown)
        raise PolicyError(f"{listed} are not recognised policy settings")
    for key, check in _CHECKS.items():
        if key in definition:
            why = check(definition[key])
            if why:
                raise PolicyError(why)
    why = _validate_ha(definition)
    if why:
        raise PolicyError(why)


def validate(pattern: Any, definition: Any, priority: Any, apply_to: Any) -> None:
    """Raise PolicyError unless the policy is valid (RabbitMQ's checks and messages)."""
    if not _is_int(priority):
        raise PolicyError(f"{_j(priority)} priority must be a number")
    if apply_to not in APPLY_TO:
        raise PolicyError(f"apply-to '{apply_to}' unrecognised; should be 'queues', "
                          "'exchanges' or 'all'")
    if not isinstance(pattern, str):
        raise PolicyError(f"pattern should be a string, got {_j(pattern)}")
    try:
        re.compile(pattern)
    except re.error as e:
        raise PolicyError(f"pattern should be regular expression but is invalid: {e}") from None
    validate_definition(definition)


def parse_definition(text: str) -> dict:
    """A definition as given on a command line (JSON text)."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise PolicyError(f"could not parse JSON document {text!r}: {e}") from None
    validate_definition(value)
    return value


def _matches(policy: Policy, kind: str, name: str) -> bool:
    if policy.apply_to != "all" and policy.apply_to != kind + "s":
        return False
    try:
        return re.search(policy.pattern, name) is not None
    except re.error:
        return False


def effective_policy(meta: MetaMachine, vhost: str, kind: str, name: str) -> Policy | None:
    """The policy that applies to the queue or exchange `name` (kind "queue"/"exchange")."""
    record = meta.vhosts.get(vhost)
    if record is None or not record.policies:
        return None
    best: Policy | None = None
    for policy in sorted(record.policies.values(), key=lambda p: p.name):
        if _matches(policy, kind, name) and (best is None or policy.priority > best.priority):
            best = policy
    return best


def effective_value(meta: MetaMachine, vhost: str, kind: str, name: str, key: str) -> Any:
    """One key of the effective policy's definition (None when no policy sets it)."""
    policy = effective_policy(meta, vhost, kind, name)
    return None if policy is None else policy.definition.get(key)


def sorted_for_listing(policies: list[Policy]) -> list[Policy]:
    """list_policies order: ascending priority, as rabbitmqctl prints them."""
    return sorted(policies, key=lambda p: (p.priority, p.name))
