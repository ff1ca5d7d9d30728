"""Exchange types, one small module each, registered by name (rabbit_exchange_type's idea).

Every type implements `ExchangeType`: bindings in, destinations out. A destination is a
`Dest` (kind, name) with kind "queue" or "exchange"; the node follows exchange
destinations (exchange-to-exchange bindings) itself.
"""

from __future__ import annotations

from .base import Binding, Dest, ExchangeType
from .direct import DirectExchange
from .fanout import FanoutExchange
from .headers import HeadersExchange
from .topic import TopicExchange

EXCHANGE_TYPES: dict[str, type[ExchangeType]] = {
    "direct": DirectExchange,
    "fanout": FanoutExchange,
    "topic": TopicExchange,
    "headers": HeadersExchange,
}

__all__ = ["Binding", "Dest", "ExchangeType", "EXCHANGE_TYPES"]
