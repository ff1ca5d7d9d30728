"""A tiny raw-socket AMQP 0-9-1 client for protocol tests, built on pamqp.

It does the connection handshake (protocol header, Start/StartOk, Tune/TuneOk,
Open) and then lets a test send arbitrary bytes or frames and read the frames
the server sends back, with a socket timeout, until the server closes.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from pamqp import commands, frame, heartbeat
from pamqp.base import Frame

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE
CLIENT_CAPABILITIES: dict[str, Any] = {
    "authentication_failure_close": True,
    "basic.nack": True,
    "connection.blocked": True,
    "consumer_cancel_notify": True,
    "publisher_confirms": True,
}


class ServerClosed(Exception):
    """The server closed the TCP connection (EOF or reset)."""


def raw_frame(frame_type: int, channel: int, payload: bytes, end: int = FRAME_END) -> bytes:
    """Frame `payload` by hand: lets tests build frames pamqp would refuse to build."""
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


def method_payload(class_id: int, method_id: int, args: bytes = b"") -> bytes:
    return struct.pack(">HH", class_id, method_id) + args


def plain_response(user: str, password: str) -> str:
    return f"\0{user}\0{password}"


def amqplain_response(user: str, password: str) -> str:
    """AMQPLAIN's response: a field table without its length prefix.

    pamqp takes the longstr as `str` and encodes it as UTF-8, so this holds only for
    credentials shorter than 128 bytes in ASCII (the table's length octets stay ASCII).
    """
    def entry(key: str, value: str) -> bytes:
        k, v = key.encode(), value.encode()
        return bytes([len(k)]) + k + b"S" + struct.pack(">I", len(v)) + v

    table = entry("LOGIN", user) + entry("PASSWORD", password)
    assert all(b < 0x80 for b in table), "AMQPLAIN helper supports short ASCII credentials only"
    return table.decode("ascii")


@dataclass
class Received:
    channel: int
    frame: Any

    @property
    def name(self) -> str:
        return getattr(self.frame, "name", type(self.frame).__name__)


@dataclass
class RawClient:
    host: str
    port: int
    timeout_s: float = 5.0
    sock: socket.socket | None = None
    buffer: bytearray = field(default_factory=bytearray)
    start: commands.Connection.Start | None = None
    tune: commands.Connection.Tune | None = None

    def connect(self) -> RawClient:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending -------------------------------------------------------------

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def send_frame(self, value: Any, channel: int = 0) -> None:
        self.send(frame.marshal(value, channel))

    def send_method(self, method: Frame, channel: int = 0) -> None:
        self.send_frame(method, channel)

    # -- receiving -----------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        assert self.sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no frame from the server before the deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError as exc:
            raise TimeoutError("no frame from the server before the deadline") from exc
        except ConnectionResetError as exc:
            raise ServerClosed("connection reset") from exc
        if not data:
            raise ServerClosed("EOF")
        self.buffer += data

    def read_bytes(self, count: int, timeout_s: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while len(self.buffer) < count:
            self._fill(deadline)
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def read_frame(self, timeout_s: float | None = None) -> Received:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while len(self.buffer) < 7:
            self._fill(deadline)
        _, _, size = struct.unpack_from(">BHI", self.buffer)
        while len(self.buffer) < 8 + size:
            self._fill(deadline)
        consumed, channel, value = frame.unmarshal(bytes(self.buffer[: 8 + size]))
        del self.buffer[:consumed]
        return Received(channel, value)

    def read_method(self, timeout_s: float | None = None) -> Received:
        """The next frame that is not a heartbeat."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            got = self.read_frame(max(deadline - time.monotonic(), 0.001))
            if not isinstance(got.frame, heartbeat.Heartbeat):
                return got

    def expect(self, kind: type, timeout_s: float | None = None) -> Any:
        got = self.read_method(timeout_s)
        assert isinstance(got.frame, kind), f"expected {kind.__name__}, got {got.frame!r}"
        return got.frame

    def read_until_closed(self, timeout_s: float | None = None) -> list[Received]:
        """Every frame until the server closes the socket (TimeoutError if it never does)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        frames: list[Received] = []
        while True:
            try:
                frames.append(self.read_frame(max(deadline - time.monotonic(), 0.001)))
            except ServerClosed:
                return frames

    def expect_connection_close(self, timeout_s: float | None = None,
                                wait_closed: bool = True) -> commands.Connection.Close:
        """Wait for connection.close (skipping replies sent before it), answer close-ok,
        then (optionally) wait for the socket to close."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            got = self.read_method(max(deadline - time.monotonic(), 0.001))
            if isinstance(got.frame, commands.Connection.Close):
                close = got.frame
                break
        try:
            self.send_method(commands.Connection.CloseOk())
        except OSError:
            pass  # the server may already have gone: it owes us nothing after close
        if wait_closed:
            self.read_until_closed(max(deadline - time.monotonic(), 0.001))
        return close

    # -- the handshake -------------------------------------------------------

    def handshake(self, user: str = "guest", password: str = "guest", vhost: str = "/",
                  channel_max: int | None = None, frame_max: int | None = None,
                  heartbeat_s: int | None = None, mechanism: str = "PLAIN",
                  capabilities: dict[str, Any] | None = None,
                  open_connection: bool = True) -> RawClient:
        """Negotiate the connection; `None` tune values accept the server's proposal."""
        if self.sock is None:
            self.connect()
        self.send(PROTOCOL_HEADER)
        self.start = self.expect(commands.Connection.Start)
        caps = CLIENT_CAPABILITIES if capabilities is None else capabilities
        response: Any = (amqplain_response(user, password) if mechanism == "AMQPLAIN"
                         else plain_response(user, password))
        self.send_method(commands.Connection.StartOk(
            client_properties={"product": "rawamqp", "capabilities": caps},
            mechanism=mechanism, response=response))
        got = self.read_method()
        if not isinstance(got.frame, commands.Connection.Tune):
            raise UnexpectedFrame(got)
        self.tune = got.frame
        self.send_method(commands.Connection.TuneOk(
            channel_max=self.tune.channel_max if channel_max is None else channel_max,
            frame_max=self.tune.frame_max if frame_max is None else frame_max,
            heartbeat=self.tune.heartbeat if heartbeat_s is None else heartbeat_s))
        if open_connection:
            self.send_method(commands.Connection.Open(virtual_host=vhost))
            got = self.read_method()
            if not isinstance(got.frame, commands.Connection.OpenOk):
                raise UnexpectedFrame(got)
        return self

    def open_channel(self, channel: int = 1) -> None:
        self.send_method(commands.Channel.Open(), channel)
        got = self.read_method()
        if not isinstance(got.frame, commands.Channel.OpenOk) or got.channel != channel:
            raise UnexpectedFrame(got)


class UnexpectedFrame(Exception):
    def __init__(self, got: Received) -> None:
        super().__init__(f"unexpected frame on channel {got.channel}: {got.frame!r}")
        self.got = got


def close_summary(close: commands.Connection.Close | commands.Channel.Close) -> tuple:
    """(reply_code, class_id, method_id, reply_text) of a close method."""
    return close.reply_code, close.class_id, close.method_id, close.reply_text
