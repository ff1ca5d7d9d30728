"""The server side of one AMQP connection, sans I/O.

`receive_data(bytes)` parses frames and drives the negotiation machine (protocol header ->
start/start-ok -> tune/tune-ok -> open/open-ok -> open) and then the channels; everything the
connection wants to send is appended to `out` and the node is told it has output. The shell
owns the socket, the clock (heartbeats, handshake timeout) and calls `flush`.

Errors: a channel-level `AMQPError` closes that channel; a hard one closes the connection
(connection.close, then wait for close-ok, ignoring every other frame, as the spec says).
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from pamqp import commands as C
from pamqp import decode as pamqp_decode

from .. import __version__
from ..amqp import codec
from ..amqp.constants import (
    ACCESS_REFUSED,
    CHANNEL_ERROR,
    COMMAND_INVALID,
    CONNECTION_FORCED,
    FRAME_BODY,
    FRAME_END,
    FRAME_ERROR,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_MIN_SIZE,
    NOT_ALLOWED,
    PROTOCOL_HEADER,
    UNEXPECTED_FRAME,
)
from ..amqp.errors import AMQPError
from ..meta.access import permitted
from .channel import OPEN, Channel

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("warrenmq.connection")

_FRAME_HDR = struct.Struct(">BHI")
_CLASS_METHOD = struct.Struct(">HH")

FRAMES_PER_TURN = 256

# negotiation states
AWAIT_HEADER, AWAIT_START_OK, AWAIT_TUNE_OK, AWAIT_OPEN, OPENED, CLOSING, CLOSED = range(7)


class Connection:
    def __init__(self, node: Node, conn_id: str, peer: tuple[str, int] | None = None,
                 local: tuple[str, int] | None = None) -> None:
        self.node = node
        self.id = conn_id
        self.peer = peer
        self.local = local
        self.state = AWAIT_HEADER
        self.out: list[bytes] = []
        self.has_output = False
        self.holds = 0
        self.held: list[bytes] | None = None
        self.close_transport = False  # set once the shell should close after flushing
        self.writable = True  # False while the transport's buffer is over its high mark
        self.buf = b""
        cfg = node.config
        self.frame_max = cfg.frame_max
        self.channel_max = cfg.channel_max
        self.heartbeat = cfg.heartbeat
        self.channels: dict[int, Channel] = {}
        self.closing_channels: set[int] = set()
        self.user = ""
        self.vhost_name = ""
        self.vhost = None
        self.client_properties: dict = {}
        self.capabilities: dict = {}
        self.auth_mechanism = ""
        self._perm = None
        self._perm_cache: dict[tuple[str, str, str], bool] = {}
        self.frames_in = 0
        self.bytes_in = 0
        # Frames handled per receive_data call at most; the rest waits for the next loop turn
        # so that one busy publisher cannot starve every other connection (fair reading).
        self.frame_budget = FRAMES_PER_TURN
        self.backlog = False
        self.has_published = False
        self.blocked = False  # by a resource alarm: the shell stops reading while True
        self.blocked_reason = ""
        # a channel handler waits for a metadata command: no frame is handled until it is
        # resumed (the shell stops reading meanwhile), so every method keeps its order
        self.parked = False

    # -- output ---------------------------------------------------------------------------------
    def hold_output(self) -> None:
        """Keep everything written from now on until release_output (a durable change must
        be on disk before its reply, and replies keep their order)."""
        self.holds += 1
        if self.held is None:
            self.held = []

    def release_output(self) -> None:
        self.holds -= 1
        if self.holds == 0 and self.held is not None:
            held, self.held = self.held, None
            if self.state < CLOSED:
                self.write_many(held)

    def write(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
            return
        self.out.append(data)
        if not self.has_output:
            self.has_output = True
            self.node.dirty.append(self)

    def write_many(self, parts: list[bytes]) -> None:
        if self.held is not None:
            self.held.extend(parts)
            return
        self.out.extend(parts)
        if not self.has_output:
            self.has_output = True
            self.node.dirty.append(self)

    def take_output(self) -> list[bytes]:
        out, self.out = self.out, []
        self.has_output = False
        return out

    def send_method(self, channel: int, method) -> None:
        self.write(codec.encode_method(channel, method))

    # -- input ----------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.state >= CLOSED:
            return
        buf = self.buf + data if self.buf else data
        self.bytes_in += len(data)
        if self.parked:
            self.buf = buf
            return
        if self.state == AWAIT_HEADER:
            if len(buf) < 8:
                if PROTOCOL_HEADER.startswith(buf[:len(PROTOCOL_HEADER)]):
                    self.buf = buf
                    return
            if buf[:8] != PROTOCOL_HEADER:
                self.write(PROTOCOL_HEADER)
                self._shut()
                return
            buf = buf[8:]
            self._start()
        try:
            self.buf = self._frames(buf)
        except AMQPError as e:
            self.buf = b""
            self._connection_error(e)

    def pump(self) -> None:
        """Handle every buffered frame now (for callers without a loop to pace reading)."""
        while self.backlog and not self.parked and self.state < CLOSED:
            self.receive_data(b"")

    def _frames(self, buf: bytes) -> bytes:
        pos = 0
        n = len(buf)
        unpack = _FRAME_HDR.unpack_from
        frame_max = self.frame_max
        budget = self.frame_budget
        self.backlog = False
        while n - pos >= 7:
            if budget == 0:
                self.backlog = True
                break
            budget -= 1
            ftype, channel, size = unpack(buf, pos)
            if size + 8 > frame_max:
                raise AMQPError(FRAME_ERROR, f"frame size {size + 8} exceeds negotiated frame_max "
                                f"{frame_max}")
            end = pos + 7 + size
            if end >= n:
                break
            if buf[end] != FRAME_END:
                raise AMQPError(FRAME_ERROR, f"invalid frame end byte {buf[end]:#x}")
            payload = buf[pos + 7:end]
            pos = end + 1
            self.frames_in += 1
            self._frame(ftype, channel, payload)
            if self.state >= CLOSED:
                return b""
            if self.parked:
                break
            frame_max = self.frame_max
        return buf[pos:] if pos < n else b""

    def _frame(self, ftype: int, channel: int, payload: bytes) -> None:
        if ftype == FRAME_HEARTBEAT:
            if channel != 0:
                raise AMQPError(UNEXPECTED_FRAME, "heartbeat frame on a non-zero channel")
            return
        if ftype not in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY):
            raise AMQPError(FRAME_ERROR, f"unknown frame type {ftype}")
        if self.state == CLOSING:
            # after connection.close only close-ok (or a crossing close) matters
            if ftype == FRAME_METHOD and channel == 0 and len(payload) >= 4:
                ids = _CLASS_METHOD.unpack_from(payload, 0)
                if ids == (10, 51) or ids == (10, 50):
                    if ids == (10, 50):
                        self.send_method(0, C.Connection.CloseOk())
                    self._shut()
            return
        if channel == 0:
            if ftype != FRAME_METHOD:
                raise AMQPError(UNEXPECTED_FRAME, f"unexpected frame type {ftype} on channel 0")
            if len(payload) < 4:
                raise AMQPError(FRAME_ERROR, "method frame too short")
            class_id, method_id = _CLASS_METHOD.unpack_from(payload, 0)
            if class_id != 10:
                raise AMQPError(CHANNEL_ERROR, "channel method on channel 0", class_id, method_id)
            self._connection_method(payload)
            return
        if self.state != OPENED:
            raise AMQPError(CHANNEL_ERROR, "channel frame before connection.open")
        ch = self.channels.get(channel)
        if ch is None:
            if channel in self.closing_channels:
                self._closing_channel_frame(channel, ftype, payload)
                return
            if ftype != FRAME_METHOD:
                raise AMQPError(UNEXPECTED_FRAME, f"content frame on channel {channel}, which "
                                "is not open")
            if len(payload) < 4:
                raise AMQPError(FRAME_ERROR, "method frame too short")
            ids = _CLASS_METHOD.unpack_from(payload, 0)
            if ids == (20, 10):  # channel.open
                self._open_channel(channel)
                return
            raise AMQPError(CHANNEL_ERROR, f"expected 'channel.open' on channel {channel}", *ids)
        try:
            if ftype == FRAME_METHOD:
                if len(payload) < 4:
                    raise AMQPError(FRAME_ERROR, "method frame too short")
                class_id, method_id = _CLASS_METHOD.unpack_from(payload, 0)
                if class_id == 10:
                    raise AMQPError(COMMAND_INVALID, "connection method on a channel",
                                    class_id, method_id)
                ch.handle_method(class_id, method_id, payload)
            elif ftype == FRAME_BODY:
                ch.handle_body(payload)
            else:
                ch.handle_header(payload)
        except AMQPError as e:
            if e.hard:
                raise
            self._channel_error(ch, e)

    # -- handlers waiting for metadata commands ------------------------------------------------
    def drive(self, ch: Channel, gen, class_id: int, method_id: int, value=None,
              error: BaseException | None = None) -> None:
        """Run a proposing handler (see channel.Proposing) until it returns or waits on a
        command whose outcome is not known yet; then park until it is."""
        while True:
            try:
                p = gen.send(value) if error is None else gen.throw(error)
            except StopIteration:
                return
            if not p.done:
                self.parked = True
                p.on_done(lambda p: self._resume(ch, gen, class_id, method_id, p))
                return
            value, error = p.value, p.error

    def _resume(self, ch: Channel, gen, class_id: int, method_id: int, p) -> None:
        self.parked = False
        if self.state >= CLOSED:
            gen.close()
            return
        if self.channels.get(ch.number) is not ch:  # closed meanwhile
            gen.close()
        else:
            try:
                try:
                    self.drive(ch, gen, class_id, method_id, p.value, p.error)
                except AMQPError as e:
                    e = e.on(class_id, method_id)
                    if e.hard:
                        raise
                    self._channel_error(ch, e)
            except AMQPError as e:
                self.buf = b""
                self._connection_error(e)
                self.node.resumed(self)
                return
        if not self.parked and self.buf and self.state < CLOSED:
            try:
                self.buf = self._frames(self.buf)
            except AMQPError as e:
                self.buf = b""
                self._connection_error(e)
        self.node.resumed(self)

    def _closing_channel_frame(self, channel: int, ftype: int, payload: bytes) -> None:
        if ftype != FRAME_METHOD or len(payload) < 4:
            return
        ids = _CLASS_METHOD.unpack_from(payload, 0)
        if ids == (20, 41):  # close-ok: the number can be reused
            self.closing_channels.discard(channel)
        elif ids == (20, 40):  # close crossing ours
            self.send_method(channel, C.Channel.CloseOk())
            self.closing_channels.discard(channel)

    def _open_channel(self, number: int) -> None:
        # RabbitMQ limits how many channels are open, not the channel numbers
        if len(self.channels) >= self.channel_max:
            raise AMQPError(NOT_ALLOWED, f"number of channels opened ({len(self.channels)}) has "
                            f"reached the negotiated channel_max ({self.channel_max})")
        self.channels[number] = Channel(self, number)
        self.send_method(number, C.Channel.OpenOk())

    def close_channel(self, ch: Channel) -> None:
        self.channels.pop(ch.number, None)
        ch.teardown()

    def _channel_error(self, ch: Channel, e: AMQPError) -> None:
        log.info("channel error on connection %s, channel %d: %s", self.id, ch.number,
                 e.reply_text)
        self.close_channel(ch)
        self.closing_channels.add(ch.number)
        self.send_method(ch.number, C.Channel.Close(reply_code=e.reply_code,
                                                    reply_text=e.reply_text,
                                                    class_id=e.class_id, method_id=e.method_id))

    # -- connection class -------------------------------------------------------------------------
    def _start(self) -> None:
        self.state = AWAIT_START_OK
        self.send_method(0, C.Connection.Start(
            version_major=0, version_minor=9, server_properties=self.node.server_properties(),
            mechanisms="PLAIN AMQPLAIN", locales="en_US"))

    def _connection_method(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise AMQPError(FRAME_ERROR, "method frame too short")
        method = codec.decode_method(payload)
        name = method.name
        state = self.state
        if name == "Connection.Close":
            self.send_method(0, C.Connection.CloseOk())
            self._shut()
        elif name == "Connection.CloseOk":
            self._shut()
        elif state == AWAIT_START_OK and name == "Connection.StartOk":
            self._start_ok(method)
        elif state == AWAIT_TUNE_OK and name == "Connection.TuneOk":
            self._tune_ok(method)
        elif state == AWAIT_OPEN and name == "Connection.Open":
            self._open(method)
        elif state == OPENED and name == "Connection.UpdateSecret":
            self._update_secret(method)
        elif state == OPENED and name in ("Connection.Blocked", "Connection.Unblocked"):
            pass
        else:
            class_id, method_id = _CLASS_METHOD.unpack_from(payload, 0)
            raise AMQPError(COMMAND_INVALID if state == OPENED else CHANNEL_ERROR,
                            f"unexpected method {name} on channel 0", class_id, method_id)

    def _start_ok(self, m: C.Connection.StartOk) -> None:
        self.client_properties = m.client_properties or {}
        caps = self.client_properties.get("capabilities")
        self.capabilities = caps if isinstance(caps, dict) else {}
        mechanism = m.mechanism
        self.auth_mechanism = mechanism
        response = m.response if isinstance(m.response, bytes) else str(m.response).encode(
            "latin-1", errors="replace")
        if mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) != 3:
                self._auth_failed(mechanism, "malformed PLAIN response")
                return
            username, password = parts[1].decode(errors="replace"), parts[2].decode(
                errors="replace")
        elif mechanism == "AMQPLAIN":
            try:
                _, table = pamqp_decode.field_table(len(response).to_bytes(4, "big") + response)
                username = _text(table.get("LOGIN"))
                password = _text(table.get("PASSWORD"))
            except Exception:
                self._auth_failed(mechanism, "malformed AMQPLAIN response")
                return
        else:
            raise AMQPError(ACCESS_REFUSED, f"unsupported authentication mechanism '{mechanism}'",
                            10, 11)
        refusal = self.node.authenticate(username, password, self.peer)
        if refusal is not None:
            self._auth_failed(mechanism, refusal, username)
            return
        self.user = username
        self.state = AWAIT_TUNE_OK
        cfg = self.node.config
        self.send_method(0, C.Connection.Tune(channel_max=cfg.channel_max,
                                              frame_max=cfg.frame_max,
                                              heartbeat=cfg.heartbeat))

    def _auth_failed(self, mechanism: str, why: str, username: str = "") -> None:
        log.warning("connection %s: authentication failed for user '%s': %s", self.id,
                    username, why)
        if self.capabilities.get("authentication_failure_close"):
            self.state = AWAIT_OPEN  # a close frame may go out from here on
            self.close(ACCESS_REFUSED, f"ACCESS_REFUSED - Login was refused using "
                       f"authentication mechanism {mechanism}. For details see the broker "
                       "logfile.")
        else:
            self._shut()

    def _tune_ok(self, m: C.Connection.TuneOk) -> None:
        cfg = self.node.config
        # RabbitMQ refuses 0 ("unlimited") for both, like any value below the minimum
        frame_max = m.frame_max
        if frame_max < FRAME_MIN_SIZE:
            raise AMQPError(NOT_ALLOWED, f"frame_max={frame_max} < {FRAME_MIN_SIZE} min size",
                            10, 31)
        if frame_max > cfg.frame_max:
            raise AMQPError(NOT_ALLOWED, f"frame_max={frame_max} > {cfg.frame_max} max size",
                            10, 31)
        channel_max = m.channel_max
        if channel_max < 1:
            raise AMQPError(NOT_ALLOWED, f"channel_max={channel_max} < 1 min size", 10, 31)
        if channel_max > cfg.channel_max:
            raise AMQPError(NOT_ALLOWED, f"channel_max={channel_max} > {cfg.channel_max} max "
                            "size", 10, 31)
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = m.heartbeat
        self.state = AWAIT_OPEN

    def _open(self, m: C.Connection.Open) -> None:
        vhost = self.node.meta.vhosts.get(m.virtual_host)
        if vhost is None:
            raise AMQPError(NOT_ALLOWED, f"vhost {m.virtual_host} not found", 10, 40)
        perm = self.node.meta.permissions.get((self.user, m.virtual_host))
        if perm is None:
            raise AMQPError(NOT_ALLOWED, f"access to vhost '{m.virtual_host}' refused for user "
                            f"'{self.user}'", 10, 40)
        self.vhost_name = m.virtual_host
        self.vhost = vhost
        self.state = OPENED
        self.send_method(0, C.Connection.OpenOk())
        self.node.connection_opened(self)

    def _update_secret(self, m: C.Connection.UpdateSecret) -> None:
        """A client renews its credentials (RabbitMQ's extension, meant for expiring tokens).

        The new secret goes through the check a login goes through, for the connection's
        user: for an internal user, it must be the current password (so a client whose
        password was changed may carry on with the new one). RabbitMQ 3.10's internal
        backend accepts any secret, its credentials never expiring; refusing what would not
        log in is deliberate. Refused: 530, the connection closes, as RabbitMQ's reader
        closes it when a backend refuses."""
        secret = m.new_secret
        password = secret.decode(errors="replace") if isinstance(secret, bytes) else \
            str(secret or "")
        refusal = self.node.authenticate(self.user, password, self.peer)
        if refusal is not None:
            log.warning("connection %s: secret update refused for user '%s': %s", self.id,
                        self.user, refusal)
            raise AMQPError(NOT_ALLOWED, "New secret was refused by one of the backends",
                            10, 70)
        log.info("connection %s: user '%s' updated secret, reason: %s", self.id, self.user,
                 m.reason)
        # authorisation from here on is decided afresh, on the user's current permissions
        self._perm = None
        self._perm_cache.clear()
        self.send_method(0, C.Connection.UpdateSecretOk())

    def block(self, reason: str) -> None:
        if self.state != OPENED:
            return
        if not self.blocked or reason != self.blocked_reason:
            self.blocked = True
            self.blocked_reason = reason
            if self.capabilities.get("connection.blocked"):
                self.send_method(0, C.Connection.Blocked(reason=reason))
            self.node.blocked_changed(self)

    def unblock(self) -> None:
        if self.blocked:
            self.blocked = False
            self.blocked_reason = ""
            if self.capabilities.get("connection.blocked") and self.state == OPENED:
                self.send_method(0, C.Connection.Unblocked())
            self.node.blocked_changed(self)

    def permitted(self, perm: str, kind: str, name: str) -> bool:
        current = self.node.meta.permissions.get((self.user, self.vhost_name))
        if current is not self._perm:
            self._perm = current
            self._perm_cache.clear()
        key = (perm, kind, name)
        hit = self._perm_cache.get(key)
        if hit is None:
            hit = permitted(current, perm, name)
            if len(self._perm_cache) > 1000:
                self._perm_cache.clear()
            self._perm_cache[key] = hit
        return hit

    # -- closing ----------------------------------------------------------------------------------
    def _connection_error(self, e: AMQPError) -> None:
        log.warning("closing connection %s: %s", self.id, e.reply_text)
        if self.state in (AWAIT_START_OK, AWAIT_TUNE_OK):
            # as RabbitMQ: a client that has not finished the handshake gets no close frame
            self._shut()
            return
        self.close(e.reply_code, e.reply_text, e.class_id, e.method_id)

    def close(self, reply_code: int = CONNECTION_FORCED, reply_text: str = "",
              class_id: int = 0, method_id: int = 0) -> None:
        """Start the close handshake from the server side."""
        if self.state >= CLOSING:
            return
        if self.state == AWAIT_HEADER:
            self._shut()
            return
        self._release()
        self.state = CLOSING
        self.send_method(0, C.Connection.Close(reply_code=reply_code, reply_text=reply_text,
                                               class_id=class_id, method_id=method_id))

    def _shut(self) -> None:
        self._release()
        self.state = CLOSED
        self.close_transport = True
        if not self.has_output:
            self.has_output = True
            self.node.dirty.append(self)

    def _release(self) -> None:
        if self.state in (CLOSING, CLOSED):
            return
        channels = list(self.channels.values())
        self.channels.clear()
        for ch in channels:
            ch.teardown()
        self.node.connection_closed(self)

    def connection_lost(self) -> None:
        """The transport is gone (peer closed, network error)."""
        self._release()
        self.state = CLOSED

    def set_writable(self, writable: bool) -> None:
        self.writable = writable
        for ch in self.channels.values():
            ch.deliverable = writable and ch.state is OPEN
        if writable:
            for q in {c.queue for ch in self.channels.values() for c in ch.consumers.values()}:
                q.dispatch()


def _text(v) -> str:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return "" if v is None else str(v)


__all__ = ["Connection", "__version__"]
