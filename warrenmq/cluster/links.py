"""`PeerLinks`: the node-to-node message layer on the cluster port.

Theory of operation.
- Connections. For every peer we `connect()` to, one TCP connection that WE dial (the
  outbound link); the peer dials its own to us (our inbound link from it). A dial is the
  control protocol's opening: the cookie is proved both ways before anything else is read
  (`control.py`), then we send {"cmd": "link", "args": {node, node_id, proto}}; the peer's
  `ControlServer` hands the stream to its `link_handler` (`accept` here), which answers
  {"ok": ...} or {"error": ...}, and from then on both ends speak link frames.
- Frames. [u32 length][msgpack array], the array's first element saying what it is:
  [MSG, kind, payload] (one-way), [REQ, id, kind, payload], [REPLY, id, value],
  [ERROR, id, text, exit_status] and [PING]. `send` and `request` use the outbound link, so
  one-way messages to a peer keep their order; a request's reply goes back on the link the
  request came in on, whichever way it was dialled.
- Writes are coalesced: frames queued in one loop turn leave in one `writelines` on the
  next (`call_soon`). `writable(peer)` says whether the link's unsent bytes are under the
  high-water mark; `await drain(peer)` waits until they are low again.
- Liveness. A link that has written nothing for `ping_interval_s` sends a PING; both ends do
  this, so a live peer is always heard at least that often. A link that has received nothing
  for `dead_after_s` is declared dead and aborted: this catches a peer whose process is
  stopped (SIGSTOP, a stuck loop), whose kernel keeps the TCP connection open. One watchdog
  task checks every link; a watchdog that itself woke up very late (our own loop stalled)
  skips one round of death checks, so our stall is not blamed on the peers.
- Redial. A lost outbound link is dialled again with capped exponential backoff and jitter
  until `disconnect()`. `on_peer_up` / `on_peer_down` callbacks follow outbound links.
- Faults for tests. `cut(peer)` aborts both links with the peer, stops redialling it and
  refuses its link requests until `heal(peer)`: cutting every peer isolates the node for
  real (the sockets are gone), with no mock in the path.

Everything runs on the node's event loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgpack

from .control import (
    EX_SOFTWARE,
    EX_UNAVAILABLE,
    FRAME_MAX,
    HANDSHAKE_FRAME_MAX,
    LINK_COMMAND,
    AuthenticationFailed,
    ControlError,
    ProtocolError,
    RemoteError,
    _read_frame,
    answer_hello,
    check_server_proof,
    encode,
)
from .names import NodeNameError, parse

log = logging.getLogger("warrenmq.links")

LINK_PROTOCOL = "warren-link/1"
PING_INTERVAL_S = 1.0
DEAD_AFTER_S = 5.0
STOP_TIMEOUT_S = 2.0  # how long stop() waits for its tasks to end
CONNECT_TIMEOUT_S = 5.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
WRITE_BUFFER_HIGH_BYTES = 4 * 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024

_MSG, _REQ, _REPLY, _ERROR, _PING = range(5)
_LEN = struct.Struct(">I")
# TypeError: msgpack maps keyed by arrays or maps cannot be Python dicts
_DECODE_ERRORS = (ValueError, TypeError, msgpack.FormatError, msgpack.StackError)

Resolve = Callable[[str], tuple[str, int]]
MessageHandler = Callable[[str, Any], None]
RequestHandler = Callable[[str, Any], Awaitable[Any]]
PeerCallback = Callable[[str], None]

__all__ = [
    "LINK_PROTOCOL",
    "PeerLinks",
    "PeerUnavailable",
    "RemoteError",
]


class PeerUnavailable(ControlError):
    """No link to `peer` right now, or the link was lost before a reply; `reason` says why
    (connection refused, host unresolved, cookie mismatch, cut, declared dead...)."""

    exit_status = EX_UNAVAILABLE

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"node {peer} is unavailable: {reason}")
        self.peer = peer
        self.reason = reason


def default_resolve(peer: str) -> tuple[str, int]:
    node = parse(peer)
    return node.host, node.port


def same_node(a: str, b: str) -> bool:
    """Whether two node names denote one node (NAME@HOST and NAME@HOST:25672 do)."""
    if a == b:
        return True
    try:
        return parse(a) == parse(b)
    except NodeNameError:
        return False


class _Link:
    """One TCP connection in link mode, either direction."""

    def __init__(self, owner: PeerLinks, peer: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, outbound: bool) -> None:
        self.owner = owner
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.outbound = outbound
        self.loop = asyncio.get_running_loop()
        self.transport = writer.transport
        high = owner.write_buffer_high_bytes
        self.transport.set_write_buffer_limits(high=high, low=high // 4)
        now = self.loop.time()
        self.last_recv = now
        self.last_send = now
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.flush_scheduled = False
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 1
        self.closed = False
        self.close_reason = ""
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.frames_in = 0
        self.frames_out = 0
        self.writes = 0

    # -- writing --------------------------------------------------------------------------
    def queue(self, frame: list[Any]) -> None:
        body = msgpack.packb(frame, use_bin_type=True)
        if len(body) > FRAME_MAX:
            raise ValueError(f"a link frame of {len(body)} bytes exceeds {FRAME_MAX}")
        self.out.append(_LEN.pack(len(body)))
        self.out.append(body)
        self.out_bytes += _LEN.size + len(body)
        self.frames_out += 1
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.closed or not self.out:
            return
        if self.writer.is_closing():  # lost this turn; the reader is about to close the link
            self.out, self.out_bytes = [], 0
            return
        out, self.out, self.out_bytes = self.out, [], 0
        self.writer.writelines(out)
        self.writes += 1
        self.last_send = self.loop.time()

    def buffered(self) -> int:
        return self.out_bytes + self.transport.get_write_buffer_size()

    def request(self, kind: str, payload: Any) -> tuple[int, asyncio.Future[Any]]:
        rid = self.next_id
        self.next_id += 1
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.pending[rid] = fut
        self.queue([_REQ, rid, kind, payload])
        return rid, fut

    # -- reading --------------------------------------------------------------------------
    async def run(self) -> None:
        """Read and dispatch frames until the link closes (then return; never raises but
        CancelledError)."""
        buf = bytearray()
        try:
            while not self.closed:
                data = await self.reader.read(READ_CHUNK_BYTES)
                if not data:
                    self.close("the connection was closed by the peer")
                    break
                self.last_recv = self.loop.time()
                buf += data
                used = self._frames(buf)
                if used:
                    del buf[:used]
        except OSError as e:
            self.close(f"connection lost ({e.strerror or type(e).__name__})")
        except (ProtocolError, *_DECODE_ERRORS) as e:
            log.warning("link with %s: protocol error: %s", self.peer, e)
            self.close(f"protocol error: {e}")
        except asyncio.CancelledError:
            self.close("the link was shut down")
            raise

    def _frames(self, buf: bytearray) -> int:
        """Dispatch every whole frame in `buf`; return the bytes they used."""
        off = 0
        size_buf = len(buf)
        with memoryview(buf) as view:
            while size_buf - off >= _LEN.size and not self.closed:
                (size,) = _LEN.unpack_from(view, off)
                if size > FRAME_MAX:
                    raise ProtocolError(f"frame of {size} bytes exceeds the limit of {FRAME_MAX}")
                end = off + _LEN.size + size
                if end > size_buf:
                    break
                frame = msgpack.unpackb(view[off + _LEN.size:end], raw=False,
                                        strict_map_key=False)
                off = end
                self.frames_in += 1
                self.owner._dispatch(self, frame)
        return off

    # -- closing --------------------------------------------------------------------------
    def close(self, reason: str) -> None:
        """Abort the connection (nothing more is sent or read) and fail what waits on it."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.out.clear()
        self.out_bytes = 0
        # abort, not close: a stopped peer would never read our buffered bytes.
        self.transport.abort()
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(PeerUnavailable(
                    self.peer, f"the link was lost before the reply ({reason})"))
        if not self.done.done():
            self.done.set_result(None)
        self.owner._link_closed(self)


class _Peer:
    """A peer we dial: its dial loop, its outbound link, and why the last dial failed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.task: asyncio.Task[None] | None = None
        self.link: _Link | None = None
        self.last_error = ""
        self.attempted = asyncio.Event()  # the first dial has an outcome
        self.wake = asyncio.Event()  # heal() or stop() ends a backoff wait early
        self.failures = 0


class PeerLinks:
    def __init__(
        self,
        my_name: str,
        my_id: int,
        cookie: str,
        resolve: Resolve | None = None,
        *,
        ping_interval_s: float = PING_INTERVAL_S,
        dead_after_s: float = DEAD_AFTER_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        write_buffer_high_bytes: int = WRITE_BUFFER_HIGH_BYTES,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < ping_interval_s < dead_after_s:
            raise ValueError(f"need 0 < ping_interval_s ({ping_interval_s}) < dead_after_s "
                             f"({dead_after_s})")
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError(f"need 0 < backoff_min_s ({backoff_min_s}) <= backoff_max_s "
                             f"({backoff_max_s})")
        self.my_name = my_name
        self.my_id = my_id
        self.cookie = cookie
        self.resolve: Resolve = resolve or default_resolve
        self.ping_interval_s = ping_interval_s
        self.dead_after_s = dead_after_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.write_buffer_high_bytes = write_buffer_high_bytes
        self.rng = rng or random.Random()
        self._peers: dict[str, _Peer] = {}
        self._inbound: dict[str, _Link] = {}
        self._cut: set[str] = set()
        self._handlers: dict[str, MessageHandler] = {}
        self._request_handlers: dict[str, RequestHandler] = {}
        self._up_callbacks: list[PeerCallback] = []
        self._down_callbacks: list[PeerCallback] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._running = False
        self.unhandled = 0  # one-way messages of a kind nobody registered

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._watchdog = asyncio.create_task(self._watch(), name=f"links {self.my_name}")
        for p in self._peers.values():
            self._start_dialling(p)

    async def stop(self) -> None:
        """Close every link and stop dialling; waiting requests fail with PeerUnavailable."""
        self._running = False
        tasks = [t for t in (self._watchdog, *(p.task for p in self._peers.values()))
                 if t is not None]
        tasks += list(self._tasks)
        for t in tasks:
            t.cancel()
        for link in list(self._links()):
            link.close(f"node {self.my_name} is stopping")
        self._watchdog = None
        for p in self._peers.values():
            p.task = None
        if tasks:
            # bounded: a task that swallowed its cancellation must not hold the shutdown
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)

    # -- registration ---------------------------------------------------------------------
    def on(self, kind: str, fn: MessageHandler) -> None:
        """Handle one-way messages of `kind`: fn(from_name, payload), called inline."""
        self._handlers[kind] = fn

    def on_request(self, kind: str, fn: RequestHandler) -> None:
        """Serve requests of `kind`: `await fn(from_name, payload)` is the reply; an
        exception is the caller's RemoteError (its text, and its `exit_status` if any)."""
        self._request_handlers[kind] = fn

    def on_peer_up(self, fn: PeerCallback) -> None:
        """fn(name) whenever an outbound link to a peer is established."""
        self._up_callbacks.append(fn)

    def on_peer_down(self, fn: PeerCallback) -> None:
        """fn(name) whenever an established outbound link is lost."""
        self._down_callbacks.append(fn)

    # -- peers ----------------------------------------------------------------------------
    def connect(self, peer: str) -> None:
        """Dial `peer` and keep it linked (redialling when lost) until `disconnect`."""
        if same_node(peer, self.my_name):
            raise ValueError(f"node {peer} is this node")
        if peer in self._peers:
            return
        p = self._peers[peer] = _Peer(peer)
        if self._running:
            self._start_dialling(p)

    def disconnect(self, peer: str) -> None:
        """Forget `peer`: stop dialling it and close our link to it."""
        p = self._peers.get(peer)
        if p is None:
            return
        if p.link is not None:
            p.link.close("disconnected by this node")  # while known: on_peer_down fires
        del self._peers[peer]
        if p.task is not None:
            p.task.cancel()
            p.task = None

    def peers_up(self) -> set[str]:
        return {p.name for p in self._peers.values() if p.link is not None}

    def connected(self, peer: str) -> bool:
        p = self._peers.get(peer)
        return p is not None and p.link is not None

    def known(self) -> set[str]:
        """The peers being dialled or linked (everything `connect`ed)."""
        return set(self._peers)

    def last_error(self, peer: str) -> str:
        p = self._peers.get(peer)
        return p.last_error if p is not None else ""

    def describe(self) -> list[dict[str, Any]]:
        """Per peer: link state and counters (for status commands)."""
        out = []
        for name in sorted(set(self._peers) | set(self._inbound)):
            p = self._peers.get(name)
            link = p.link if p is not None else None
            inbound = self._inbound.get(name)
            out.append({
                "node": name,
                "outbound": link is not None,
                "inbound": inbound is not None,
                "cut": name in self._cut,
                "last_error": p.last_error if p is not None else "",
                "buffered_bytes": link.buffered() if link is not None else 0,
                "frames_out": link.frames_out if link is not None else 0,
                "writes": link.writes if link is not None else 0,
                "frames_in": inbound.frames_in if inbound is not None else 0,
            })
        return out

    # -- fault injection ------------------------------------------------------------------
    def cut(self, peer: str) -> None:
        """Abort both links with `peer` and refuse it (no dial, no accept) until `heal`."""
        self._cut.add(peer)
        p = self._peers.get(peer)
        if p is not None and p.link is not None:
            p.link.close("the link was cut on this node")
        inbound = self._inbound.get(peer)
        if inbound is not None:
            inbound.close("the link was cut on this node")

    def heal(self, peer: str) -> None:
        self._cut.discard(peer)
        p = self._peers.get(peer)
        if p is not None:
            p.failures = 0
            p.wake.set()

    def is_cut(self, peer: str) -> bool:
        return peer in self._cut

    # -- sending --------------------------------------------------------------------------
    def send(self, peer: str, kind: str, payload: Any, now: bool = False) -> bool:
        """Queue a one-way message; False (and nothing queued) if `peer` has no link now.
        `now` writes it (with whatever this turn queued before it) at once, not at the end
        of the loop turn."""
        p = self._peers.get(peer)
        link = p.link if p is not None else None
        if link is None:
            return False
        link.queue([_MSG, kind, payload])
        if now:
            link.flush()
        return True

    async def request(self, peer: str, kind: str, payload: Any, timeout_s: float = 10.0) -> Any:
        """Send a request and wait for its reply. Raises PeerUnavailable (no link, or lost
        before the reply), RemoteError (the handler failed there) or TimeoutError. If the
        peer's first dial is still under way, waits for it (within the timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        link = await self._link_for_request(peer, deadline)
        rid, fut = link.request(kind, payload)
        try:
            return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise TimeoutError(f"node {peer} did not answer {kind!r} within {timeout_s:g}s"
                               ) from None
        finally:
            link.pending.pop(rid, None)

    async def _link_for_request(self, peer: str, deadline: float) -> _Link:
        if peer in self._cut:
            raise PeerUnavailable(peer, "the link is cut on this node")
        p = self._peers.get(peer)
        if p is None:
            raise PeerUnavailable(peer, "this node does not link to it (connect() it first)")
        if p.link is None and not p.attempted.is_set():
            timeout = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(p.attempted.wait(), max(0.0, timeout))
            except TimeoutError:
                raise TimeoutError(f"node {peer}: no link within the request's timeout "
                                   "(still dialling)") from None
        if p.link is None:
            raise PeerUnavailable(peer, p.last_error or "not linked yet")
        return p.link

    def buffered(self, peer: str) -> int | None:
        """The unsent bytes of the link to `peer`, or None without one."""
        p = self._peers.get(peer)
        link = p.link if p is not None else None
        return link.buffered() if link is not None else None

    def writable(self, peer: str) -> bool:
        """Whether a send to `peer` would go out without piling up (link up, unsent bytes
        under the high-water mark)."""
        p = self._peers.get(peer)
        link = p.link if p is not None else None
        return link is not None and link.buffered() < self.write_buffer_high_bytes

    async def drain(self, peer: str) -> None:
        """Wait until the link's unsent bytes fall to the low-water mark; PeerUnavailable
        if there is no link or it is lost meanwhile."""
        p = self._peers.get(peer)
        link = p.link if p is not None else None
        if link is None:
            raise PeerUnavailable(peer, p.last_error if p is not None and p.last_error
                                  else "no link")
        link.flush()
        try:
            await link.writer.drain()
        except ConnectionError:
            pass
        if link.closed:
            raise PeerUnavailable(peer, f"the link was lost ({link.close_reason})")

    # -- accepting (the ControlServer's link_handler) -------------------------------------
    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     args: dict[str, Any]) -> None:
        """Serve an authenticated connection that asked to link, until it closes."""
        peer = args.get("node")
        refusal = ""
        if not self._running:
            refusal = f"node {self.my_name} does not accept links now (it is not running)"
        elif not isinstance(peer, str) or not peer:
            refusal = "a link request must name the node it comes from"
        elif args.get("proto") != LINK_PROTOCOL:
            refusal = (f"link protocol {args.get('proto')!r} is not supported (node "
                       f"{self.my_name} speaks {LINK_PROTOCOL}): the nodes run incompatible "
                       "WarrenMQ versions")
        elif peer in self._cut:
            refusal = f"node {self.my_name} refuses links from {peer}: the link is cut"
        elif same_node(peer, self.my_name):
            refusal = f"node {peer} cannot link to itself"
        if refusal:
            writer.write(encode({"error": refusal, "code": EX_UNAVAILABLE}))
            await writer.drain()
            return
        assert isinstance(peer, str)
        writer.write(encode({"ok": {"node": self.my_name, "node_id": self.my_id,
                                    "proto": LINK_PROTOCOL}}))
        link = _Link(self, peer, reader, writer, outbound=False)
        old = self._inbound.get(peer)
        self._inbound[peer] = link
        if old is not None:
            # The peer dials one link to us: a new one means the old is dead (a restart).
            old.close("replaced by a newer link from the same node")
        log.debug("%s: inbound link from %s", self.my_name, peer)
        await link.run()

    # -- internals ------------------------------------------------------------------------
    def _links(self) -> Iterator[_Link]:
        for p in self._peers.values():
            if p.link is not None:
                yield p.link
        yield from self._inbound.values()

    def _link_closed(self, link: _Link) -> None:
        if link.outbound:
            p = self._peers.get(link.peer)
            if p is not None and p.link is link:
                p.link = None
                p.last_error = f"the link was lost: {link.close_reason}"
                log.info("%s: link to %s down: %s", self.my_name, link.peer, link.close_reason)
                self._notify(self._down_callbacks, link.peer)
        elif self._inbound.get(link.peer) is link:
            del self._inbound[link.peer]

    def _notify(self, callbacks: list[PeerCallback], peer: str) -> None:
        for fn in callbacks:
            try:
                fn(peer)
            except Exception:
                log.exception("peer callback %r for %s failed", fn, peer)

    def _dispatch(self, link: _Link, frame: Any) -> None:
        if type(frame) is not list or not frame:
            raise ProtocolError("a link frame must be a non-empty array")
        tag = frame[0]
        if tag == _MSG and len(frame) == 3:
            _, kind, payload = frame
            fn = self._handlers.get(kind)
            if fn is None:
                self.unhandled += 1
                return
            try:
                fn(link.peer, payload)
            except Exception:  # one bad message must not take the link down
                log.exception("handler for %r from %s failed", kind, link.peer)
        elif tag == _REQ and len(frame) == 4:
            _, rid, kind, payload = frame
            task = asyncio.create_task(self._serve(link, rid, kind, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif tag == _REPLY and len(frame) == 3:
            fut = link.pending.pop(frame[1], None)
            if fut is not None and not fut.done():
                fut.set_result(frame[2])
        elif tag == _ERROR and len(frame) == 4:
            fut = link.pending.pop(frame[1], None)
            if fut is not None and not fut.done():
                code = frame[3] if type(frame[3]) is int else EX_SOFTWARE
                fut.set_exception(RemoteError(str(frame[2]), code))
        elif tag == _PING:
            pass
        else:
            # A frame type from a newer version: ignored, so the link keeps working.
            log.debug("link with %s: ignoring frame type %r", link.peer, tag)

    async def _serve(self, link: _Link, rid: Any, kind: Any, payload: Any) -> None:
        fn = self._request_handlers.get(kind) if isinstance(kind, str) else None
        try:
            if fn is None:
                raise _NoHandler(f"node {self.my_name} has no handler for requests of kind "
                                 f"{kind!r}")
            frame: list[Any] = [_REPLY, rid, await fn(link.peer, payload)]
        except Exception as e:
            status = getattr(e, "exit_status", None)
            if isinstance(status, int):
                frame = [_ERROR, rid, str(e), status]  # a CommandError-like refusal
            else:
                log.exception("request %r from %s failed", kind, link.peer)
                frame = [_ERROR, rid, f"{kind!r} failed on node {self.my_name}: "
                         f"{type(e).__name__}: {e}", EX_SOFTWARE]
        if link.closed:
            return
        try:
            link.queue(frame)
        except (TypeError, ValueError) as e:
            log.error("reply to %r for %s cannot be encoded: %s", kind, link.peer, e)
            link.queue([_ERROR, rid, f"the reply to {kind!r} could not be encoded: {e}",
                        EX_SOFTWARE])

    def _start_dialling(self, p: _Peer) -> None:
        p.task = asyncio.create_task(self._dial_loop(p), name=f"link {self.my_name}->{p.name}")

    async def _dial_loop(self, p: _Peer) -> None:
        delay = self.backoff_min_s
        # `_running` too: on Python 3.11 a cancellation can be swallowed by asyncio.wait_for
        # (CPython gh-86296), and a dialler that missed it must still end once stopped
        while self._running and self._peers.get(p.name) is p:
            while p.name in self._cut:
                p.last_error = "the link is cut on this node"
                p.attempted.set()
                p.wake.clear()
                await p.wake.wait()
            try:
                link = await self._dial(p.name)
            except Exception as e:
                if not isinstance(e, PeerUnavailable):  # a bug: keep dialling, loudly
                    log.exception("%s: dialling %s failed", self.my_name, p.name)
                self._dial_failed(p, e.reason if isinstance(e, PeerUnavailable) else repr(e))
                await self._backoff(p, delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            if p.name in self._cut or self._peers.get(p.name) is not p:
                link.close("cut or disconnected while dialling")
                continue
            p.link = link
            p.last_error = ""
            p.failures = 0
            p.attempted.set()
            delay = self.backoff_min_s
            log.info("%s: link to %s up", self.my_name, p.name)
            self._notify(self._up_callbacks, p.name)
            await link.run()
            # Redial soon, not at once: the peer may be restarting.
            await self._backoff(p, delay)

    async def _backoff(self, p: _Peer, delay: float) -> None:
        p.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(p.wake.wait(), delay * self.rng.uniform(0.5, 1.0))

    def _dial_failed(self, p: _Peer, reason: str) -> None:
        level = logging.INFO
        if "cookie" in reason:
            level = logging.WARNING
        if reason == p.last_error:
            level = logging.DEBUG  # the same failure again: said once is enough
        log.log(level, "%s: cannot link to %s: %s", self.my_name, p.name, reason)
        p.last_error = reason
        p.failures += 1
        p.attempted.set()

    async def _dial(self, peer: str) -> _Link:
        """Connect, authenticate and ask to link; PeerUnavailable says why not."""
        try:
            host, port = self.resolve(peer)
        except Exception as e:  # the resolver is the broker's: any failure means no address
            raise PeerUnavailable(peer, f"cannot find its address: {type(e).__name__}: {e}"
                                  ) from None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                    self.connect_timeout_s)
        except socket.gaierror as e:
            raise PeerUnavailable(peer, f"host {host!r} does not resolve ({e.strerror})"
                                  ) from None
        except ConnectionRefusedError:
            raise PeerUnavailable(peer, f"connection refused on {host}:{port} (the node is "
                                  "not running, or not on that port)") from None
        except TimeoutError:
            raise PeerUnavailable(peer, f"connecting to {host}:{port} timed out after "
                                  f"{self.connect_timeout_s:g}s") from None
        except OSError as e:
            raise PeerUnavailable(peer, f"cannot connect to {host}:{port}: "
                                  f"{e.strerror or e}") from None
        try:
            answer = await asyncio.wait_for(self._handshake(peer, reader, writer),
                                            self.connect_timeout_s)
        except BaseException as e:
            writer.transport.abort()
            if isinstance(e, PeerUnavailable | asyncio.CancelledError):
                raise
            raise PeerUnavailable(peer, self._handshake_failure(host, port, e)) from None
        if "error" in answer:
            writer.transport.abort()
            raise PeerUnavailable(peer, f"it refused the link: {answer['error']}")
        return _Link(self, peer, reader, writer, outbound=True)

    async def _handshake(self, peer: str, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> dict[str, Any]:
        hello = await _read_frame(reader, HANDSHAKE_FRAME_MAX)
        reply, expected = answer_hello(self.cookie, hello)
        remote = hello.get("node")
        if isinstance(remote, str) and not same_node(remote, peer):
            raise PeerUnavailable(peer, f"node {remote} answers at its address, not {peer}")
        writer.write(encode(reply))
        check_server_proof(await _read_frame(reader, HANDSHAKE_FRAME_MAX), expected)
        writer.write(encode({"cmd": LINK_COMMAND, "args": {
            "node": self.my_name, "node_id": self.my_id, "proto": LINK_PROTOCOL}}))
        answer = await _read_frame(reader, FRAME_MAX)
        if not isinstance(answer, dict) or ("ok" not in answer and "error" not in answer):
            raise ProtocolError("malformed answer to the link request")
        return answer

    def _handshake_failure(self, host: str, port: int, e: BaseException) -> str:
        if isinstance(e, AuthenticationFailed):
            text = str(e)
            if "cookie mismatch" in text:
                return text.replace("warrenctl and the node", "every node of a cluster")
            return f"cookie mismatch: {text}"
        if isinstance(e, TimeoutError):
            return f"the handshake with {host}:{port} timed out"
        if isinstance(e, asyncio.IncompleteReadError | ConnectionError):
            return f"{host}:{port} closed the connection during the handshake"
        if isinstance(e, ProtocolError):
            return f"{host}:{port} does not speak the cluster protocol: {e}"
        if isinstance(e, _DECODE_ERRORS):
            return f"{host}:{port} sent a garbled handshake ({e})"
        if isinstance(e, OSError):
            return f"the connection to {host}:{port} failed: {e.strerror or e}"
        return f"the handshake with {host}:{port} failed: {type(e).__name__}: {e}"

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.ping_interval_s / 4
        last = loop.time()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            # We were not scheduled for a long time: our stall, not the peers' silence.
            stalled = now - last > self.dead_after_s / 2
            last = now
            for link in list(self._links()):
                if link.closed:
                    continue
                if not stalled and now - link.last_recv >= self.dead_after_s:
                    link.close(f"nothing received for {self.dead_after_s:g}s: the peer is "
                               "declared dead")
                elif now - link.last_send >= self.ping_interval_s and not link.out:
                    link.queue([_PING])


class _NoHandler(Exception):
    exit_status = EX_SOFTWARE
