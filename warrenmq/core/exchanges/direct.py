"""direct: a message goes to the destinations bound with exactly its routing key."""

from __future__ import annotations

from .base import Binding, Dest, ExchangeType


class DirectExchange(ExchangeType):
    def __init__(self) -> None:
        super().__init__()
        self.by_key: dict[str, dict[Dest, int]] = {}

    def _added(self, binding: Binding) -> None:
        dests = self.by_key.setdefault(binding.routing_key, {})
        dests[binding.dest] = dests.get(binding.dest, 0) + 1

    def _removed(self, binding: Binding) -> None:
        dests = self.by_key[binding.routing_key]
        if dests[binding.dest] == 1:
            del dests[binding.dest]
            if not dests:
                del self.by_key[binding.routing_key]
        else:
            dests[binding.dest] -= 1

    def route(self, routing_key, headers):
        return self.by_key.get(routing_key, ())
