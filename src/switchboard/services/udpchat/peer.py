"""A chat room member as the client keeps it, sans I/O: the join/leave handshakes with their
retry schedule, keepalives, sequence numbers, duplicate and gap detection, server silence.

Drive it like h11: call ``join``, ``send``, ``leave``, ``receive(data, now)`` and ``tick(now)``;
after each, take ``datagrams_to_send()`` to the socket and ``pop_events()`` to the screen, and
call ``tick`` again no later than ``next_deadline()``.  ``now`` is a monotonic clock in seconds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from switchboard import defaults

from .codec import (
    MAX_SEQ,
    Ack,
    Chat,
    ChatErrorCode,
    DatagramError,
    Error,
    Join,
    Joined,
    Keepalive,
    Leave,
    Left,
    Relay,
    Shutdown,
    Welcome,
    decode,
    encode,
    error_text,
    nick_key,
    nick_problem,
    text_problem,
)

T = TypeVar("T")


# --- retry schedule -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Bounded exponential back-off: ``initial_s``, doubling up to ``max_s``, ``attempts`` sends."""

    initial_s: float = defaults.UDPCHAT_RETRY_INITIAL_S
    max_s: float = defaults.UDPCHAT_RETRY_MAX_S
    attempts: int = defaults.UDPCHAT_RETRY_ATTEMPTS

    def delays(self) -> Iterator[float]:
        """The wait after each send, ``attempts`` of them (the last one before giving up)."""
        delay = self.initial_s
        for _ in range(self.attempts):
            yield delay
            delay = min(delay * 2, self.max_s)

    @property
    def total_s(self) -> float:
        return sum(self.delays())


def keepalive_interval(wanted_s: float, expiry_ms: int) -> float:
    """Seconds between keepalives: ``wanted_s``, but no more than a quarter of the expiry the
    server announced (so that three lost in a row do not expire us), and never less than the
    floor, whatever a misconfigured or hostile server announces."""
    fit = expiry_ms / 1000 / defaults.UDPCHAT_KEEPALIVES_PER_EXPIRY
    return max(min(wanted_s, fit), defaults.UDPCHAT_MIN_KEEPALIVE_S)


# --- reordering and gaps ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lost:
    """``count`` sequence numbers that never arrived."""

    count: int


class ReorderBuffer(Generic[T]):
    """One sender's stream put back in order: duplicates dropped, gaps reported as ``Lost``.

    An item that arrives after a gap is held for ``wait_s`` in case the missing ones were only
    overtaken; then the gap is declared lost and the held items are delivered.  At most
    ``limit`` items are held.  The first item seen sets the starting point unless ``first``
    says where the stream starts.
    """

    __slots__ = ("closed", "deadline", "duplicates", "expected", "held", "limit", "wait_s")

    def __init__(self, wait_s: float, first: int | None = None, limit: int = 64) -> None:
        self.wait_s = wait_s
        self.limit = limit
        self.expected = first
        self.held: dict[int, T] = {}
        self.deadline: float | None = None
        self.duplicates = 0
        self.closed = False

    def offer(self, seq: int, item: T, now: float) -> list[T | Lost]:
        if self.closed:  # the sender left: late copies are duplicates
            self.duplicates += 1
            return []
        if self.expected is None:
            self.expected = seq
        if seq < self.expected or seq in self.held:
            self.duplicates += 1
            return []
        if seq > self.expected:
            self.held[seq] = item
            if self.deadline is None:
                self.deadline = now + self.wait_s
            if len(self.held) > self.limit:
                return self._skip_gap(now)
            return []
        out: list[T | Lost] = [item]
        self.expected = seq + 1
        self._flush(out, now)
        return out

    def expire(self, now: float) -> list[T | Lost]:
        if self.deadline is None or now < self.deadline:
            return []
        return self._skip_gap(now)

    def close(self) -> list[T | Lost]:
        """The sender is gone: everything still held, with its gaps; accept nothing more."""
        out: list[T | Lost] = []
        while self.held:
            out += self._skip_gap(0.0)
        self.closed = True
        self.deadline = None
        return out

    def _skip_gap(self, now: float) -> list[T | Lost]:
        assert self.expected is not None and self.held
        lowest = min(self.held)
        out: list[T | Lost] = [Lost(lowest - self.expected)]
        self.expected = lowest
        self._flush(out, now)
        return out

    def _flush(self, out: list[T | Lost], now: float) -> None:
        assert self.expected is not None
        while self.expected in self.held:
            out.append(self.held.pop(self.expected))
            self.expected += 1
        self.deadline = None if not self.held else now + self.wait_s


# --- events for the user interface --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcomed:
    nick: str
    others: int


@dataclass(frozen=True, slots=True)
class JoinRefused:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """A JOIN or LEAVE got no answer after every retry."""

    request: str
    attempts: int
    waited_s: float


@dataclass(frozen=True, slots=True)
class Retrying:
    request: str
    attempt: int
    of: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    nick: str
    timestamp_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class MemberJoined:
    nick: str
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class MemberLeft:
    nick: str
    timestamp_ms: int
    reason: int


@dataclass(frozen=True, slots=True)
class MessagesLost:
    """``count`` chat lines from ``nick`` never arrived (``nick`` empty: room announcements)."""

    nick: str
    count: int


@dataclass(frozen=True, slots=True)
class ServerSilent:
    seconds: float


@dataclass(frozen=True, slots=True)
class ServerBack:
    pass


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Rejoining:
    """The server no longer knows us (we were expired, or it restarted): joining again."""

    reason: str


@dataclass(frozen=True, slots=True)
class SendRefused:
    reason: str


@dataclass(frozen=True, slots=True)
class LeaveDone:
    acknowledged: bool


@dataclass(frozen=True, slots=True)
class Ignored:
    """A datagram that was not valid, or not from the server's side of the protocol."""

    reason: str


Event = (
    Welcomed | JoinRefused | NoAnswer | Retrying | MessageReceived | MemberJoined | MemberLeft
    | MessagesLost | ServerSilent | ServerBack | ServerShutdown | Rejoining | SendRefused
    | LeaveDone | Ignored
)  # fmt: skip


class Phase(enum.Enum):
    IDLE = "idle"  # not joined (before joining, or after a refusal)
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"
    CLOSED = "closed"  # left, gave up, or the server shut down


class NotJoinedError(Exception):
    """``send`` was called while not a member of the room."""


class MessageRefusedError(ValueError):
    """A chat line the protocol cannot carry (too long, control characters); not sent."""


@dataclass(slots=True)
class _Pending:
    name: str  # "JOIN" or "LEAVE"
    seq: int
    data: bytes
    delays: list[float]
    sent: int = 0
    next_at: float = 0.0
    waited: float = 0.0


#: The announcement stream's key in the receive buffers (no nickname is empty).
_ANNOUNCEMENTS: Final = ""


@dataclass
class ChatPeer:
    """One client's membership of the room."""

    nick: str
    retry: RetrySchedule = field(default_factory=RetrySchedule)
    keepalive_s: float = defaults.UDPCHAT_KEEPALIVE_S
    server_silence_s: float = defaults.UDPCHAT_SERVER_SILENCE_S
    reorder_wait_s: float = defaults.UDPCHAT_REORDER_WAIT_S
    max_payload: int = defaults.UDPCHAT_MAX_PAYLOAD

    phase: Phase = Phase.IDLE
    token: bytes = b""
    _request_seq: int = 0
    _chat_seq: int = 0
    _pending: _Pending | None = None
    _next_keepalive: float | None = None
    #: The interval in use: ``keepalive_s``, or less if the server's WELCOME asks for it.
    keepalive_every: float = field(default=0.0, init=False)
    _last_heard: float = 0.0
    _silent: bool = False
    #: Receive buffers by nick_key (and the announcements'), with each sender's display name.
    _streams: dict[str, ReorderBuffer[Relay | Joined | Left | Shutdown]] = field(
        default_factory=dict
    )
    _names: dict[str, str] = field(default_factory=dict)
    _outbox: list[bytes] = field(default_factory=list)
    _events: list[Event] = field(default_factory=list)

    # --- what the shell takes away -------------------------------------------------------------

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def pop_events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        """The latest time ``tick`` must be called next (monotonic seconds), or None."""
        times: list[float] = []
        if self._pending is not None:
            times.append(self._pending.next_at)
        if self.phase is Phase.JOINED:
            times += [s.deadline for s in self._streams.values() if s.deadline is not None]
            if self._next_keepalive is not None:
                times.append(self._next_keepalive)
            if not self._silent:
                times.append(self._last_heard + self.server_silence_s)
        return min(times, default=None)

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self._streams.values())

    # --- what the user does --------------------------------------------------------------------

    def join(self, now: float, nick: str | None = None) -> None:
        """Ask to join (again, under ``nick`` if given, e.g. after a refusal)."""
        if nick is not None:
            self.nick = nick
        if self.phase not in (Phase.IDLE, Phase.JOINED):
            raise RuntimeError(f"cannot join while {self.phase.value}")
        problem = nick_problem(self.nick)
        if problem is not None:
            raise ValueError(problem)
        self.phase = Phase.JOINING
        self.token = b""
        self._chat_seq = 0
        self._streams.clear()
        self._names.clear()
        self._start_request("JOIN", lambda seq: encode(Join(seq, self.nick)), now)

    def send(self, text: str, now: float) -> None:
        """Say ``text`` to the room; ``MessageRefusedError`` or ``NotJoinedError`` if it cannot."""
        problem = text_problem(text, self.max_payload)
        if problem is not None:
            raise MessageRefusedError(problem)
        if self.phase is not Phase.JOINED:
            raise NotJoinedError(f"not in the room ({self.phase.value})")
        if self._chat_seq >= MAX_SEQ:
            raise MessageRefusedError("sequence numbers exhausted; leave and join again")
        self._chat_seq += 1
        self._outbox.append(encode(Chat(self._chat_seq, self.token, text), self.max_payload))

    def leave(self, now: float) -> None:
        """Leave the room: LEAVE, retried until acknowledged or the schedule runs out."""
        if self.phase is Phase.JOINED:
            self.phase = Phase.LEAVING
            token = self.token
            self._start_request("LEAVE", lambda seq: encode(Leave(seq, token)), now)
        elif self.phase in (Phase.IDLE, Phase.JOINING):
            self._pending = None
            self.phase = Phase.CLOSED
            self._events.append(LeaveDone(acknowledged=False))

    # --- what the network and the clock do -----------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        try:
            datagram = decode(data, self.max_payload)
        except DatagramError as exc:
            self._events.append(Ignored(str(exc)))
            return
        if self.phase is Phase.CLOSED:
            return
        self._heard(now)
        match datagram:
            case Welcome(seq, nick, token, others, expiry_ms):
                if self._is_pending("JOIN", seq):
                    self._pending = None
                    self.phase = Phase.JOINED
                    self.token = token
                    self.nick = nick
                    self._streams[_ANNOUNCEMENTS] = ReorderBuffer(self.reorder_wait_s, first=1)
                    self.keepalive_every = keepalive_interval(self.keepalive_s, expiry_ms)
                    self._next_keepalive = now + self.keepalive_every
                    self._events.append(Welcomed(nick, others))
            case Ack(seq):
                if self._is_pending("LEAVE", seq):
                    self._pending = None
                    self.phase = Phase.CLOSED
                    self._events.append(LeaveDone(acknowledged=True))
            case Error(seq, code, reason):
                self._error(seq, code, error_text(code, reason), now)
            case Relay(seq, nick):
                if self.phase is Phase.JOINED:
                    key = nick_key(nick)
                    stream = self._streams.get(key)
                    if stream is None:
                        # Someone who was here before us: their numbering starts where we
                        # first see it.
                        stream = self._streams[key] = ReorderBuffer(self.reorder_wait_s)
                    self._names[key] = nick
                    self._deliver(key, stream.offer(seq, datagram, now), now)
            case Joined() | Left() | Shutdown():
                if self.phase is Phase.JOINED:
                    stream = self._streams[_ANNOUNCEMENTS]
                    self._deliver(_ANNOUNCEMENTS, stream.offer(datagram.seq, datagram, now), now)
            case _:
                self._events.append(Ignored(f"{type(datagram).__name__} is not sent to a client"))

    def tick(self, now: float) -> None:
        """Retries, keepalives, gaps whose wait is over, server silence."""
        pending = self._pending
        if pending is not None and now >= pending.next_at:
            if pending.sent >= len(pending.delays):
                self._pending = None
                self._events.append(NoAnswer(pending.name, pending.sent, pending.waited))
                if pending.name == "JOIN":
                    self.phase = Phase.IDLE
                else:
                    self.phase = Phase.CLOSED
                    self._events.append(LeaveDone(acknowledged=False))
            else:
                self._events.append(Retrying(pending.name, pending.sent + 1, len(pending.delays)))
                self._send_pending(pending, now)
        if self.phase is not Phase.JOINED:
            return
        for key, stream in list(self._streams.items()):
            if stream.deadline is not None and now >= stream.deadline:
                self._deliver(key, stream.expire(now), now)
        if self._next_keepalive is not None and now >= self._next_keepalive:
            self._request_seq = self._next_seq()
            self._outbox.append(encode(Keepalive(self._request_seq, self.token)))
            self._next_keepalive = now + self.keepalive_every
        if not self._silent and now - self._last_heard >= self.server_silence_s:
            self._silent = True
            self._events.append(ServerSilent(round(now - self._last_heard, 1)))

    # --- internals -----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        return self._request_seq % MAX_SEQ + 1

    def _start_request(self, name: str, make: Callable[[int], bytes], now: float) -> None:
        self._request_seq = seq = self._next_seq()
        pending = _Pending(name, seq, make(seq), list(self.retry.delays()))
        self._pending = pending
        self._last_heard = now
        self._silent = False
        self._send_pending(pending, now)

    def _send_pending(self, pending: _Pending, now: float) -> None:
        delay = pending.delays[pending.sent]
        pending.sent += 1
        pending.waited += delay
        pending.next_at = now + delay
        self._outbox.append(pending.data)

    def _is_pending(self, name: str, seq: int) -> bool:
        return self._pending is not None and self._pending.name == name and self._pending.seq == seq

    def _heard(self, now: float) -> None:
        self._last_heard = now
        if self._silent:
            self._silent = False
            self._events.append(ServerBack())

    def _error(self, seq: int, code: int, reason: str, now: float) -> None:
        if self._is_pending("JOIN", seq):
            self._pending = None
            self.phase = Phase.IDLE
            self._events.append(JoinRefused(code, reason))
        elif code == ChatErrorCode.NOT_A_MEMBER and self.phase is Phase.JOINED:
            self._events.append(Rejoining(reason))
            self.join(now)
        elif self.phase is Phase.JOINED:
            self._events.append(SendRefused(reason))

    def _deliver(
        self, key: str, items: list[Relay | Joined | Left | Shutdown | Lost], now: float
    ) -> None:
        for item in items:
            match item:
                case Lost(count):
                    self._events.append(MessagesLost(self._names.get(key, key), count))
                case Relay(_, sender, stamp, text):
                    self._events.append(MessageReceived(sender, stamp, text))
                case Joined(_, who, stamp):
                    # A newcomer's chat lines are numbered from 1 (unless some already came
                    # ahead of this announcement).
                    who_key = nick_key(who)
                    known = self._streams.get(who_key)
                    if known is None or known.closed:
                        self._streams[who_key] = ReorderBuffer(self.reorder_wait_s, first=1)
                        self._names[who_key] = who
                    self._events.append(MemberJoined(who, stamp))
                case Left(_, who, stamp, reason):
                    # Whatever of theirs is still held is shown now, gaps included; the
                    # closed stream then swallows late duplicates until they join again.
                    who_key = nick_key(who)
                    gone = self._streams.get(who_key)
                    if gone is None:
                        gone = self._streams[who_key] = ReorderBuffer(self.reorder_wait_s)
                    self._deliver(who_key, gone.close(), now)
                    self._events.append(MemberLeft(who, stamp, reason))
                case Shutdown(_, stamp):
                    self.phase = Phase.CLOSED
                    self._pending = None
                    self._events.append(ServerShutdown(stamp))
                    return
