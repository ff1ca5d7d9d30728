"""A consumer: one basic.consume on one channel, with its own prefetch window."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..queues.classic import ClassicQueue
    from .channel import Channel


class Consumer:
    __slots__ = ("channel", "tag", "tag_ss", "queue", "no_ack", "exclusive", "prefetch",
                 "unacked", "arguments", "priority")

    def __init__(self, channel: Channel, tag: str, tag_ss: bytes, queue: ClassicQueue,
                 no_ack: bool, exclusive: bool, prefetch: int, arguments: dict) -> None:
        self.channel = channel
        self.tag = tag
        self.tag_ss = tag_ss
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch  # 0 = unlimited
        self.unacked = 0
        self.arguments = arguments
        priority = arguments.get("x-priority", 0)
        self.priority = priority if isinstance(priority, int) else 0

    def can_take(self) -> bool:
        channel = self.channel
        if not channel.deliverable:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        limit = channel.global_prefetch
        return not (limit and channel.unacked_count >= limit)
