"""A client talking to the sans-IO server `Connection` through an in-memory byte pipe
(h11's ConnectionPair idea): tests read as dialogues, with no sockets and no event loop."""

from __future__ import annotations

from pamqp import commands as C
from pamqp import frame as F
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from warrenmq.amqp.constants import PROTOCOL_HEADER
from warrenmq.config import Config
from warrenmq.core.connection import Connection
from warrenmq.core.node import Node


class Pipe:
    def __init__(self, node: Node | None = None, name: str = "c1") -> None:
        if node is None:
            node = Node(Config())
            node.bootstrap()
        self.node = node
        self.conn = Connection(node, name, ("127.0.0.1", 40000))
        self.pending = b""

    def feed(self, data: bytes) -> list:
        self.conn.receive_data(data)
        return self.read()

    def send(self, channel: int, *frames) -> list:
        return self.feed(b"".join(F.marshal(f, channel) for f in frames))

    def read(self) -> list:
        self.node.flush()
        data = self.pending + b"".join(self.conn.take_output())
        frames = []
        while data:
            if data.startswith(b"AMQP"):
                frames.append((0, data[:8]))
                data = data[8:]
                continue
            try:
                used, channel, value = F.unmarshal(data)
            except Exception:
                break
            frames.append((channel, value))
            data = data[used:]
        self.pending = data
        return frames

    def open(self, vhost: str = "/", user: str = "guest", password: str = "guest") -> list:
        self.feed(PROTOCOL_HEADER)
        self.send(0, C.Connection.StartOk(
            client_properties={"capabilities": {"consumer_cancel_notify": True,
                                                "authentication_failure_close": True}},
            mechanism="PLAIN", response=f"\0{user}\0{password}", locale="en_US"))
        return self.send(0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0),
                         C.Connection.Open(virtual_host=vhost))

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes,
                mandatory: bool = False, properties: C.Basic.Properties | None = None) -> list:
        return self.send(channel, C.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                  mandatory=mandatory),
                         ContentHeader(0, len(body), properties or C.Basic.Properties()),
                         ContentBody(body))


def names(frames: list) -> list[str]:
    return [getattr(f, "name", type(f).__name__) for _, f in frames]
