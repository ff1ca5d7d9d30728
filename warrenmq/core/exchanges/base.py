"""The exchange-type protocol and the binding record shared by all types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple


class Dest(NamedTuple):
    kind: str  # "queue" | "exchange"
    name: str


def freeze(value: Any) -> Any:
    """A hashable, order-independent image of a field table (binding arguments)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


class Binding:
    """One binding of an exchange; equal when destination, key and arguments are equal."""

    __slots__ = ("dest", "routing_key", "args_key", "arguments")

    def __init__(self, dest: Dest, routing_key: str, args_key: Any, arguments: dict) -> None:
        self.dest = dest
        self.routing_key = routing_key
        self.args_key = args_key  # freeze(arguments)
        self.arguments = arguments

    def _key(self) -> tuple:
        return (self.dest, self.routing_key, self.args_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Binding) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def make_binding(dest: Dest, routing_key: str, arguments: dict | None) -> Binding:
    arguments = arguments or {}
    return Binding(dest, routing_key, freeze(arguments), arguments)


class ExchangeType(ABC):
    """Holds the bindings of one exchange and routes by them."""

    def __init__(self) -> None:
        self.bindings: set[Binding] = set()

    def add(self, binding: Binding) -> bool:
        if binding in self.bindings:
            return False
        self.bindings.add(binding)
        self._added(binding)
        return True

    def remove(self, binding: Binding) -> bool:
        if binding not in self.bindings:
            return False
        self.bindings.discard(binding)
        self._removed(binding)
        return True

    def remove_dest(self, dest: Dest) -> list[Binding]:
        gone = [b for b in self.bindings if b.dest == dest]
        for b in gone:
            self.remove(b)
        return gone

    def _added(self, binding: Binding) -> None:  # noqa: B027 - optional index hook
        """Types that index their bindings (direct, topic, fanout) update the index here."""

    def _removed(self, binding: Binding) -> None:  # noqa: B027 - optional index hook
        """The inverse of _added."""

    @abstractmethod
    def route(self, routing_key: str, headers: Callable[[], dict | None]) -> Iterable[Dest]:
        """The destinations of a message with this routing key (headers read lazily)."""

    @staticmethod
    def validate_binding(arguments: dict) -> str | None:
        """An error text if these binding arguments are invalid for the type."""
        return None
