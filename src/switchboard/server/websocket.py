"""The WebSocket transport: one ClientConnection's bytes over an aiohttp WebSocket.

``WebSocketTransport`` implements server/transport.Transport, so a browser is served by the
same ClientConnection, handler tables, limits, heartbeats and back-pressure as a TCP client.
docs/PROTOCOL.md ("WebSocket transport") is its specification: one protocol frame per binary
WebSocket message, in both directions.

Reading: ``run`` takes one message at a time from aiohttp and gives its bytes to the
connection's ``data_received`` (the split loop).  ``pause_reading`` stops it taking the next
message; aiohttp's own queue then fills and it stops reading the socket, as asyncio's TCP
transport does.  A message that is not exactly one frame, a text message, or one longer than
the frame limit (refused by aiohttp from its header, before its payload is read) ends the
connection with a typed error.

Writing: ``write`` gets what the connection flushes (one or more whole frames) and writes
each as one binary WebSocket message straight to the socket's transport, in one write
(RFC 6455 5.2: a server's frames are unmasked, so a message is its 2-10 byte header and the
bytes as they are).  aiohttp's own writer is async (a coroutine per message, which would
need a task per connection to run it); writing synchronously keeps a WebSocket's cost to
the TCP transport's: the transport's buffer is the connection's buffer, its marks the
connection's marks, and its pause_writing/resume_writing reach the connection through the
listener's protocol (``http._GuardedConnection``), exactly as for a TCP client.  aiohttp
still writes the control frames (PONG, CLOSE), each whole, between ours.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from switchboard import defaults
from switchboard.protocol import HEADER_SIZE, ErrorCode
from switchboard.protocol.codec import HEADER_WORDS

from .connection import ClientConnection

log = logging.getLogger("switchboard.server")

_unpack_header = HEADER_WORDS.unpack_from
#: A final binary frame's first byte (FIN, opcode 2), then its length: in the second byte
#: below 126, else 126 and a u16, or 127 and a u64 (RFC 6455 5.2).
_BINARY = 0x82
_SHORT = struct.Struct("!BB").pack
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack


def message_header(size: int) -> bytes:
    """The header of an unmasked binary WebSocket message of ``size`` bytes."""
    if size < 126:
        return _SHORT(_BINARY, size)
    if size < 65536:
        return _MEDIUM(_BINARY, 126, size)
    return _LONG(_BINARY, 127, size)


class WebSocketTransport:
    """A ClientConnection's transport over one WebSocket (server/transport.Transport)."""

    __slots__ = ("_close_code", "_closer", "_closing", "_peer", "_protocol", "_reading",
                 "_resumed", "_tcp", "_ws")  # fmt: skip

    def __init__(
        self, ws: web.WebSocketResponse, tcp: asyncio.Transport, peer: tuple[str, int]
    ) -> None:
        self._ws = ws
        self._tcp = tcp
        self._peer = peer
        self._protocol: ClientConnection | None = None
        self._reading = True
        #: Set while the reader waits for resume_reading (or for the end).
        self._resumed: asyncio.Future[None] | None = None
        self._closing = False
        self._close_code = WSCloseCode.OK
        #: The closing handshake, once ``close`` has started it (a task only then: the
        #: reader may be waiting in aiohttp's receive, which the close frame ends).
        self._closer: asyncio.Task[None] | None = None

    # --- Transport ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        size = len(data)
        length = _unpack_header(data, 0)[3] + HEADER_SIZE
        if length == size:  # one frame: the common case
            self._tcp.write(message_header(size) + data)
            return
        parts = []
        pos = 0
        while pos < size:
            end = pos + HEADER_SIZE + _unpack_header(data, pos)[3]
            parts.append(message_header(end - pos))
            parts.append(data[pos:end])
            pos = end
        self._tcp.write(b"".join(parts))

    def get_write_buffer_size(self) -> int:
        return self._tcp.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tcp.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        self._wake_reader()

    def close(self) -> None:
        """What is written goes first, then the close frame, then the peer's (``_close``)."""
        if not self._closing:
            self._closing = True
            self._wake_reader()
            self._closer = asyncio.get_running_loop().create_task(self._close())

    def abort(self) -> None:
        self._closing = True
        self._tcp.abort()
        self._wake_reader()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "websocket":
            return self._ws
        return self._tcp.get_extra_info(name, default)

    # --- from the socket's transport (through http._GuardedConnection) ------------------------

    def pause_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.resume_writing()

    def connection_lost(self) -> None:
        """The socket is gone: a reader paused by back-pressure would never see it."""
        self._closing = True
        self._wake_reader()

    # --- the reader ----------------------------------------------------------------------------

    def _wake_reader(self) -> None:
        resumed = self._resumed
        if resumed is not None:
            self._resumed = None
            if not resumed.done():
                resumed.set_result(None)

    async def run(self, conn: ClientConnection) -> None:
        """Serve ``conn`` until the WebSocket closes (messages read into it here); then
        close it as ``conn`` asked, and ``conn.connection_lost``."""
        loop = asyncio.get_running_loop()
        self._protocol = conn
        error: Exception | None = None
        try:
            conn.connection_made(self)
            # The reading loop, in this coroutine: one frame less per idle connection.
            ws = self._ws
            while not self._closing:
                if not self._reading:
                    self._resumed = loop.create_future()
                    await self._resumed
                    continue
                msg = await ws.receive()
                kind = msg.type
                if kind is WSMsgType.BINARY:
                    data = msg.data
                    size = len(data)
                    if size >= HEADER_SIZE and _unpack_header(data, 0)[3] + HEADER_SIZE == size:
                        conn.data_received(data)
                        continue
                    self._close_code = WSCloseCode.PROTOCOL_ERROR
                    conn.fail(
                        ErrorCode.BAD_FRAME,
                        f"a WebSocket message carries exactly one frame (this one: {size} bytes)",
                    )
                elif kind is WSMsgType.TEXT:
                    self._close_code = WSCloseCode.UNSUPPORTED_DATA
                    conn.fail(
                        ErrorCode.BAD_FRAME, "frames go in binary WebSocket messages, not text"
                    )
                elif kind is WSMsgType.ERROR:
                    # aiohttp has closed the WebSocket with the code it names (1009: a
                    # message over the frame limit, refused from its header; 1002: bad
                    # framing).
                    if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                        limit = conn.server.max_payload + HEADER_SIZE
                        conn.close(
                            "protocol error: FRAME_TOO_LARGE (a WebSocket message over "
                            f"{limit} bytes)"
                        )
                    elif isinstance(msg.data, Exception):
                        error = msg.data
                    break
                else:  # CLOSE, CLOSING, CLOSED: the peer or we have closed it
                    break
        finally:
            self._closing = True
            try:
                await (self._closer or self._close())
            finally:
                conn.connection_lost(error)

    async def _close(self) -> None:
        """The close frame, then the peer's (RFC 6455 7.1.1), within a deadline; what was
        written before it goes first (the socket's transport keeps the order)."""
        tcp = self._tcp
        if tcp.is_closing():
            return
        try:
            async with asyncio.timeout(defaults.WEBSOCKET_CLOSE_TIMEOUT_S):
                await self._ws.close(code=self._close_code)
        except (TimeoutError, ConnectionError, RuntimeError):
            tcp.abort()
        else:
            tcp.close()
