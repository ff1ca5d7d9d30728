"""A small asyncio AMQP 0-9-1 client built for load generation, not for applications.

Why not pika or aio-pika: the measured limit must be the broker. Hot frames (publish,
deliver, ack, confirms) go through the hand-written codecs in `wire`; the handshake and
every other method through pamqp. Outgoing frames are queued and written with one
`transport.write` per event-loop turn; `wait_writable` exposes the transport's flow
control so producers stop queueing when the socket is full (TCP backpressure is how a
broker slows a publisher down, and must show in the numbers).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

from . import wire

PRODUCT = "warren-perf"
FRAME_MAX_WANTED = 131072


class AmqpError(Exception):
    """The broker closed the connection or a channel (reply_code, reply_text)."""

    def __init__(self, reply_code: int | None, reply_text: str | None,
                 scope: str = "connection") -> None:
        super().__init__(f"{scope} closed by broker: {reply_code} {reply_text}")
        self.reply_code = reply_code or 0
        self.reply_text = reply_text or ""


@dataclass(frozen=True)
class AmqpUri:
    host: str = "127.0.0.1"
    port: int = 5672
    user: str = "guest"
    password: str = "guest"
    vhost: str = "/"

    @classmethod
    def parse(cls, uri: str) -> AmqpUri:
        parts = urlsplit(uri)
        if parts.scheme not in ("amqp", ""):
            raise ValueError(f"only amqp:// URIs are supported, not {parts.scheme}://")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        vhost = unquote(path) if path else "/"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5672,
            user=unquote(parts.username) if parts.username else "guest",
            password=unquote(parts.password) if parts.password else "guest",
            vhost=vhost,
        )

    def redacted(self) -> str:
        vhost = "%2F" if self.vhost == "/" else self.vhost
        return f"amqp://{self.user}@{self.host}:{self.port}/{vhost}"


DeliverCallback = Callable[[int, bytes], None]
ConfirmCallback = Callable[[int, bool, bool], None]


class Channel:
    """One AMQP channel: synchronous RPCs plus the per-message hot path."""

    def __init__(self, conn: Connection, number: int) -> None:
        self.conn = conn
        self.number = number
        self.on_deliver: DeliverCallback | None = None
        self.on_confirm: ConfirmCallback | None = None
        self.want_body = False
        self.closed: AmqpError | None = None
        self._rpc: asyncio.Future[Any] | None = None
        # Content assembly: after a Deliver (or Return/GetOk) comes a header, then bodies.
        self._content_tag: int | None = None
        self._expect_header = False
        self._body_left = 0
        self._body_parts: list[bytes] = []
        self._get_ok: commands.Basic.GetOk | None = None  # a Get whose content is arriving

    # --- RPCs -------------------------------------------------------------------------
    async def rpc(self, method: Any) -> Any:
        if self.closed:
            raise self.closed
        loop = asyncio.get_running_loop()
        self._rpc = loop.create_future()
        self.conn.send(pamqp_frame.marshal(method, self.number))
        try:
            return await self._rpc
        finally:
            self._rpc = None

    async def queue_declare(self, queue: str = "", *, durable: bool = False,
                            exclusive: bool = False, auto_delete: bool = False,
                            passive: bool = False,
                            arguments: dict[str, Any] | None = None) -> commands.Queue.DeclareOk:
        return await self.rpc(commands.Queue.Declare(
            queue=queue, passive=passive, durable=durable, exclusive=exclusive,
            auto_delete=auto_delete, arguments=arguments or {}))

    async def queue_delete(self, queue: str) -> commands.Queue.DeleteOk:
        return await self.rpc(commands.Queue.Delete(queue=queue))

    async def queue_bind(self, queue: str, exchange: str, routing_key: str = "") -> None:
        await self.rpc(commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key))

    async def exchange_declare(self, exchange: str, exchange_type: str = "direct", *,
                               durable: bool = False, auto_delete: bool = False) -> None:
        await self.rpc(commands.Exchange.Declare(
            exchange=exchange, exchange_type=exchange_type, durable=durable,
            auto_delete=auto_delete))

    async def exchange_delete(self, exchange: str) -> None:
        await self.rpc(commands.Exchange.Delete(exchange=exchange))

    async def basic_qos(self, prefetch_count: int) -> None:
        await self.rpc(commands.Basic.Qos(prefetch_count=prefetch_count))

    async def confirm_select(self) -> None:
        await self.rpc(commands.Confirm.Select())

    async def basic_consume(self, queue: str, on_deliver: DeliverCallback, *,
                            no_ack: bool = False, want_body: bool = False) -> str:
        self.on_deliver = on_deliver
        self.want_body = want_body
        ok = await self.rpc(commands.Basic.Consume(queue=queue, no_ack=no_ack))
        return ok.consumer_tag

    async def basic_get(self, queue: str,
                        no_ack: bool = False) -> tuple[commands.Basic.GetOk, bytes] | None:
        """One message from the queue with its body, or None when the queue is empty."""
        self.want_body = True
        reply = await self.rpc(commands.Basic.Get(queue=queue, no_ack=no_ack))
        return None if isinstance(reply, commands.Basic.GetEmpty) else reply

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self.conn.send(pamqp_frame.marshal(
            commands.Basic.Reject(delivery_tag=delivery_tag, requeue=requeue), self.number))

    async def basic_cancel(self, consumer_tag: str) -> None:
        await self.rpc(commands.Basic.Cancel(consumer_tag=consumer_tag))

    async def close(self) -> None:
        if self.closed or self.conn.error:
            return
        await self.rpc(commands.Channel.Close(reply_code=200, reply_text="bye"))
        self.closed = AmqpError(200, "closed by client", "channel")
        self.conn.channels.pop(self.number, None)

    # --- hot path ---------------------------------------------------------------------
    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.conn.send(wire.client_ack(self.number, delivery_tag, multiple))

    # --- incoming ---------------------------------------------------------------------
    def _on_method(self, method: Any) -> None:
        if isinstance(method, commands.Channel.Close):
            self.conn.send(pamqp_frame.marshal(commands.Channel.CloseOk(), self.number))
            self._fail(AmqpError(method.reply_code, method.reply_text, "channel"))
            return
        if isinstance(method, commands.Basic.Return | commands.Basic.GetOk):
            self._content_tag = None
            self._expect_header = True
            # basic_get's reply is the GetOk with its body: it resolves once the body is in.
            self._get_ok = method if isinstance(method, commands.Basic.GetOk) else None
            return
        if isinstance(method, commands.Basic.Cancel):
            return  # consumer cancelled by the broker (queue deleted): nothing more arrives
        if self._rpc is not None and not self._rpc.done():
            self._rpc.set_result(method)

    def _content_done(self, body: bytes) -> None:
        if self._get_ok is not None:
            get_ok, self._get_ok = self._get_ok, None
            if self._rpc is not None and not self._rpc.done():
                self._rpc.set_result((get_ok, body))
            return
        tag = self._content_tag
        self._content_tag = None
        if tag is not None and self.on_deliver is not None:
            self.on_deliver(tag, body)

    def _fail(self, error: AmqpError) -> None:
        self.closed = error
        self.conn.channels.pop(self.number, None)
        if self._rpc is not None and not self._rpc.done():
            self._rpc.set_exception(error)


class AmqpProtocol(asyncio.Protocol):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[attr-defined]
        self.conn._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.conn._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._lost(exc)

    def pause_writing(self) -> None:
        self.conn._writable.clear()

    def resume_writing(self) -> None:
        self.conn._writable.set()


class Connection:
    """One AMQP connection. Open with `await Connection.open(uri)`."""

    def __init__(self, uri: AmqpUri) -> None:
        self.uri = uri
        self.frame_max = FRAME_MAX_WANTED
        self.channel_max = 2047
        self.server_properties: dict[str, Any] = {}
        self.channels: dict[int, Channel] = {}
        self.error: Exception | None = None
        self.blocked = False
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buf = b""
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._unblocked = asyncio.Event()
        self._unblocked.set()
        self._conn_methods: collections.deque[Any] = collections.deque()
        self._conn_waiter: asyncio.Future[None] | None = None
        self._closed = self._loop.create_future()
        self._next_channel = 1

    @classmethod
    async def open(cls, uri: str | AmqpUri, *, name: str = PRODUCT,
                   timeout_s: float = 10.0) -> Connection:
        parsed = uri if isinstance(uri, AmqpUri) else AmqpUri.parse(uri)
        conn = cls(parsed)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            loop.create_connection(lambda: AmqpProtocol(conn), parsed.host, parsed.port),
            timeout_s)
        try:
            await asyncio.wait_for(conn._handshake(name), timeout_s)
        except BaseException:
            conn.abort()
            raise
        return conn

    # --- output -----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self._transport is None or self._transport.is_closing():
            out.clear()
            return
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    @property
    def writable(self) -> bool:
        return self._writable.is_set() and not self.blocked

    async def wait_writable(self) -> None:
        """Wait while the socket buffer is full or the broker sent connection.blocked."""
        while not self._writable.is_set() or self.blocked:
            if self.error:
                raise self.error
            await self._writable.wait()
            await self._unblocked.wait()
        if self.error:
            raise self.error

    # --- handshake --------------------------------------------------------------------
    async def _next_conn_method(self) -> Any:
        while not self._conn_methods:
            if self.error:
                raise self.error
            self._conn_waiter = self._loop.create_future()
            await self._conn_waiter
        return self._conn_methods.popleft()

    async def _expect(self, kind: type) -> Any:
        method = await self._next_conn_method()
        if isinstance(method, commands.Connection.Close):
            self._send_now(pamqp_frame.marshal(commands.Connection.CloseOk(), 0))
            raise AmqpError(method.reply_code, method.reply_text)
        if not isinstance(method, kind):
            raise AmqpError(0, f"expected {kind.__name__}, got {type(method).__name__}")
        return method

    def _send_now(self, data: bytes) -> None:
        self.send(data)
        self._flush()

    async def _handshake(self, name: str) -> None:
        self._send_now(pamqp_frame.marshal(pamqp_header.ProtocolHeader(), 0))
        start = await self._expect(commands.Connection.Start)
        self.server_properties = dict(start.server_properties or {})
        props: dict[str, Any] = {
            "product": PRODUCT,
            "connection_name": name,
            "capabilities": {
                "publisher_confirms": True,
                "basic.nack": True,
                "consumer_cancel_notify": True,
                "connection.blocked": True,
            },
        }
        self._send_now(pamqp_frame.marshal(commands.Connection.StartOk(
            client_properties=props, mechanism="PLAIN",
            response=f"\0{self.uri.user}\0{self.uri.password}", locale="en_US"), 0))
        tune = await self._expect(commands.Connection.Tune)
        self.frame_max = min(tune.frame_max or FRAME_MAX_WANTED, FRAME_MAX_WANTED)
        self.channel_max = tune.channel_max or 2047
        # Heartbeats off: a load generator's connections are busy or short-lived.
        self._send_now(pamqp_frame.marshal(commands.Connection.TuneOk(
            channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=0), 0))
        self._send_now(pamqp_frame.marshal(
            commands.Connection.Open(virtual_host=self.uri.vhost), 0))
        await self._expect(commands.Connection.OpenOk)

    # --- channels ---------------------------------------------------------------------
    async def channel(self) -> Channel:
        number = self._next_channel
        self._next_channel += 1
        ch = Channel(self, number)
        self.channels[number] = ch
        await ch.rpc(commands.Channel.Open())
        return ch

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._transport is None or self._closed.done():
            return
        if not self.error:
            self.send(pamqp_frame.marshal(commands.Connection.Close(
                reply_code=200, reply_text="bye", class_id=0, method_id=0), 0))
            try:
                await asyncio.wait_for(self._wait_close_ok(), timeout_s)
            except (TimeoutError, AmqpError, ConnectionError):
                pass
        self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), timeout_s)
        except TimeoutError:
            self.abort()

    async def _wait_close_ok(self) -> None:
        while True:
            method = await self._next_conn_method()
            if isinstance(method, commands.Connection.CloseOk | commands.Connection.Close):
                return

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- input ------------------------------------------------------------------------
    def _lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = exc or ConnectionError("connection closed")
        self._wake_all()
        if not self._closed.done():
            self._closed.set_result(None)

    def _wake_all(self) -> None:
        error = self.error or ConnectionError("connection closed")
        if self._conn_waiter is not None and not self._conn_waiter.done():
            self._conn_waiter.set_result(None)
        for ch in list(self.channels.values()):
            if ch._rpc is not None and not ch._rpc.done():
                ch._rpc.set_exception(error)
        self._writable.set()
        self._unblocked.set()

    def _on_conn_method(self, method: Any) -> None:
        if isinstance(method, commands.Connection.Close):
            self.error = AmqpError(method.reply_code, method.reply_text)
            self._send_now(pamqp_frame.marshal(commands.Connection.CloseOk(), 0))
            self._conn_methods.append(method)
            self._wake_all()
            return
        self._conn_methods.append(method)
        if self._conn_waiter is not None and not self._conn_waiter.done():
            self._conn_waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        size = len(buf)
        pos = 0
        unpack_head = wire.unpack_frame_head
        channels = self.channels
        while size - pos >= 8:
            frame_type, number, length = unpack_head(buf, pos)
            end = pos + 7 + length
            if end >= size:
                break
            if buf[end] != wire.FRAME_END:
                self.error = AmqpError(501, "FRAME_ERROR - bad frame end from broker")
                self.abort()
                return
            start = pos + 7
            if frame_type == wire.FRAME_METHOD:
                mid = wire._method_id.unpack_from(buf, start)[0]
                ch = channels.get(number)
                if mid == wire.BASIC_DELIVER and ch is not None:
                    pos_tag = start + 5 + buf[start + 4]
                    ch._content_tag = wire._u64.unpack_from(buf, pos_tag)[0]
                    ch._expect_header = True
                elif (mid == wire.BASIC_ACK or mid == wire.BASIC_NACK) and ch is not None:
                    tag, multiple = wire._u64.unpack_from(buf, start + 4)[0], buf[start + 12] & 1
                    if ch.on_confirm is not None:
                        ch.on_confirm(tag, bool(multiple), mid == wire.BASIC_ACK)
                elif mid == wire.CONNECTION_BLOCKED:
                    self.blocked = True
                    self._unblocked.clear()
                elif mid == wire.CONNECTION_UNBLOCKED:
                    self.blocked = False
                    self._unblocked.set()
                else:
                    _, _, method = pamqp_frame.unmarshal(bytes(buf[pos:end + 1]))
                    if number == 0:
                        self._on_conn_method(method)
                    elif ch is not None:
                        ch._on_method(method)
            elif frame_type == wire.FRAME_HEADER:
                ch = channels.get(number)
                if ch is not None and ch._expect_header:
                    ch._expect_header = False
                    body_size = wire._u64.unpack_from(buf, start + 4)[0]
                    if body_size == 0:
                        ch._content_done(b"")
                    else:
                        ch._body_left = body_size
            elif frame_type == wire.FRAME_BODY:
                ch = channels.get(number)
                if ch is not None and ch._body_left:
                    ch._body_left -= length
                    if ch.want_body:
                        ch._body_parts.append(buf[start:end])
                    if ch._body_left <= 0:
                        ch._body_left = 0
                        parts = ch._body_parts
                        if len(parts) == 1:
                            body = parts[0]
                        else:
                            body = b"".join(parts)
                        parts.clear()
                        ch._content_done(body)
            pos = end + 1
        self._buf = buf[pos:] if pos < size else b""

