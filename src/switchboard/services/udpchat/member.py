"""One room member's I/O: a UDP endpoint connected to the room, and one queue.

Datagrams from the server, ICMP errors (nobody listening there yet) and the lines the person
types (``put_line``, from the loop's thread) arrive on one queue as ``Datagram``, ``Icmp``
and ``Line``; ``next(timeout)`` returns the next one (None at the timeout, which the caller
takes from ``ChatPeer.next_deadline``); ``send`` puts a datagram on the wire.  It decides
nothing and prints nothing: ``ChatPeer`` (pure) is the session, ``cli.udpchat_join`` what
the person sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from .room import Address


@dataclass
class Datagram:
    """A datagram from the server."""

    data: bytes


@dataclass
class Line:
    """A line typed (with its newline), or ``b""`` at the end of input."""

    data: bytes


@dataclass
class Icmp:
    """An ICMP error for a datagram sent: usually port unreachable (nobody listens yet)."""

    error: Exception


Input = Datagram | Line | Icmp


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, put: Callable[[Input], None]) -> None:
        self.put = put
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.put(Datagram(data))

    def error_received(self, exc: Exception) -> None:
        # Port unreachable: nobody listens there (yet).  Retries go on; never fatal.
        self.put(Icmp(exc))


class MemberLink:
    """The endpoint and the queue of one member; ``open`` before use, ``close`` after."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Input] = asyncio.Queue()
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self, server: tuple[str, int]) -> None:
        """Create the endpoint, connected to the room at ``server`` (OSError if it cannot)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self.queue.put_nowait), remote_addr=server
        )
        self._transport = transport

    def put_line(self, data: bytes) -> None:
        """A line typed (``b""``: end of input).  On the loop's thread only."""
        self.queue.put_nowait(Line(data))

    async def next(self, timeout: float | None) -> Input | None:
        """The next input, or None when ``timeout`` seconds pass without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def can_send(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, data: bytes) -> None:
        """Put ``data`` on the wire (dropped once the endpoint is closing)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


__all__ = ["Datagram", "Icmp", "Input", "Line", "MemberLink"]
