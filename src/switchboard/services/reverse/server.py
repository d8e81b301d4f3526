"""The reversal service's asyncio server: one ``ReverseSession`` protocol per connection.

The session only moves bytes: it feeds them to ``core.LineSplitter`` and writes what
``core.answer_line`` decides.  What it owns is the socket's life: the idle timer, the close
after a goodbye or an error, back-pressure (a client that does not read its answers stops
being read), and the guarantee that every socket it was handed is released: a peer's EOF is
always answered by our close (no socket left in CLOSE_WAIT), and a close the peer does not
complete within ``close_grace_s`` becomes an abort, so no descriptor lingers behind a peer
that never reads or never closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from dataclasses import dataclass
from typing import Final, cast

from switchboard import defaults

from .core import (
    SERVER_FULL,
    SHUTTING_DOWN,
    LineSplitter,
    LineTooLong,
    Reply,
    answer_line,
    idle_reply,
)

log: Final = logging.getLogger("switchboard.services.reverse")


@dataclass(frozen=True, slots=True)
class ReverseConfig:
    """Everything the server can be told; the defaults come from ``switchboard.defaults``."""

    host: str = defaults.HOST
    port: int = defaults.REVERSE_PORT
    idle_timeout_s: float = defaults.REVERSE_IDLE_TIMEOUT_S
    max_line: int = defaults.REVERSE_MAX_LINE
    max_clients: int = defaults.REVERSE_MAX_CLIENTS
    close_grace_s: float = defaults.REVERSE_CLOSE_GRACE_S


def _describe(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


class ReverseSession(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: ReverseServer, session_id: int) -> None:
        self.server = server
        self.session_id = session_id
        self.peer = "?"
        self.splitter = LineSplitter(server.config.max_line)
        self.lines = 0
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._last_activity = self._loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._close_reason = ""
        self._paused = False

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _describe(transport.get_extra_info("peername"))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self.server
        if server.closing:
            self.refuse(SHUTTING_DOWN, "server shutting down")
            return
        if len(server.sessions) >= server.config.max_clients:
            log.warning("refused #%d %s: server full", self.session_id, self.peer)
            self.refuse(SERVER_FULL, "server full")
            return
        server.sessions.add(self)
        log.info("connect #%d %s", self.session_id, self.peer)
        self._idle_handle = self._loop.call_at(
            self._last_activity + server.config.idle_timeout_s, self._idle_check
        )

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_activity = self._loop.time()
        out: list[bytes] = []
        for item in self.splitter.feed(data):
            if isinstance(item, LineTooLong):
                reply, reason = item.reply, f"line longer than {item.limit} bytes"
            else:
                self.lines += 1
                reply, reason = answer_line(item), "goodbye"
            out.append(reply.encode())
            if reply.close:
                self._write(b"".join(out))
                self._close(reason)
                return
        if out:
            self._write(b"".join(out))

    def eof_received(self) -> bool:
        # A peer that half-closes after an unterminated line still gets it answered.
        rest = self.splitter.finish()
        if rest is not None and not self._closing:
            self.lines += 1
            self._write(answer_line(rest).encode())
        self._close("peer closed")
        # Both directions are done now (ours may still be flushing: close() waits for that).
        assert self.transport is not None
        self.transport.close()
        return True

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its questions (unless we are
        # closing, when its input is being drained; see _close).
        self._paused = True
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._idle_handle, self._abort_handle):
            if handle is not None:
                handle.cancel()
        self._idle_handle = self._abort_handle = None
        self._closing = True
        self.server.sessions.discard(self)
        if self.server.sessions_idle is not None and not self.server.sessions:
            self.server.sessions_idle.set()
        reason = self._close_reason or "connection lost"
        if exc is not None:
            reason = f"{reason}: {exc.__class__.__name__}: {exc}"
        if self._close_reason not in ("server full", "server shutting down"):
            log.info(
                "disconnect #%d %s (%s, lines=%d)", self.session_id, self.peer, reason, self.lines
            )

    # --- closing ---------------------------------------------------------------------------

    def refuse(self, reply: Reply, reason: str) -> None:
        """Turn away a connection that was never admitted: one line, then close at once.

        No lingering close here (see ``_close``): a refusal must cost neither a session slot
        nor a descriptor for ``close_grace_s``, or a crowd turned away from a full server
        would keep it full and pile up descriptors.  The price: a peer that sent a line
        before reading the refusal may get a reset instead of it, and then sees the
        connection fail, which is what a refusal is.
        """
        self._closing = True
        self._close_reason = reason
        assert self.transport is not None
        self.transport.write(reply.encode())
        self.transport.close()

    def finish(self, reply: Reply, reason: str) -> None:
        """Send a last line and close."""
        if self._closing:
            return
        self._write(reply.encode())
        self._close(reason)

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    def _close(self, reason: str) -> None:
        """End the session gracefully: a lingering close, as HTTP servers do.

        Closing a socket whose receive queue holds unread bytes makes the kernel send RST,
        and a peer that gets RST may discard our last line (the goodbye, the error) before
        reading it.  So we only shut down our side (FIN after the buffered answers), keep
        reading and discarding until the peer closes too, and abort after ``close_grace_s``
        if it never does: a peer that neither reads nor closes cannot pin the descriptor.
        """
        if self._closing:
            return
        self._closing = True
        self._close_reason = reason
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        transport = self.transport
        assert transport is not None
        self._abort_handle = self._loop.call_later(
            self.server.config.close_grace_s, self._linger_over
        )
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            if self._paused:
                transport.resume_reading()
        else:
            transport.close()

    def _linger_over(self) -> None:
        self._close_reason += ", peer did not close within the grace period"
        self._abort()

    def _abort(self) -> None:
        self._abort_handle = None
        if self.transport is not None:
            log.debug("abort #%d %s (%s)", self.session_id, self.peer, self._close_reason)
            self.transport.abort()

    def _idle_check(self) -> None:
        self._idle_handle = None
        if self._closing:
            return
        timeout = self.server.config.idle_timeout_s
        deadline = self._last_activity + timeout
        if self._loop.time() < deadline:
            self._idle_handle = self._loop.call_at(deadline, self._idle_check)
            return
        log.info("idle #%d %s: silent for %g s", self.session_id, self.peer, timeout)
        if self._paused and self.transport is not None:
            # Not reading for a whole idle period: nothing more can be told to it.
            self._close_reason = "idle, not reading"
            self._closing = True
            self._abort()
            return
        self.finish(idle_reply(timeout), "idle timeout")


class ReverseServer:
    """The listener and its sessions.  ``async with ReverseServer(config) as server: ...``"""

    def __init__(self, config: ReverseConfig | None = None) -> None:
        self.config = config or ReverseConfig()
        self.sessions: set[ReverseSession] = set()
        self.sessions_idle: asyncio.Event | None = None
        self.closing = False
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self._server is None else list(self._server.sockets)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        port: int = self.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.sessions_idle = asyncio.Event()
        self._server = await loop.create_server(
            lambda: ReverseSession(self, next(self._ids)),
            host=self.config.host,
            port=self.config.port,
            reuse_address=True,
            backlog=512,
        )
        for sock in self._server.sockets:
            log.info("reverse service listening on %s", _describe(sock.getsockname()))

    async def close(self) -> None:
        """Stop listening, tell every session the server is going, and wait for them."""
        if self._server is None or self.closing:
            return
        self.closing = True
        self._server.close()
        for session in list(self.sessions):
            session.finish(SHUTTING_DOWN, "server shutting down")
        if self.sessions and self.sessions_idle is not None:
            self.sessions_idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sessions_idle.wait(), self.config.close_grace_s + 1)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()
        await self._server.wait_closed()
        log.info("reverse service stopped")

    async def __aenter__(self) -> ReverseServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def serve(config: ReverseConfig, stop: asyncio.Event) -> None:
    """Run the service until ``stop`` is set."""
    async with ReverseServer(config):
        await stop.wait()
