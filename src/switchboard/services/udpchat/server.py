"""The UDP chat room's asyncio shell: a DatagramProtocol around ``room.ChatRoom``.

It only moves datagrams and reads clocks; the room decides.  Nothing a peer sends can crash
it: undecodable datagrams are counted and logged (summarised when they come in floods), and
ICMP errors (``error_received``, e.g. port unreachable from a client that went away) are
logged and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Final, cast

from switchboard import defaults
from switchboard.display import safe

from .room import Address, ChatRoom, Outgoing, RoomEvent

log: Final = logging.getLogger("switchboard.services.udpchat")

#: Seconds between summaries of garbage datagrams: the first one is logged at once, the
#: ones after it are counted and reported together so a flood cannot flood the log.
GARBAGE_SUMMARY_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class UdpChatConfig:
    host: str = defaults.HOST
    port: int = defaults.UDPCHAT_PORT
    member_expiry_s: float = defaults.UDPCHAT_MEMBER_EXPIRY_S
    max_members: int = defaults.UDPCHAT_MAX_MEMBERS
    max_per_address: int = defaults.UDPCHAT_MAX_MEMBERS_PER_ADDRESS


def _describe(addr: Address) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class UdpChatServer(asyncio.DatagramProtocol):
    """The room's server.  ``async with UdpChatServer(config) as server: ...``"""

    def __init__(self, config: UdpChatConfig | None = None) -> None:
        self.config = config or UdpChatConfig()
        self.room = ChatRoom(
            max_members=self.config.max_members,
            max_per_address=self.config.max_per_address,
            member_expiry_s=self.config.member_expiry_s,
        )
        self.transport: asyncio.DatagramTransport | None = None
        self.icmp_errors = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._garbage_unreported = 0
        self._garbage_reported_at = float("-inf")
        self._garbage_summary: asyncio.TimerHandle | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.config.host, self.config.port)
        )
        log.info(
            "udp chat room listening on %s",
            _describe(self.transport.get_extra_info("sockname") if self.transport else ("?", 0)),
        )

    async def close(self) -> None:
        """Tell every member the server is stopping, then close the socket."""
        if self.transport is None or self.transport.is_closing():
            return
        self._send(self.room.shutdown(wall_ms()))
        for handle in (self._sweeper, self._garbage_summary):
            if handle is not None:
                handle.cancel()
        self._report_garbage()
        self.transport.close()
        s = self.room.stats
        log.info(
            "udp chat room stopped: %d joins, %d refused, %d leaves, %d expired, %d relayed, "
            "%d duplicates, %d garbage",
            s.joins, s.refused, s.leaves, s.expired, s.relayed, s.duplicates, s.garbage,
        )  # fmt: skip

    async def __aenter__(self) -> UdpChatServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- asyncio.DatagramProtocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._schedule_sweep()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            out = self.room.receive(data, addr, asyncio.get_running_loop().time(), wall_ms())
        except Exception:  # a bug must cost one datagram, never the room
            log.exception("internal error on a datagram from %s", _describe(addr))
            return
        self._send(out)
        self._log_events()

    def error_received(self, exc: Exception) -> None:
        # ICMP port/host unreachable for something we sent: the client is gone; expiry will
        # notice.  Never fatal.
        self.icmp_errors += 1
        log.debug("ICMP error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # --- internals -----------------------------------------------------------------------------

    def _send(self, out: list[Outgoing]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data, addr in out:
            try:
                transport.sendto(data, addr)
            except OSError as exc:  # pragma: no cover - UDP reports errors via error_received
                log.debug("sendto %s failed: %s", _describe(addr), exc)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.config.member_expiry_s / 4)
        self._sweeper = loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        out = self.room.expire(asyncio.get_running_loop().time(), wall_ms())
        self._send(out)
        self._log_events()
        self._schedule_sweep()

    def _log_events(self) -> None:
        for event in self.room.pop_events():
            self._log(event)

    def _log(self, event: RoomEvent) -> None:
        where = _describe(event.addr)
        members = len(self.room.by_token)
        nick = safe(event.nick)  # a refused one may hold anything: the one escaping policy
        match event.kind:
            case "joined":
                log.info("join '%s' from %s (members=%d)", nick, where, members)
            case "left":
                log.info("leave '%s' from %s (members=%d)", nick, where, members)
            case "expired":
                log.info("expired '%s' at %s: silent %s (members=%d)", nick, where,
                         event.detail, members)  # fmt: skip
            case "refused":
                log.info("refused join '%s' from %s: %s", nick, where, safe(event.detail))
            case "garbage":
                self._garbage(where, event.detail)

    def _garbage(self, where: str, reason: str) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._garbage_reported_at >= GARBAGE_SUMMARY_S:
            self._garbage_reported_at = now
            log.warning(
                "ignored garbage datagram from %s: %s (%d so far)",
                where, reason, self.room.stats.garbage,
            )  # fmt: skip
            return
        self._garbage_unreported += 1
        if self._garbage_summary is None:
            self._garbage_summary = loop.call_at(
                self._garbage_reported_at + GARBAGE_SUMMARY_S, self._report_garbage
            )

    def _report_garbage(self) -> None:
        self._garbage_summary = None
        if self._garbage_unreported:
            log.warning(
                "ignored %d more garbage datagrams (%d so far)",
                self._garbage_unreported, self.room.stats.garbage,
            )  # fmt: skip
            self._garbage_unreported = 0
            self._garbage_reported_at = asyncio.get_running_loop().time()


async def serve(config: UdpChatConfig, stop: asyncio.Event) -> None:
    """Run the room until ``stop`` is set."""
    async with UdpChatServer(config):
        await stop.wait()
