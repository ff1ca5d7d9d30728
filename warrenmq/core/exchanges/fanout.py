"""fanout: a message goes to every bound destination, whatever its routing key."""

from __future__ import annotations

from .base import Binding, Dest, ExchangeType


class FanoutExchange(ExchangeType):
    def __init__(self) -> None:
        super().__init__()
        self.dests: dict[Dest, int] = {}

    def _added(self, binding: Binding) -> None:
        self.dests[binding.dest] = self.dests.get(binding.dest, 0) + 1

    def _removed(self, binding: Binding) -> None:
        if self.dests[binding.dest] == 1:
            del self.dests[binding.dest]
        else:
            self.dests[binding.dest] -= 1

    def route(self, routing_key, headers):
        return self.dests
