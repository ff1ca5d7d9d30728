"""The quorum queue: a pure state machine applied by Raft on every replica (`machine`), its
command vocabulary (`commands`), the parts of its state (`state`) and the per-channel client
session (`session`)."""

from .commands import (
    DEAD_LETTER_REASONS,
    DEAD_LETTER_STRATEGIES,
    OVERFLOWS,
    Command,
    Effect,
    MessageRef,
    Meta,
    Reply,
    make_cancel,
    make_cancel_unread,
    make_checkout,
    make_credit,
    make_dead_letter_settle,
    make_discard,
    make_down,
    make_enqueue,
    make_purge,
    make_return,
    make_settle,
    make_tick,
    make_update_config,
)
from .machine import QuorumMachine
from .session import (
    DeliveryTags,
    PublisherStateLost,
    QuorumSession,
    UnknownDeliveryTag,
)
from .state import QueueConfig

__all__ = [
    "DEAD_LETTER_REASONS", "DEAD_LETTER_STRATEGIES", "OVERFLOWS", "Command", "DeliveryTags",
    "Effect", "MessageRef", "Meta", "PublisherStateLost", "QueueConfig", "QuorumMachine",
    "QuorumSession", "Reply", "UnknownDeliveryTag", "make_cancel", "make_cancel_unread",
    "make_checkout",
    "make_credit", "make_dead_letter_settle", "make_discard", "make_down", "make_enqueue",
    "make_purge", "make_return", "make_settle", "make_tick", "make_update_config",
]
