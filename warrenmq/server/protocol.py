"""The asyncio shell around one AMQP connection: socket bytes in, buffered bytes out.

data_received feeds the sans-IO `Connection`; output is written once per loop turn by the
app's flush (write coalescing). pause_writing/resume_writing make the connection stop and
restart deliveries, so a slow consumer cannot make the node buffer without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING

from ..core.connection import OPENED, Connection

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("warrenmq.server")

_ids = itertools.count(1)

WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1024 * 1024


class AMQPProtocol(asyncio.Protocol):
    def __init__(self, app: App) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.last_recv = 0.0
        self.last_send = 0.0
        self.closing_since = 0.0
        self.started = 0.0
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        peer = tuple(peer[:2]) if peer else None
        local = tuple(local[:2]) if local else None
        name = f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}" if peer and local else \
            f"conn-{next(_ids)}"
        conn = Connection(self.app.node, f"{self.app.node.config.nodename}/{next(_ids)}/{name}",
                          peer, local)
        conn.shell = self  # type: ignore[attr-defined]
        conn.name = name  # type: ignore[attr-defined]
        self.conn = conn
        now = self.app.loop.time()
        self.last_recv = self.last_send = self.started = now
        self.app.protocols.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_recv = self.app.loop.time()
        self.app.node.now_ms = time.time() * 1000.0
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        conn = self.conn
        try:
            conn.receive_data(data)  # type: ignore[union-attr]
        except Exception:
            log.exception("internal error on connection %s", conn.id)  # type: ignore
            conn.close(541, "INTERNAL_ERROR - internal error")  # type: ignore[union-attr]
        self.app.schedule_flush()
        if conn.blocked or conn.parked:  # type: ignore[union-attr]
            # a resource alarm, or a handler waiting for its metadata command: leave the
            # rest buffered, read nothing until it clears
            self.update_reading()
        elif conn.backlog:  # type: ignore[union-attr]
            # more whole frames are buffered than one turn may handle: stop reading, let the
            # other connections have this loop turn, continue in the next one
            if not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            self.app.loop.call_soon(self._continue)
        elif self.reading_paused:
            self.reading_paused = False
            if not self.transport.is_closing():  # type: ignore[union-attr]
                self.transport.resume_reading()  # type: ignore[union-attr]

    def update_reading(self) -> None:
        """Reading stops while the connection is blocked by an alarm or parked, and restarts
        after."""
        conn = self.conn
        transport = self.transport
        if conn is None or transport is None or transport.is_closing():
            return
        if conn.blocked or conn.parked:
            if not self.reading_paused:
                self.reading_paused = True
                transport.pause_reading()
        elif self.reading_paused:
            self.app.loop.call_soon(self._continue)
        self.app.schedule_flush()

    def _continue(self) -> None:
        if self.conn is not None and (self.conn.blocked or self.conn.parked):
            return
        if self.transport is not None and not self.transport.is_closing():
            self._receive(b"")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.protocols.discard(self)
        if self.conn is not None:
            self.conn.connection_lost()
        self.app.schedule_flush()

    def pause_writing(self) -> None:
        self.conn.set_writable(False)  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.conn.set_writable(True)  # type: ignore[union-attr]
        self.app.schedule_flush()

    # -- called by the app -------------------------------------------------------------------------
    def flush(self, now: float) -> None:
        conn = self.conn
        transport = self.transport
        if conn is None or transport is None:
            return
        out = conn.take_output()
        if transport.is_closing():
            return
        if out:
            transport.writelines(out)
            self.last_send = now
        if conn.close_transport:
            transport.close()
        elif conn.state > OPENED and not self.closing_since:
            self.closing_since = now

    def tick(self, now: float) -> None:
        """Heartbeats, the handshake deadline and the close-ok deadline."""
        conn = self.conn
        transport = self.transport
        if conn is None or transport is None or transport.is_closing():
            return
        if conn.state < OPENED:
            if now - self.started > self.app.node.config.handshake_timeout_s:
                log.warning("closing connection %s: handshake timeout", conn.id)
                conn.connection_lost()
                transport.close()
            return
        if self.closing_since:
            if now - self.closing_since > 3.0:
                transport.close()
            return
        hb = conn.heartbeat
        if conn.blocked or conn.parked:
            self.last_recv = now  # not reading on purpose: the client is not silent
        if hb:
            if now - self.last_recv > 2 * hb:
                log.warning("closing connection %s: missed heartbeats from client, timeout: %ds",
                            conn.id, hb)
                conn.connection_lost()
                transport.abort()
                return
            if now - self.last_send >= hb / 2:
                conn.write(b"\x08\x00\x00\x00\x00\x00\x00\xce")
                self.app.schedule_flush()
