"""The control transport on the cluster port: framing, mutual cookie authentication, RPC.

Frames are a big-endian u32 length followed by one msgpack map. A connection opens with a
mutual HMAC-SHA256 challenge-response, and nothing else is read until it succeeds:

    server -> client  {"proto": PROTOCOL, "node": NAME, "nonce": Ns}
    client -> server  {"nonce": Nc, "proof": HMAC(cookie, "client" | Ns | Nc)}
    server -> client  {"proof": HMAC(cookie, "server" | Nc | Ns)}   (or an error, then close)

Each side proves it holds the cookie over the other's fresh nonce, so the cookie never crosses
the wire and a recorded exchange cannot be replayed. Before authentication a frame may be at
most HANDSHAKE_FRAME_MAX bytes, so an unauthenticated peer cannot make the node buffer much.

After the handshake the client sends requests {"cmd": NAME, "args": {...}} and gets one reply
per request, in order: {"ok": RESULT} or {"error": TEXT, "code": EXIT_STATUS}. The server side
only knows a `dispatch(cmd, args)` coroutine; the command table lives with its owner
(`server/commands.py`).

One request is special: {"cmd": "link", ...} turns the authenticated connection into a node-to-
node link (`cluster/links.py`). The server hands the stream to its `link_handler` coroutine,
which owns it from then on, including the answer to that request; with no handler registered
(the app is stopped) the request gets an error reply and the connection stays a control one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from .names import HostUnresolved, NodeName, resolve

log = logging.getLogger("warrenmq.control")

PROTOCOL = "warren-control/1"
HANDSHAKE_FRAME_MAX = 1024
FRAME_MAX = 256 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
NONCE_BYTES = 16

_LEN = struct.Struct(">I")

# exit statuses (sysexits.h) carried in error replies and used by warrenctl
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_NOHOST = 68
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class ControlError(Exception):
    """A failure talking to a node; `exit_status` is what warrenctl exits with."""

    exit_status = EX_SOFTWARE


class NodeUnreachable(ControlError):
    exit_status = EX_UNAVAILABLE


class HostNotFound(ControlError):
    exit_status = EX_NOHOST


class AuthenticationFailed(ControlError):
    exit_status = EX_NOPERM


class ProtocolError(ControlError):
    exit_status = EX_SOFTWARE


class RemoteError(ControlError):
    """The node ran the command and reports an error."""

    def __init__(self, message: str, exit_status: int = EX_SOFTWARE) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class CommandError(Exception):
    """Raised by a command handler on the node: becomes {"error": message, "code": status}."""

    def __init__(self, message: str, exit_status: int = EX_DATAERR) -> None:
        super().__init__(message)
        self.exit_status = exit_status


# -- framing and proofs (no I/O) -----------------------------------------------------------------
def encode(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def decode(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def proof(cookie: str, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(cookie.encode("utf-8"), role + first + second, hashlib.sha256).digest()


def hello(nodename: str, nonce: bytes) -> dict:
    return {"proto": PROTOCOL, "node": nodename, "nonce": nonce}


def answer_hello(cookie: str, msg: Any) -> tuple[dict, bytes]:
    """Client side: the reply to the server's hello and the proof expected back."""
    if not isinstance(msg, dict) or msg.get("proto") != PROTOCOL:
        raise ProtocolError("the peer does not speak the WarrenMQ control protocol "
                            f"(expected {PROTOCOL}; is this port another service?)")
    server_nonce = msg.get("nonce")
    if not isinstance(server_nonce, bytes) or len(server_nonce) != NONCE_BYTES:
        raise ProtocolError("malformed hello from the node")
    client_nonce = os.urandom(NONCE_BYTES)
    reply = {"nonce": client_nonce, "proof": proof(cookie, b"client", server_nonce, client_nonce)}
    return reply, proof(cookie, b"server", client_nonce, server_nonce)


def check_server_proof(msg: Any, expected: bytes) -> None:
    if isinstance(msg, dict) and "error" in msg:
        raise AuthenticationFailed(str(msg["error"]))
    got = msg.get("proof") if isinstance(msg, dict) else None
    if not isinstance(got, bytes) or not hmac.compare_digest(got, expected):
        # the node does not hold our cookie: it may be an impostor, so nothing is sent
        raise AuthenticationFailed("the node failed to prove it holds the same cookie")


def cookie_mismatch_text(nodename: str) -> str:
    return (f"cookie mismatch: node {nodename} refused authentication; warrenctl and the node "
            "must use the same cookie file contents")


# -- server side (asyncio) ------------------------------------------------------------------------
Dispatch = Callable[[str, dict], Awaitable[Any]]
LinkHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict], Awaitable[None]]
LINK_COMMAND = "link"


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> Any:
    header = await reader.readexactly(4)
    (size,) = _LEN.unpack(header)
    if size > limit:
        raise ProtocolError(f"frame of {size} bytes exceeds the limit of {limit}")
    return decode(await reader.readexactly(size))


class ControlServer:
    """Accepts control connections, authenticates them, and serves requests via `dispatch`."""

    def __init__(self, nodename: str, cookie: str, dispatch: Dispatch) -> None:
        self.nodename = nodename
        self.cookie = cookie
        self.dispatch = dispatch
        # Set while the app runs (PeerLinks.accept): takes over connections asking to link.
        self.link_handler: LinkHandler | None = None
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop accepting and end every connection (their reads fail; nothing is cancelled
        mid-reply, so the reply to a `stop` request has already gone out)."""
        if self.server is not None:
            self.server.close()
        for writer in list(self._writers):
            writer.close()
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        if others:
            await asyncio.wait(others, timeout=2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            if await self._authenticate(reader, writer, peer):
                await self._requests(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except (ProtocolError, ValueError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as e:
            log.warning("control connection from %s: %s", peer, e)
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            peer: Any) -> bool:
        server_nonce = os.urandom(NONCE_BYTES)
        writer.write(encode(hello(self.nodename, server_nonce)))
        msg = await asyncio.wait_for(_read_frame(reader, HANDSHAKE_FRAME_MAX),
                                     HANDSHAKE_TIMEOUT_S)
        client_nonce = msg.get("nonce") if isinstance(msg, dict) else None
        got = msg.get("proof") if isinstance(msg, dict) else None
        if not isinstance(client_nonce, bytes) or len(client_nonce) != NONCE_BYTES \
                or not isinstance(got, bytes):
            raise ProtocolError("malformed handshake")
        want = proof(self.cookie, b"client", server_nonce, client_nonce)
        if not hmac.compare_digest(got, want):
            log.warning("control connection from %s refused: cookie mismatch", peer)
            writer.write(encode({"error": cookie_mismatch_text(self.nodename),
                                 "code": EX_NOPERM}))
            await writer.drain()
            return False
        writer.write(encode({"proof": proof(self.cookie, b"server", client_nonce,
                                            server_nonce)}))
        await writer.drain()
        return True

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            req = await _read_frame(reader, FRAME_MAX)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ProtocolError("a request must be a map with a 'cmd'")
            args = req.get("args") or {}
            if req["cmd"] == LINK_COMMAND:
                handler = self.link_handler
                if handler is not None:
                    await handler(reader, writer, args if isinstance(args, dict) else {})
                    return
                writer.write(encode({"error": f"node {self.nodename} does not accept cluster "
                                     "links now: its app is not running (warrenctl start_app)",
                                     "code": EX_UNAVAILABLE}))
                await writer.drain()
                continue
            try:
                reply: dict = {"ok": await self.dispatch(req["cmd"], args)}
            except CommandError as e:
                reply = {"error": str(e), "code": e.exit_status}
            except Exception as e:  # the node keeps serving; the operator sees what broke
                log.exception("control command %s failed", req["cmd"])
                reply = {"error": f"internal error in '{req['cmd']}': {e!r}", "code": EX_SOFTWARE}
            writer.write(encode(reply))
            await writer.drain()


# -- client side (blocking; what warrenctl uses) ---------------------------------------------------
class ControlClient:
    """One authenticated connection to a node's control port."""

    def __init__(self, node: NodeName, cookie: str, timeout_s: float = 30.0) -> None:
        self.node = node
        self.cookie = cookie
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.remote_name = ""

    def connect(self) -> ControlClient:
        try:
            addresses = resolve(self.node)
        except HostUnresolved as e:
            raise HostNotFound(f"{e}: check the host part of the node name '{self.node}'"
                               ) from None
        last: OSError | None = None
        for family, sockaddr in addresses:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(min(self.timeout_s, 10.0))
            try:
                s.connect(sockaddr)
            except OSError as e:
                s.close()
                last = e
                continue
            self.sock = s
            break
        if self.sock is None:
            why = "connection refused" if isinstance(last, ConnectionRefusedError) else (
                "timed out" if isinstance(last, (TimeoutError, socket.timeout)) else
                (last.strerror if last is not None and last.strerror else str(last)))
            raise NodeUnreachable(
                f"node {self.node} is not running or not reachable ({why} on "
                f"{self.node.host}:{self.node.port}): start it with warren-server, or check "
                "the node name and cluster port given with -n")
        self.sock.settimeout(min(self.timeout_s, HANDSHAKE_TIMEOUT_S))
        try:
            msg = self._recv(HANDSHAKE_FRAME_MAX)
            reply, expected = answer_hello(self.cookie, msg)
        except (ControlError, ConnectionError, ValueError, msgpack.ExtraData,
                msgpack.FormatError, msgpack.StackError) as e:
            # whatever listens there is not a WarrenMQ node's cluster port
            self.close()
            raise NodeUnreachable(
                f"{self.node.host}:{self.node.port} does not answer as a WarrenMQ node "
                f"({e if isinstance(e, ProtocolError) else 'no control protocol greeting'}): "
                "check the cluster port given with -n") from None
        self.remote_name = str(msg.get("node", ""))
        try:
            self.sock.sendall(encode(reply))
            answer = self._recv(HANDSHAKE_FRAME_MAX)
        except (ConnectionError, ControlError):
            self.close()
            raise AuthenticationFailed(cookie_mismatch_text(str(self.node))) from None
        self.sock.settimeout(self.timeout_s)
        if isinstance(answer, dict) and "error" in answer:
            self.close()
            raise AuthenticationFailed(str(answer["error"]))
        try:
            check_server_proof(answer, expected)
        except AuthenticationFailed:
            self.close()
            raise
        return self

    def call(self, cmd: str, args: dict | None = None) -> Any:
        assert self.sock is not None, "connect() first"
        self.sock.sendall(encode({"cmd": cmd, "args": args or {}}))
        reply = self._recv(FRAME_MAX)
        if not isinstance(reply, dict):
            raise ProtocolError("malformed reply from the node")
        if "error" in reply:
            raise RemoteError(str(reply["error"]), int(reply.get("code") or EX_SOFTWARE))
        return reply.get("ok")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> ControlClient:
        return self.connect() if self.sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv(self, limit: int) -> Any:
        header = self._recv_exact(4)
        (size,) = _LEN.unpack(header)
        if size > limit:
            raise ProtocolError(f"frame of {size} bytes exceeds the limit of {limit}")
        return decode(self._recv_exact(size))

    def _recv_exact(self, n: int) -> bytes:
        assert self.sock is not None
        parts: list[bytes] = []
        while n:
            try:
                chunk = self.sock.recv(min(n, 1 << 20))
            except TimeoutError:
                raise ControlError(f"node {self.node} did not answer within "
                                   f"{self.timeout_s:g}s (use --timeout to wait longer)"
                                   ) from None
            if not chunk:
                raise ConnectionResetError("the node closed the connection")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)


# -- client side (asyncio; for node-to-node use) -------------------------------------------------------
async def open_async(node: NodeName, cookie: str, timeout_s: float = 10.0
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and authenticate from inside a node; the caller then sends encode({"cmd"...})."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(node.host, node.port), timeout_s)
    except OSError as e:
        raise NodeUnreachable(f"node {node} is not reachable: {e}") from None
    msg = await asyncio.wait_for(_read_frame(reader, HANDSHAKE_FRAME_MAX), timeout_s)
    reply, expected = answer_hello(cookie, msg)
    writer.write(encode(reply))
    answer = await asyncio.wait_for(_read_frame(reader, HANDSHAKE_FRAME_MAX), timeout_s)
    try:
        check_server_proof(answer, expected)
    except AuthenticationFailed:
        writer.close()
        raise
    return reader, writer


async def call_async(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cmd: str,
                     args: dict | None = None) -> Any:
    writer.write(encode({"cmd": cmd, "args": args or {}}))
    reply = await _read_frame(reader, FRAME_MAX)
    if "error" in reply:
        raise RemoteError(str(reply["error"]), int(reply.get("code") or EX_SOFTWARE))
    return reply.get("ok")
