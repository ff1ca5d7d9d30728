"""Metadata records: users, virtual hosts, permissions, policies, exchanges, queues (the
replicated state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.exchanges import EXCHANGE_TYPES, Binding, Dest, ExchangeType


@dataclass
class User:
    name: str
    password_hash: str  # base64(salt + sha256(salt + password)), as RabbitMQ stores it
    tags: list[str] = field(default_factory=list)
    hashing_algorithm: str = "rabbit_password_hashing_sha256"


@dataclass
class Permission:
    configure: str
    write: str
    read: str


@dataclass
class TopicPermission:
    exchange: str
    write: str
    read: str


@dataclass
class Policy:
    vhost: str
    name: str
    pattern: str
    definition: dict
    priority: int = 0
    apply_to: str = "all"  # "queues", "exchanges" or "all"


@dataclass(eq=False)
class ExchangeRecord:
    vhost: str
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict = field(default_factory=dict)
    router: ExchangeType = field(init=False)

    def __post_init__(self) -> None:
        self.router = EXCHANGE_TYPES[self.type]()


@dataclass(eq=False)
class QueueRecord:
    vhost: str
    name: str
    durable: bool = False
    exclusive_owner: str | None = None  # the owning connection's id
    auto_delete: bool = False
    arguments: dict = field(default_factory=dict)
    type: str = "classic"
    id: str = ""  # this incarnation of the name: journal records refer to it
    node: str = ""  # the node a classic queue lives on ("" in a node-less test machine)
    members: list[str] = field(default_factory=list)  # a quorum queue's replicas (node names)


@dataclass(eq=False)
class VHost:
    name: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    policies: dict[str, Policy] = field(default_factory=dict)
    exchanges: dict[str, ExchangeRecord] = field(default_factory=dict)
    queues: dict[str, QueueRecord] = field(default_factory=dict)
    # destination -> bindings that point at it, as (source exchange name, binding)
    bound_to: dict[Dest, set[tuple[str, Binding]]] = field(default_factory=dict)


# Exchanges every virtual host has from birth (RabbitMQ 3.10's set).
PREDECLARED = (
    ("", "direct", False),
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)
