"""The chat room as the server keeps it, sans I/O: datagrams and clock readings in, datagrams
(with their destination) out.

``ChatRoom.receive(data, addr, now, wall_ms)`` handles one received datagram and returns the
datagrams to send; ``expire(now, wall_ms)`` removes members silent for too long.  ``now`` is a
monotonic clock in seconds (for timeouts), ``wall_ms`` the wall clock in milliseconds (for the
timestamps members see).  Nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from switchboard import defaults
from switchboard.names import NameIndex, normalise

from .codec import (
    ERROR_TEXT,
    JOIN_SIZE,
    MAX_EXPIRY_MS,
    Ack,
    Chat,
    ChatErrorCode,
    Datagram,
    DatagramError,
    Error,
    Join,
    Joined,
    Keepalive,
    Leave,
    Left,
    LeftReason,
    Relay,
    Shutdown,
    Welcome,
    decode,
    encode,
    nick_problem,
    text_problem,
)

#: A UDP peer address as asyncio reports it: (host, port) or (host, port, flow, scope).
Address = tuple[Any, ...]
Outgoing = tuple[bytes, Address]

#: How far behind the newest sequence number a datagram may arrive and still be relayed;
#: older ones are taken for duplicates (the anti-replay window of IPsec, RFC 4303, is 64 too).
REPLAY_WINDOW: Final = 64


class ReplayWindow:
    """Which sequence numbers of one sender were already seen, within the last 64."""

    __slots__ = ("highest", "mask")

    def __init__(self) -> None:
        self.highest = 0
        self.mask = 0  # bit i set: highest - i was seen

    def accept(self, seq: int) -> bool:
        """True the first time ``seq`` is offered; False for a duplicate or a too-old one."""
        if seq > self.highest:
            shift = seq - self.highest
            self.mask = ((self.mask << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.highest = seq
            return True
        offset = self.highest - seq
        if offset >= REPLAY_WINDOW or self.mask >> offset & 1:
            return False
        self.mask |= 1 << offset
        return True


@dataclass(slots=True)
class Member:
    nick: str
    token: bytes
    addr: Address
    last_seen: float
    chats: ReplayWindow = field(default_factory=ReplayWindow)
    #: Number of the last announcement sent to this member (JOINED, LEFT, SHUTDOWN).
    announced: int = 0


@dataclass(slots=True)
class RoomStats:
    """Counters for the server's log."""

    received: int = 0
    garbage: int = 0
    duplicates: int = 0
    relayed: int = 0
    joins: int = 0
    refused: int = 0
    leaves: int = 0
    expired: int = 0


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """Something the server logs: ``kind`` is joined, left, expired, refused or garbage."""

    kind: str
    nick: str
    addr: Address
    detail: str = ""


class ChatRoom:
    """Membership and relaying for one room.  Members live in memory only."""

    def __init__(
        self,
        *,
        max_members: int = defaults.UDPCHAT_MAX_MEMBERS,
        max_per_address: int = defaults.UDPCHAT_MAX_MEMBERS_PER_ADDRESS,
        member_expiry_s: float = defaults.UDPCHAT_MEMBER_EXPIRY_S,
        max_payload: int = defaults.UDPCHAT_MAX_PAYLOAD,
        new_token: Callable[[], bytes] = lambda: secrets.token_bytes(8),
    ) -> None:
        self.max_members = max_members
        self.max_per_address = max_per_address
        self.member_expiry_s = member_expiry_s
        # Announced in every WELCOME, so that members keep alive often enough for this server.
        self.expiry_ms = round(min(member_expiry_s * 1000, MAX_EXPIRY_MS))
        self.max_payload = max_payload
        self._new_token = new_token
        self.by_token: dict[bytes, Member] = {}
        #: Members by nickname; look-alike nicknames are one (switchboard.names).
        self.by_name: NameIndex[Member] = NameIndex(defaults.MAX_NICK_CHARS)
        #: Members per IP address (the host part of their current address).
        self.per_host: Counter[Any] = Counter()
        self.stats = RoomStats()
        self.events: list[RoomEvent] = []

    @property
    def members(self) -> list[Member]:
        return list(self.by_token.values())

    def pop_events(self) -> list[RoomEvent]:
        events, self.events = self.events, []
        return events

    # --- input ---------------------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float, wall_ms: int) -> list[Outgoing]:
        """Handle one datagram from ``addr``; the datagrams to send in answer."""
        self.stats.received += 1
        try:
            datagram: Datagram = decode(data, self.max_payload)
        except DatagramError as exc:
            return self._garbage(addr, str(exc))
        match datagram:
            case Chat():
                return self._chat(datagram, addr, now, wall_ms, len(data))
            case Keepalive(seq, token):
                member = self._member(token, addr, now)
                if member is None:
                    return self._not_member(seq, addr, len(data))
                return [(encode(Ack(seq)), addr)]
            case Join():
                return self._join(datagram, addr, now, wall_ms, len(data))
            case Leave(seq, token):
                out: list[Outgoing] = []
                member = self.by_token.get(token)
                if member is not None:
                    self.stats.leaves += 1
                    self.events.append(RoomEvent("left", member.nick, addr))
                    out += self._remove(member, wall_ms, LeftReason.LEFT)
                # A repeated LEAVE (our ACK was lost) is acknowledged again.
                out.append((encode(Ack(seq)), addr))
                return out
        return self._garbage(addr, f"{type(datagram).__name__} is not sent to a server")

    def expire(self, now: float, wall_ms: int) -> list[Outgoing]:
        """Remove members silent past the expiry; announce each departure."""
        out: list[Outgoing] = []
        limit = now - self.member_expiry_s
        for member in [m for m in self.by_token.values() if m.last_seen < limit]:
            self.stats.expired += 1
            silent = now - member.last_seen
            self.events.append(RoomEvent("expired", member.nick, member.addr, f"{silent:.1f} s"))
            out += self._remove(member, wall_ms, LeftReason.TIMED_OUT)
        return out

    def next_expiry(self) -> float | None:
        """When the next member would expire if it stays silent (monotonic seconds)."""
        if not self.by_token:
            return None
        return min(m.last_seen for m in self.by_token.values()) + self.member_expiry_s

    def shutdown(self, wall_ms: int) -> list[Outgoing]:
        """Tell every member the server is stopping, and forget them."""
        out: list[Outgoing] = []
        for member in self.by_token.values():
            member.announced += 1
            out.append((encode(Shutdown(member.announced, wall_ms)), member.addr))
        self.by_token.clear()
        self.by_name = NameIndex(defaults.MAX_NICK_CHARS)
        self.per_host.clear()
        return out

    # --- handlers ------------------------------------------------------------------------------

    def _garbage(self, addr: Address, reason: str) -> list[Outgoing]:
        self.stats.garbage += 1
        self.events.append(RoomEvent("garbage", "", addr, reason))
        return []

    def _member(self, token: bytes, addr: Address, now: float) -> Member | None:
        member = self.by_token.get(token)
        if member is not None:
            member.last_seen = now
            if member.addr != addr:
                # The token, not the address, is the identity (NAT rebinding).
                self._uncount(member)
                member.addr = addr
                self.per_host[addr[0]] += 1
        return member

    def _uncount(self, member: Member) -> None:
        host = member.addr[0]
        self.per_host[host] -= 1
        if self.per_host[host] <= 0:
            del self.per_host[host]

    def _not_member(self, seq: int, addr: Address, size: int) -> list[Outgoing]:
        reason = ERROR_TEXT[ChatErrorCode.NOT_A_MEMBER]
        return _error_within(size, Error(seq, ChatErrorCode.NOT_A_MEMBER, reason), addr)

    def _refuse(
        self, join: Join, addr: Address, code: ChatErrorCode, reason: str, size: int
    ) -> list[Outgoing]:
        self.stats.refused += 1
        self.events.append(RoomEvent("refused", join.nick, addr, reason))
        # The refused name goes back only if it is printable; an invalid one may not be.
        nick = join.nick if join.nick.isprintable() else ""
        return _error_within(size, Error(join.seq, code, reason, nick), addr)

    def _not_padded(self, join: Join, addr: Address, size: int) -> list[Outgoing]:
        reason = f"a JOIN must be padded to {JOIN_SIZE} bytes, this one has {size}"
        return self._refuse(join, addr, ChatErrorCode.JOIN_NOT_PADDED, reason, size)

    def _join(
        self, join: Join, addr: Address, now: float, wall_ms: int, size: int
    ) -> list[Outgoing]:
        problem = nick_problem(join.nick)
        if problem is not None:
            return self._refuse(join, addr, ChatErrorCode.INVALID_NICK, problem, size)
        nick = normalise(join.nick)  # kept, announced and welcomed in its NFC form
        existing = self.by_name.find(nick)
        if existing is not None:
            if existing.addr == addr:
                # A retried JOIN whose WELCOME was lost: welcome again, announce nothing.
                others = len(self.by_token) - 1
                welcome = Welcome(join.seq, existing.nick, existing.token, others, self.expiry_ms)
                data = encode(welcome)
                if len(data) > size:
                    return self._not_padded(join, addr, size)
                existing.last_seen = now
                return [(data, addr)]
            reason = f"the nickname {existing.nick!r} is in use"
            return self._refuse(join, addr, ChatErrorCode.NICK_IN_USE, reason, size)
        if len(self.by_token) >= self.max_members:
            reason = f"the room is full ({self.max_members} members)"
            return self._refuse(join, addr, ChatErrorCode.ROOM_FULL, reason, size)
        if self.per_host[addr[0]] >= self.max_per_address:
            reason = f"{self.max_per_address} members from this address already"
            return self._refuse(join, addr, ChatErrorCode.ADDRESS_FULL, reason, size)
        token = self._new_token()
        while token in self.by_token:  # pragma: no cover - 2^-64
            token = self._new_token()
        welcome = Welcome(join.seq, nick, token, len(self.by_token), self.expiry_ms)
        data = encode(welcome)
        if len(data) > size:
            return self._not_padded(join, addr, size)
        member = Member(nick, token, addr, now)
        out = [(data, addr)]
        out += self._announce(member, lambda seq: Joined(seq, nick, wall_ms))
        self.by_token[token] = member
        self.by_name.add(nick, member)
        self.per_host[addr[0]] += 1
        self.stats.joins += 1
        self.events.append(RoomEvent("joined", nick, addr))
        return out

    def _chat(
        self, chat: Chat, addr: Address, now: float, wall_ms: int, size: int
    ) -> list[Outgoing]:
        member = self._member(chat.token, addr, now)
        if member is None:
            return self._not_member(chat.seq, addr, size)
        problem = text_problem(chat.text, self.max_payload)
        if problem is not None:
            return _error_within(size, Error(chat.seq, ChatErrorCode.BAD_TEXT, problem), addr)
        if not member.chats.accept(chat.seq):
            self.stats.duplicates += 1
            return []
        self.stats.relayed += 1
        data = encode(Relay(chat.seq, member.nick, wall_ms, chat.text), self.max_payload)
        return [(data, other.addr) for other in self.by_token.values() if other is not member]

    def _remove(self, member: Member, wall_ms: int, reason: LeftReason) -> list[Outgoing]:
        del self.by_token[member.token]
        self.by_name.remove(member.nick, member)
        self._uncount(member)
        return self._announce(member, lambda seq: Left(seq, member.nick, wall_ms, reason))

    def _announce(self, about: Member, make: Callable[[int], Datagram]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for other in self.by_token.values():
            if other is not about:
                other.announced += 1
                out.append((encode(make(other.announced)), other.addr))
        return out


def _error_within(size: int, error: Error, addr: Address) -> list[Outgoing]:
    """``error`` to ``addr`` in at most ``size`` bytes, the size of the request it answers.

    The request's source address is not verified (UDP: anyone can write any source address),
    so an answer larger than the request would make the room an amplifier for reflection
    attacks.  What does not fit is left out, the reason first, then the echoed nickname; the
    code fits any request but a JOIN with no nickname at all (9 bytes, left unanswered), and
    the client knows what it means (``codec.error_text``).
    """
    for candidate in (error, Error(error.seq, error.code, "", error.nick)):
        data = encode(candidate)
        if len(data) <= size:
            return [(data, addr)]
    bare = encode(Error(error.seq, error.code, ""))
    return [(bare, addr)] if len(bare) <= size else []
