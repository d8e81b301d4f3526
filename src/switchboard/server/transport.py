"""What a connection needs of whatever carries its bytes: TCP (and TLS) today, through
asyncio's transports; a WebSocket or an in-memory pair next, with the same handlers, limits
and back-pressure.

A carrier gives the connection its bytes by calling ``ClientConnection.data_received`` and
tells it about its send buffer through ``pause_writing``/``resume_writing`` (asyncio's
Protocol calls); the connection answers through the methods below, and nothing else.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any, Protocol


class Transport(Protocol):
    """The subset of ``asyncio.Transport`` a ``ClientConnection`` uses."""

    def write(self, data: bytes) -> None:
        """Queue ``data``; a carrier calls ``pause_writing`` past its high-water mark."""

    def get_write_buffer_size(self) -> int:
        """Bytes queued and not yet sent."""

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Where ``pause_writing`` and ``resume_writing`` are called."""

    def pause_reading(self) -> None:
        """Stop calling ``data_received`` until ``resume_reading``."""

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        """Send what is queued, then close."""

    def abort(self) -> None:
        """Close at once, dropping what is queued."""

    def is_closing(self) -> bool: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """ "peername" (the peer's (host, port)) and, for TCP, "socket"; None if unknown."""


def enable_keepalive(listening: Iterable[socket.socket], heartbeat: float) -> None:
    """TCP keepalive, as a second line of defence behind the heartbeat, on every socket a
    listener accepts: set once on the listening sockets, whose options Linux copies to each
    socket it accepts (SO_KEEPALIVE and the TCP_KEEP* timings), rather than by three system
    calls and a socket object kept per connection."""
    # Linux takes 1-32,767 s for both.
    idle = min(max(1, int(heartbeat * 3)), 32_767)
    interval = min(max(1, int(heartbeat)), 32_767)
    for sock in listening:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        except OSError:
            pass  # not a TCP socket (a Unix socket): keepalive does not apply
