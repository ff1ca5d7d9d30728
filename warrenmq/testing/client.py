"""A small blocking AMQP 0-9-1 client for the test helpers, built on pamqp.

The helpers must work whatever client library the tested code uses (pika, aio-pika, kombu,
Celery), so they bring their own: one connection per helper call, a handful of synchronous
methods (passive queue.declare, basic.get, basic.nack, basic.publish), every read under a
deadline. It speaks to RabbitMQ and WarrenMQ alike; it is not a general-purpose client.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from pamqp import body as pbody
from pamqp import commands, frame, header, heartbeat
from pamqp.base import Frame

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
DEFAULT_TIMEOUT_S = 10.0
_FRAME_HEADER = struct.Struct(">BHI")


class AMQPClientError(Exception):
    """The broker closed the channel or connection: `reply_code` is the spec's reply code
    (404 NOT_FOUND for a missing queue, 403 ACCESS_REFUSED, ...)."""

    def __init__(self, reply_code: int, reply_text: str) -> None:
        super().__init__(f"{reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    user: str
    password: str
    vhost: str

    @classmethod
    def from_url(cls, url: str) -> Address:
        u = urlparse(url)
        if u.scheme != "amqp":
            raise ValueError(f"expected an amqp:// URL, got {url!r}"
                             + (" (amqps is not supported by the test helpers)"
                                if u.scheme == "amqps" else ""))
        path = u.path[1:] if u.path.startswith("/") else u.path
        return cls(u.hostname or "localhost", u.port or 5672, unquote(u.username or "guest"),
                   unquote(u.password or "guest"), unquote(path) if path else "/")


@dataclass
class Delivery:
    """A message as basic.get-ok returned it."""

    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    message_count: int
    properties: commands.Basic.Properties
    body: bytes


@dataclass
class Client:
    address: Address
    timeout_s: float = DEFAULT_TIMEOUT_S
    sock: socket.socket | None = None
    buffer: bytearray = field(default_factory=bytearray)
    frame_max: int = 131072

    # -- connection ---------------------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Client:
        a = self.address
        try:
            self.sock = socket.create_connection((a.host, a.port), timeout=self.timeout_s)
        except OSError as e:
            raise ConnectionError(f"cannot connect to {a.host}:{a.port}: "
                                  f"{e.strerror or e}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send_raw(PROTOCOL_HEADER)
        self._expect(0, commands.Connection.Start)
        self.send(0, commands.Connection.StartOk(
            client_properties={"product": "warrenmq.testing",
                               "capabilities": {"basic.nack": True,
                                                "consumer_cancel_notify": True}},
            mechanism="PLAIN", response=f"\0{a.user}\0{a.password}"))
        tune = self._expect(0, commands.Connection.Tune)
        self.frame_max = tune.frame_max or self.frame_max
        # No heartbeats: a helper's connection lives for one short call.
        self.send(0, commands.Connection.TuneOk(channel_max=tune.channel_max,
                                                frame_max=self.frame_max, heartbeat=0))
        self.send(0, commands.Connection.Open(virtual_host=a.vhost))
        self._expect(0, commands.Connection.OpenOk)
        return self

    def close(self) -> None:
        if self.sock is None:
            return
        try:
            self.send(0, commands.Connection.Close(reply_code=200, reply_text="Normal shutdown",
                                                         class_id=0, method_id=0))
            self._expect(0, commands.Connection.CloseOk)
        except (OSError, AMQPClientError, TimeoutError):
            pass  # closing anyway
        finally:
            self.sock.close()
            self.sock = None

    # -- channel methods ------------------------------------------------------------------------------
    def open_channel(self, channel: int = 1) -> int:
        self.call(channel, commands.Channel.Open(), commands.Channel.OpenOk)
        return channel

    def close_channel(self, channel: int) -> None:
        self.call(channel, commands.Channel.Close(reply_code=200, reply_text="Normal shutdown",
                                         class_id=0, method_id=0),
                  commands.Channel.CloseOk)

    def call(self, channel: int, method: Frame, reply: type) -> Any:
        self.send(channel, method)
        return self._expect(channel, reply)

    def message_count(self, channel: int, queue: str) -> int:
        ok = self.call(channel, commands.Queue.Declare(queue=queue, passive=True),
                       commands.Queue.DeclareOk)
        return int(ok.message_count)

    def get(self, channel: int, queue: str, no_ack: bool = False) -> Delivery | None:
        self.send(channel, commands.Basic.Get(queue=queue, no_ack=no_ack))
        method = self._read_method(channel)
        if isinstance(method, commands.Basic.GetEmpty):
            return None
        if not isinstance(method, commands.Basic.GetOk):
            raise AMQPClientError(505, f"UNEXPECTED_FRAME - {method.name} after basic.get")
        content = self._read_frame(channel)
        if not isinstance(content, header.ContentHeader):
            raise AMQPClientError(505, "UNEXPECTED_FRAME - no content header after get-ok")
        chunks: list[bytes] = []
        size = 0
        while size < content.body_size:
            part = self._read_frame(channel)
            if not isinstance(part, pbody.ContentBody):
                raise AMQPClientError(505, "UNEXPECTED_FRAME - content body expected")
            chunks.append(part.value)
            size += len(part.value)
        return Delivery(int(method.delivery_tag or 0), bool(method.redelivered),
                        method.exchange or "", method.routing_key or "",
                        int(method.message_count or 0), content.properties, b"".join(chunks))

    def nack(self, channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        self.send(channel, commands.Basic.Nack(delivery_tag=delivery_tag, multiple=multiple,
                                               requeue=requeue))

    def publish(self, channel: int, exchange: str, routing_key: str, payload: bytes,
                properties: commands.Basic.Properties | None = None) -> None:
        properties = properties or commands.Basic.Properties()
        out = [frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key),
                             channel),
               frame.marshal(header.ContentHeader(0, len(payload), properties), channel)]
        step = self.frame_max - 8
        for start in range(0, len(payload), step):
            out.append(frame.marshal(pbody.ContentBody(payload[start:start + step]), channel))
        self._send_raw(b"".join(out))

    # -- frames ------------------------------------------------------------------------------------------
    def send(self, channel: int, method: Frame) -> None:
        self._send_raw(frame.marshal(method, channel))

    def _send_raw(self, data: bytes) -> None:
        assert self.sock is not None, "open() first"
        self.sock.sendall(data)

    def _expect(self, channel: int, kind: type) -> Any:
        method = self._read_method(channel)
        if not isinstance(method, kind):
            raise AMQPClientError(505, f"UNEXPECTED_FRAME - expected {kind.__name__}, "
                                  f"got {method.name}")
        return method

    def _read_method(self, channel: int) -> Any:
        value = self._read_frame(channel)
        if isinstance(value, (header.ContentHeader, pbody.ContentBody)):
            raise AMQPClientError(505, "UNEXPECTED_FRAME - content where a method was due")
        return value

    def _read_frame(self, channel: int) -> Any:
        """The next frame for `channel`, answering the broker's closes on the way."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            got_channel, value = self._next_frame(deadline)
            if isinstance(value, heartbeat.Heartbeat):
                continue
            if isinstance(value, commands.Connection.Close):
                self._send_raw(frame.marshal(commands.Connection.CloseOk(), 0))
                self.sock.close()  # type: ignore[union-attr]
                self.sock = None
                raise AMQPClientError(int(value.reply_code or 0), value.reply_text or "")
            if isinstance(value, commands.Channel.Close):
                self.send(got_channel, commands.Channel.CloseOk())
                raise AMQPClientError(int(value.reply_code or 0), value.reply_text or "")
            if isinstance(value, commands.Connection.Blocked | commands.Connection.Unblocked):
                continue
            if got_channel == channel:
                return value

    def _next_frame(self, deadline: float) -> tuple[int, Any]:
        while True:
            if len(self.buffer) >= 7:
                _, _, size = _FRAME_HEADER.unpack_from(self.buffer)
                if len(self.buffer) >= size + 8:
                    consumed, channel, value = frame.unmarshal(bytes(self.buffer[:size + 8]))
                    del self.buffer[:consumed]
                    return channel, value
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.sock is None:
                raise TimeoutError(f"no answer from {self.address.host}:{self.address.port} "
                                   f"within {self.timeout_s:g}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("the broker closed the connection")
            self.buffer += data
