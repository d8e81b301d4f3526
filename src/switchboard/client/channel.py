"""How the blocking client moves bytes: a plain socket, or TLS over one.

The receiver thread calls ``recv`` while callers call ``send``.  Plain sockets allow that.
An OpenSSL connection must not be used by two threads at once, so ``TlsChannel`` runs
TLS in memory (``ssl.MemoryBIO``) under a lock and does the socket I/O outside it: the
receiver never holds the lock while it waits for the network.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading

from .errors import ConnectionFailed, ConnectionLost
from .session import silence_reason

_RECV_SIZE = 256 * 1024


class SocketChannel:
    """A connected TCP socket, shared by a sending and a receiving thread.

    ``silence_limit`` (seconds, None: wait forever) bounds how long ``recv`` waits for the
    server: past it, ``recv`` raises ConnectionLost.  A server PINGs an idle client every
    heartbeat interval, so a silence of several intervals means it is gone (a pulled cable
    sends no FIN or RST: without this the receiver would wait for ever).  The wait uses
    poll rather than a socket timeout, which would also bound the caller's ``sendall``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.silence_limit: float | None = None
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        return self._recv_raw()

    def _recv_raw(self) -> bytes:
        limit = self.silence_limit
        if limit is not None and not self._wait_readable(limit):
            raise ConnectionLost(silence_reason(limit))
        return self.sock.recv(_RECV_SIZE)

    def _wait_readable(self, timeout: float) -> bool:
        """True once the socket is readable (data, EOF or an error), False after ``timeout``."""
        if self._poll is not None:
            return bool(self._poll.poll(timeout * 1000))
        readable, _, _ = select.select([self.sock], [], [self.sock], timeout)
        return bool(readable)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class TlsChannel(SocketChannel):
    """TLS over a connected socket, with the handshake done in the constructor."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(sock)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._lock = threading.Lock()
        try:
            self._handshake()
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionFailed(f"TLS certificate not accepted: {exc.verify_message}") from exc
        except (ssl.SSLError, OSError) as exc:
            raise ConnectionFailed(f"TLS handshake failed: {exc}") from exc

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_outgoing()
                data = self.sock.recv(_RECV_SIZE)
                if not data:
                    raise ConnectionFailed(
                        "the server closed the connection during the TLS handshake"
                    ) from None
                self._incoming.write(data)
        self._flush_outgoing()

    def _flush_outgoing(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self.sock.sendall(pending)

    def send(self, data: bytes) -> None:
        with self._lock:
            self._tls.write(data)
            self._flush_outgoing()

    def recv(self) -> bytes:
        while True:
            with self._lock:
                try:
                    return self._tls.read(_RECV_SIZE)
                except ssl.SSLWantReadError:
                    self._flush_outgoing()  # e.g. a TLS 1.3 key update to answer
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
            raw = self._recv_raw()
            with self._lock:
                if raw:
                    self._incoming.write(raw)
                else:
                    self._incoming.write_eof()

    def close(self) -> None:
        with self._lock, contextlib.suppress(ssl.SSLError, OSError):
            self._tls.unwrap()
            self._flush_outgoing()
        super().close()


def client_ssl_context(*, cafile: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A TLS context for clients: system CAs (or ``cafile``); ``insecure`` skips verification."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
