"""What a connection needs of whatever carries its bytes: TCP (and TLS) today, through
asyncio's transports; a WebSocket or an in-memory pair next, with the same handlers, limits
and back-pressure.

A carrier gives the connection its bytes by calling ``ClientConnection.data_received`` and
tells it about its send buffer through ``pause_writing``/``resume_writing`` (asyncio's
Protocol calls); the connection answers through the methods below, and nothing else.
"""

from __future__ import annotations

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
