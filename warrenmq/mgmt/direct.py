"""A direct (socketless) AMQP session for the API: what RabbitMQ's management plugin does
with its direct connections. Declaring, binding, deleting, publishing and getting through
the API run the very channel handlers an AMQP client reaches, with the API user's
permissions, validation, equivalence checks, routing and confirms; the frames the channel
writes back are read here instead of going to a socket.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

from ..amqp import codec
from ..core.channel import Channel
from ..core.connection import OPENED, Connection
from .http import ApiError

if TYPE_CHECKING:
    from ..core.node import Node

CONFIRM_DEADLINE_S = 30.0
_ids = itertools.count(1)
_RETURN = (60, 50)


class DirectSession:
    def __init__(self, node: Node, user: str, vhost: str) -> None:
        conn = Connection(node, f"{node.config.nodename}/direct-{next(_ids)}/management")
        conn.user = user
        conn.vhost_name = vhost
        conn.vhost = node.meta.vhosts[vhost]
        conn.state = OPENED
        conn.capabilities = {}
        self.conn = conn
        self.channel = Channel(conn, 1)
        conn.channels[1] = self.channel

    def take_frames(self) -> list[bytes]:
        return self.conn.take_output()

    def returned(self, frames: list[bytes]) -> bool:
        """Whether a Basic.Return is among the frames written since the last take."""
        for data in frames:
            if len(data) >= 11 and data[0] == 1 and \
                    codec.CLASS_METHOD.unpack_from(data, 7) == _RETURN:
                return True
        return False

    async def confirmed(self, seq: int, wake: Any) -> None:
        """Wait for the channel's publisher confirm of `seq` (durable queues: on disk): the
        node's flush emits it, the channel's on_confirmed hook wakes this coroutine."""
        event = asyncio.Event()
        self.channel.on_confirmed = event.set
        try:
            async with asyncio.timeout(CONFIRM_DEADLINE_S):
                while self.channel.confirmed_seq < seq:
                    event.clear()
                    wake()
                    await event.wait()
        except TimeoutError:
            raise ApiError(500, "internal_error",
                           f"no publisher confirm within {CONFIRM_DEADLINE_S:g}s") from None
        finally:
            self.channel.on_confirmed = None

    def close(self) -> None:
        """Give back what the session holds (unsettled gets are requeued), as a closing
        client's channel would; the session never registered as a listed connection."""
        self.conn.channels.clear()
        self.channel.teardown()
        self.conn.take_output()
