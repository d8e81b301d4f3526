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

Writing: ``write`` gets what the connection flushes (one or more whole frames), splits it at
the frames' headers and queues one message per frame for the sender task, which hands them
to aiohttp (which writes each at once and waits only while the socket's own buffer is above
its mark: ``writer_limit=0``).  What is queued here plus what the socket holds is the
transport's buffer size: past the connection's high-water mark the connection hears
``pause_writing``, below the low-water mark ``resume_writing``, exactly as from TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from switchboard import defaults
from switchboard.protocol import HEADER_SIZE, ErrorCode
from switchboard.protocol.codec import HEADER_WORDS

from .connection import ClientConnection

log = logging.getLogger("switchboard.server")

_unpack_header = HEADER_WORDS.unpack_from

#: aiohttp's WebSocket errors that only say the peer has gone.
_GONE = (ConnectionError, RuntimeError)


class WebSocketTransport:
    """A ClientConnection's transport over one WebSocket (server/transport.Transport)."""

    __slots__ = (
        "_close_code",
        "_closing",
        "_high",
        "_low",
        "_paused",
        "_peer",
        "_protocol",
        "_queue",
        "_queued",
        "_reading",
        "_resumed",
        "_sender",
        "_tcp",
        "_wakeup",
        "_ws",
    )

    def __init__(
        self, ws: web.WebSocketResponse, tcp: asyncio.Transport, peer: tuple[str, int]
    ) -> None:
        self._ws = ws
        self._tcp = tcp
        self._peer = peer
        self._protocol: ClientConnection | None = None
        #: One message per frame, not yet handed to aiohttp, and their bytes.
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._high = 64 * 1024
        self._low = 16 * 1024
        #: The connection was told pause_writing (and not resume_writing since).
        self._paused = False
        self._reading = True
        self._resumed: asyncio.Future[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._closing = False
        self._close_code = WSCloseCode.OK
        self._sender: asyncio.Task[None] | None = None

    # --- Transport ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        queue = self._queue
        size = len(data)
        length = _unpack_header(data, 0)[3] + HEADER_SIZE
        if length == size:  # one frame: the common case
            queue.append(data)
        else:
            pos = 0
            while pos < size:
                end = pos + HEADER_SIZE + _unpack_header(data, pos)[3]
                queue.append(data[pos:end])
                pos = end
        self._queued += size
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(None)
        if not self._paused and self.get_write_buffer_size() > self._high:
            self._paused = True
            if self._protocol is not None:
                self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self._queued + self._tcp.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        # asyncio's defaults and rule: low is a quarter of high unless given.
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low
        # The socket's own buffer stays under half the low mark, so that once this queue is
        # empty the whole is below it (``_send``'s resume check).
        tcp_high = self._low // 2
        self._tcp.set_write_buffer_limits(high=tcp_high, low=tcp_high // 4)

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        resumed = self._resumed
        if resumed is not None:
            self._resumed = None
            resumed.set_result(None)

    def close(self) -> None:
        """Send what is queued, then the close frame (``_send``)."""
        if not self._closing:
            self._closing = True
            self._wake()

    def abort(self) -> None:
        self._closing = True
        self._queue.clear()
        self._queued = 0
        self._tcp.abort()
        self._wake()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "websocket":
            return self._ws
        return self._tcp.get_extra_info(name, default)

    # --- the reader and the sender -------------------------------------------------------------

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(None)
        resumed = self._resumed
        if resumed is not None:  # a paused reader ends too
            self._resumed = None
            resumed.set_result(None)

    async def run(self, conn: ClientConnection) -> None:
        """Serve ``conn`` until the WebSocket closes: read messages into it here, send what
        it writes from a task of its own; ``conn.connection_lost`` once both have ended."""
        loop = asyncio.get_running_loop()
        self._protocol = conn
        self._sender = loop.create_task(self._send())
        error: Exception | None = None
        try:
            conn.connection_made(self)
            error = await self._read(conn, loop)
        finally:
            self.close()
            try:
                await self._sender
            finally:
                conn.connection_lost(error)

    async def _read(
        self, conn: ClientConnection, loop: asyncio.AbstractEventLoop
    ) -> Exception | None:
        ws = self._ws
        max_frame = conn.decoder.max_payload + HEADER_SIZE
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
                conn.fail(ErrorCode.BAD_FRAME, "frames go in binary WebSocket messages, not text")
            elif kind is WSMsgType.ERROR:
                # aiohttp has closed the WebSocket with the code it names (1009 for a message
                # over the frame limit, refused from its header; 1002 for bad framing).
                exc = msg.data
                if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                    conn.close(
                        f"protocol error: FRAME_TOO_LARGE (a WebSocket message over "
                        f"{max_frame} bytes)"
                    )
                    return None
                return exc if isinstance(exc, Exception) else None
            else:  # CLOSE, CLOSING, CLOSED: the peer or we have closed it
                return None
        return None

    async def _send(self) -> None:
        ws = self._ws
        queue = self._queue
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    frame = queue.popleft()
                    self._queued -= len(frame)
                    await ws.send_bytes(frame)  # waits while the socket is above its mark
                    if self._paused and self.get_write_buffer_size() <= self._low:
                        self._paused = False
                        if self._protocol is not None:
                            self._protocol.resume_writing()
                if self._closing:
                    break
                self._wakeup = loop.create_future()
                await self._wakeup
            if not self._tcp.is_closing():
                # The close frame, then the peer's (RFC 6455 7.1.1), within a deadline.
                async with asyncio.timeout(defaults.WEBSOCKET_CLOSE_TIMEOUT_S):
                    await ws.close(code=self._close_code)
        except (TimeoutError, *_GONE):
            self._tcp.abort()
        finally:
            with contextlib.suppress(Exception):
                self._tcp.close()
            # A reader paused by back-pressure would never see the socket go: it ends now.
            self._closing = True
            self._wake()
