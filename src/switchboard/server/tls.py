"""The TLS handshake of one connection, started by the server so that a failure is logged.

With ``create_server(ssl=...)`` asyncio and uvloop both drop a failed handshake without a
word (the SSL error is an OSError, logged only in the loop's debug mode), so an operator never
sees a client with the wrong CA or a plain client at a TLS port.  Instead the listener is
plain TCP and each connection starts as a ``TlsHandshake``, which runs ``loop.start_tls``
and hands the TLS transport to its ClientConnection, or logs why it could not.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Protocol, cast

from switchboard.protocol.trace import host_port

from .admission import source_of
from .logs import RepeatedEvents


class HandshakeServer(Protocol):
    """What a handshake uses of the server (server.app.SwitchboardServer implements it)."""

    source_log: RepeatedEvents

    def start_tls(self, handshake: TlsHandshake) -> None: ...


#: Bytes a peer may send before the handshake takes over: a ClientHello is a few hundred
#: bytes (at most one 16 KiB TLS record in practice).
MAX_EARLY_BYTES = 64 * 1024


class TlsHandshake(asyncio.Protocol):
    """A connection to a TLS server until its handshake is done."""

    def __init__(self, server: HandshakeServer, conn: asyncio.BaseProtocol) -> None:
        self.server = server
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.port = 0
        #: Bytes that arrived before start_tls took the transport over.  uvloop (0.23) hands
        #: the ClientHello to this protocol even after pause_reading() in connection_made,
        #: and start_tls would then wait for a ClientHello already consumed.
        self.early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.ip, self.port = peer[0], peer[1]
        transport.pause_reading()
        self.server.start_tls(self)

    def refuse(self, reason: str) -> None:
        """Close at once, before any handshake (the server has too many under way)."""
        if self.transport is not None:
            self.transport.abort()
        self._log_failure(reason)

    def data_received(self, data: bytes) -> None:
        self.early += data
        if len(self.early) > MAX_EARLY_BYTES and self.transport is not None:
            self.transport.abort()  # not a TLS client; the handshake fails and says so

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # the handshake (``run``) fails and is logged

    async def run(self, context: ssl.SSLContext, timeout: float) -> asyncio.Transport | None:
        """Do the handshake; the TLS transport, or None after logging why there is none."""
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        handshake = loop.create_task(
            loop.start_tls(
                transport, self.conn, context, server_side=True, ssl_handshake_timeout=timeout
            )
        )
        try:
            # start_tls has now installed its protocol and scheduled its connection_made:
            # the bytes this protocol took are given to it right after, before any new read.
            await asyncio.sleep(0)
            loop.call_soon(self._hand_over_early_bytes)
            return await handshake
        except asyncio.CancelledError:  # the server is shutting down
            handshake.cancel()
            transport.abort()
            raise
        except Exception as exc:  # whatever the peer did (or failed to do): one line, no traceback
            transport.abort()
            self._log_failure(getattr(exc, "reason", None) or str(exc) or type(exc).__name__)
            return None

    def _log_failure(self, reason: str) -> None:
        self.server.source_log.event(
            "tls failed",
            logging.WARNING,
            "tls_failed",
            "TLS handshake failed from %s: %s",
            host_port(self.ip, self.port),
            reason,
            source=source_of(self.ip)[0],
            ip=self.ip,
            port=self.port,
            reason=reason,
        )

    def _hand_over_early_bytes(self) -> None:
        transport = self.transport
        if not self.early or transport is None or transport.is_closing():
            return
        # uvloop's SSLProtocol is a BufferedProtocol without subclassing it.
        tls_protocol = cast(asyncio.BufferedProtocol, transport.get_protocol())
        if not hasattr(tls_protocol, "buffer_updated"):
            return  # not start_tls's protocol (it failed at once): nothing to hand over
        data = memoryview(bytes(self.early))
        self.early.clear()
        while data:
            buf = memoryview(tls_protocol.get_buffer(len(data)))
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            tls_protocol.buffer_updated(n)
            data = data[n:]
