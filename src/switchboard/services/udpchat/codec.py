"""The UDP chat room's datagram format, sans I/O: typed datagrams, ``encode``, ``decode``.

Every datagram is one message: a 9-byte header, an identity (nickname or session token), and
a payload that runs to the end of the datagram (UDP keeps datagram boundaries, so no length
is needed)::

     0      2      3      4                    8      9
    +------+------+------+--------------------+------+----- ... -----+---- ... ----+
    | "SU" | ver. | type |   sequence (u32)   | ilen |  ident (ilen)  |   payload   |
    +------+------+------+--------------------+------+----- ... -----+---- ... ----+

docs/PROTOCOL.md, "Part 2: the UDP chat room datagrams", specifies each type; its golden
vectors are checked against this module.  ``decode`` turns any bytes into a datagram or raises
``DatagramError``: never anything else (the fuzz invariant of the tests).
"""

from __future__ import annotations

import enum
import struct
import unicodedata
from dataclasses import dataclass, field
from typing import Final

from switchboard import names
from switchboard.defaults import MAX_NICK_CHARS, UDPCHAT_MAX_PAYLOAD

HEADER: Final = struct.Struct("!2sBBIB")
HEADER_SIZE: Final = HEADER.size  # 9
MAGIC: Final = b"SU"
VERSION: Final = 1
#: Session tokens are 8 random bytes: unguessable enough that a member cannot be spoken for
#: by anyone who did not see the WELCOME, small enough to ride on every datagram.
TOKEN_SIZE: Final = 8
_TIMESTAMP: Final = struct.Struct("!Q")
_WELCOME: Final = struct.Struct(f"!{TOKEN_SIZE}sHI")
_LEFT: Final = struct.Struct("!QB")
#: WELCOME's expiry is a u32 of milliseconds (49 days).
MAX_EXPIRY_MS: Final = 0xFFFF_FFFF
#: Sequence numbers are u32; a sender that would pass the top must rejoin.
MAX_SEQ: Final = 0xFFFF_FFFF
#: The largest datagram either side sends: header, the longest ident, timestamp and text.
MAX_DATAGRAM: Final = HEADER_SIZE + 255 + _TIMESTAMP.size + UDPCHAT_MAX_PAYLOAD
#: A JOIN is padded with zero bytes to this size: the server never answers a datagram with a
#: larger one (its source address is unverified, and a larger answer would make the room an
#: amplifier for reflection attacks, as QUIC pads its first packet for the same reason), and
#: this is larger than any WELCOME (151 bytes with a 128-byte nickname), with room for an
#: ERROR's reason.
JOIN_SIZE: Final = 160


class DatagramType(enum.IntEnum):
    """The ``type`` byte.  Client to server below 0x40, server to client from 0x41."""

    JOIN = 0x01
    LEAVE = 0x02
    CHAT = 0x03
    KEEPALIVE = 0x04

    WELCOME = 0x41
    ERROR = 0x42
    ACK = 0x43
    RELAY = 0x44
    JOINED = 0x45
    LEFT = 0x46
    SHUTDOWN = 0x47


class ChatErrorCode(enum.IntEnum):
    """The code in an ERROR datagram."""

    INVALID_NICK = 1
    NICK_IN_USE = 2
    ROOM_FULL = 3
    NOT_A_MEMBER = 4
    TEXT_TOO_LONG = 5
    BAD_TEXT = 6
    ADDRESS_FULL = 7
    JOIN_NOT_PADDED = 8


#: What each error code means, for an ERROR whose reason was left out: the server sends no
#: reply larger than the request that caused it (no reflector), so a short request may get
#: the bare code.
ERROR_TEXT: Final = {
    ChatErrorCode.INVALID_NICK: "invalid nickname",
    ChatErrorCode.NICK_IN_USE: "the nickname is in use",
    ChatErrorCode.ROOM_FULL: "the room is full",
    ChatErrorCode.NOT_A_MEMBER: "not a member (expired, or server restarted)",
    ChatErrorCode.TEXT_TOO_LONG: "message too long",
    ChatErrorCode.BAD_TEXT: "message contains a control character",
    ChatErrorCode.ADDRESS_FULL: "too many members from this address",
    ChatErrorCode.JOIN_NOT_PADDED: f"a JOIN must be padded to {JOIN_SIZE} bytes",
}


def error_text(code: int, reason: str) -> str:
    """``reason``, or what ``code`` means when the server sent none."""
    if reason:
        return reason
    try:
        return ERROR_TEXT[ChatErrorCode(code)]
    except ValueError:
        return f"error {code}"


class LeftReason(enum.IntEnum):
    """Why a member left, in a LEFT announcement."""

    LEFT = 0
    TIMED_OUT = 1


class DatagramError(Exception):
    """The bytes received are not a valid datagram (remote error: ignore and count it)."""


class LocalDatagramError(ValueError):
    """We were asked to encode something the format cannot carry."""


# --- the datagrams ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """Client asks to join as ``nick``; ``seq`` is its request number, echoed by the answer.

    ``padding``: the zero bytes after the nickname; None (the default) pads the datagram to
    ``JOIN_SIZE``.  Decoding records what came, so the bytes re-encode unchanged; it is not
    part of the JOIN's meaning, nor of its equality."""

    seq: int
    nick: str
    padding: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Leave:
    """Client leaves; answered by ACK(seq)."""

    seq: int
    token: bytes


@dataclass(frozen=True, slots=True)
class Chat:
    """Client says ``text``; ``seq`` counts the client's chat lines from 1, with no gaps."""

    seq: int
    token: bytes
    text: str


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Client is still here; answered by ACK(seq)."""

    seq: int
    token: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    """Join accepted: the session ``token``, how many others are in the room, and after how
    many milliseconds of silence the server forgets a member (``expiry_ms``)."""

    seq: int
    nick: str
    token: bytes
    members: int
    expiry_ms: int


@dataclass(frozen=True, slots=True)
class Error:
    """A request refused; ``nick`` echoes a refused JOIN's nickname (else empty)."""

    seq: int
    code: int
    reason: str
    nick: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """LEAVE or KEEPALIVE number ``seq`` received."""

    seq: int


@dataclass(frozen=True, slots=True)
class Relay:
    """A member's chat line, with the sender's own ``seq`` and the server's clock (ms)."""

    seq: int
    nick: str
    timestamp_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class Joined:
    """Announcement: ``nick`` joined.  ``seq`` numbers the server's announcements to you."""

    seq: int
    nick: str
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Left:
    """Announcement: ``nick`` left, or was expired."""

    seq: int
    nick: str
    timestamp_ms: int
    reason: int = LeftReason.LEFT


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Announcement: the server is stopping."""

    seq: int
    timestamp_ms: int


Datagram = (
    Join | Leave | Chat | Keepalive | Welcome | Error | Ack | Relay | Joined | Left | Shutdown
)
ClientDatagram = Join | Leave | Chat | Keepalive
ServerDatagram = Welcome | Error | Ack | Relay | Joined | Left | Shutdown

ALL_DATAGRAMS: Final = (Join, Leave, Chat, Keepalive, Welcome, Error, Ack, Relay, Joined, Left,
                        Shutdown)  # fmt: skip


# --- nicknames ----------------------------------------------------------------------------------

_FORBIDDEN_CHARS: Final = frozenset("|\\")
#: Unicode categories refused in a chat line: control characters, unpaired surrogates, line
#: and paragraph separators.  Format characters (Cf) stay allowed: ZWJ builds emoji.
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})


def nick_problem(nick: str) -> str | None:
    """Why ``nick`` is not a valid nickname, or None when it is: the rules of
    ``switchboard.names`` (the TCP server's too), checked on its NFC form, and no ``|`` or
    ``\\`` (this room's lab format reserves them)."""
    problem = names.name_problem(names.normalise(nick), what="nickname", limit=MAX_NICK_CHARS)
    if problem is not None:
        return problem
    if any(char in _FORBIDDEN_CHARS for char in nick):
        return "a nickname cannot contain '|' or '\\'"
    return None


def text_problem(text: str, max_payload: int = UDPCHAT_MAX_PAYLOAD) -> str | None:
    """Why ``text`` cannot be sent as a chat line, or None when it can.

    Control characters other than TAB are refused so that no member can send terminal
    escape sequences to everyone else's screen.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_payload:
        return (
            f"message too long: {size} bytes of UTF-8, the limit is {max_payload} "
            "(one datagram, never fragmented)"
        )
    for char in text:
        if char != "\t" and unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return f"message contains a control character (U+{ord(char):04X})"
    return None


def nick_key(nick: str) -> str:
    """The key a member's messages are filed under: ``Alice`` and ``alice`` are one name.
    (Which names the room refuses as look-alikes is ``switchboard.names.NameIndex``.)"""
    return names.normalise(nick).casefold()


# --- encoding -----------------------------------------------------------------------------------


def _check_seq(seq: int) -> None:
    if not 0 <= seq <= MAX_SEQ:
        raise LocalDatagramError(f"sequence number {seq} outside 0..{MAX_SEQ}")


def _text(text: str, max_payload: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) > max_payload:
        raise LocalDatagramError(f"text of {len(data)} bytes exceeds {max_payload}")
    return data


def _pack(kind: DatagramType, seq: int, ident: bytes, payload: bytes = b"") -> bytes:
    _check_seq(seq)
    if len(ident) > 255:
        raise LocalDatagramError("identity longer than 255 bytes")
    return HEADER.pack(MAGIC, VERSION, kind, seq, len(ident)) + ident + payload


def _token(token: bytes) -> bytes:
    if len(token) != TOKEN_SIZE:
        raise LocalDatagramError(f"a session token is {TOKEN_SIZE} bytes")
    return token


def encode(datagram: Datagram, max_payload: int = UDPCHAT_MAX_PAYLOAD) -> bytes:
    """The bytes of one datagram; ``LocalDatagramError`` when it cannot be carried."""
    match datagram:
        case Chat(seq, token, text):
            return _pack(DatagramType.CHAT, seq, _token(token), _text(text, max_payload))
        case Relay(seq, nick, timestamp_ms, text):
            payload = _TIMESTAMP.pack(timestamp_ms) + _text(text, max_payload)
            return _pack(DatagramType.RELAY, seq, nick.encode(), payload)
        case Keepalive(seq, token):
            return _pack(DatagramType.KEEPALIVE, seq, _token(token))
        case Ack(seq):
            return _pack(DatagramType.ACK, seq, b"")
        case Join(seq, nick, padding):
            ident = nick.encode()
            if padding is None:
                padding = max(0, JOIN_SIZE - HEADER_SIZE - len(ident))
            return _pack(DatagramType.JOIN, seq, ident, bytes(padding))
        case Leave(seq, token):
            return _pack(DatagramType.LEAVE, seq, _token(token))
        case Welcome(seq, nick, token, members, expiry_ms):
            if not 0 <= members <= 0xFFFF:
                raise LocalDatagramError("member count outside 0..65535")
            if not 0 <= expiry_ms <= MAX_EXPIRY_MS:
                raise LocalDatagramError("expiry outside 0..4294967295 ms")
            payload = _WELCOME.pack(_token(token), members, expiry_ms)
            return _pack(DatagramType.WELCOME, seq, nick.encode(), payload)
        case Error(seq, code, reason, nick):
            if not 0 <= code <= 255:
                raise LocalDatagramError("error code outside 0..255")
            payload = bytes([code]) + _text(reason, max_payload)
            return _pack(DatagramType.ERROR, seq, nick.encode(), payload)
        case Joined(seq, nick, timestamp_ms):
            return _pack(DatagramType.JOINED, seq, nick.encode(), _TIMESTAMP.pack(timestamp_ms))
        case Left(seq, nick, timestamp_ms, reason):
            return _pack(DatagramType.LEFT, seq, nick.encode(), _LEFT.pack(timestamp_ms, reason))
        case Shutdown(seq, timestamp_ms):
            return _pack(DatagramType.SHUTDOWN, seq, b"", _TIMESTAMP.pack(timestamp_ms))
    raise LocalDatagramError(f"not a datagram: {datagram!r}")


# --- decoding -----------------------------------------------------------------------------------


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DatagramError(f"{what} is not valid UTF-8") from None


def _expect(payload: bytes, size: int, kind: DatagramType) -> None:
    if len(payload) != size:
        raise DatagramError(f"{kind.name} payload of {len(payload)} bytes, expected {size}")


def _expect_token(ident: bytes, kind: DatagramType) -> bytes:
    if len(ident) != TOKEN_SIZE:
        raise DatagramError(f"{kind.name} carries a {len(ident)}-byte token")
    return ident


def decode(data: bytes, max_payload: int = UDPCHAT_MAX_PAYLOAD) -> Datagram:
    """One datagram from the bytes of one UDP datagram, or ``DatagramError``."""
    if len(data) < HEADER_SIZE:
        raise DatagramError(f"{len(data)} bytes is shorter than the header")
    if len(data) > MAX_DATAGRAM + max_payload - UDPCHAT_MAX_PAYLOAD:
        raise DatagramError(f"{len(data)} bytes is longer than any datagram")
    magic, version, raw_type, seq, ident_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DatagramError("bad magic")
    if version != VERSION:
        raise DatagramError(f"unsupported version {version}")
    try:
        kind = DatagramType(raw_type)
    except ValueError:
        raise DatagramError(f"unknown type 0x{raw_type:02x}") from None
    end = HEADER_SIZE + ident_len
    if end > len(data):
        raise DatagramError("identity runs past the end of the datagram")
    ident = data[HEADER_SIZE:end]
    payload = data[end:]

    def text(raw: bytes) -> str:
        if len(raw) > max_payload:
            raise DatagramError(f"text of {len(raw)} bytes exceeds {max_payload}")
        return _utf8(raw, "text")

    match kind:
        case DatagramType.CHAT:
            return Chat(seq, _expect_token(ident, kind), text(payload))
        case DatagramType.RELAY:
            if len(payload) < _TIMESTAMP.size:
                raise DatagramError("RELAY payload shorter than its timestamp")
            (stamp,) = _TIMESTAMP.unpack_from(payload)
            return Relay(seq, _utf8(ident, "nickname"), stamp, text(payload[_TIMESTAMP.size :]))
        case DatagramType.KEEPALIVE:
            _expect(payload, 0, kind)
            return Keepalive(seq, _expect_token(ident, kind))
        case DatagramType.ACK:
            _expect(payload, 0, kind)
            if ident:
                raise DatagramError("ACK carries no identity")
            return Ack(seq)
        case DatagramType.JOIN:
            if payload.count(0) != len(payload):
                raise DatagramError("JOIN padding is not zero bytes")
            return Join(seq, _utf8(ident, "nickname"), len(payload))
        case DatagramType.LEAVE:
            _expect(payload, 0, kind)
            return Leave(seq, _expect_token(ident, kind))
        case DatagramType.WELCOME:
            _expect(payload, _WELCOME.size, kind)
            token, members, expiry_ms = _WELCOME.unpack(payload)
            return Welcome(seq, _utf8(ident, "nickname"), token, members, expiry_ms)
        case DatagramType.ERROR:
            if not payload:
                raise DatagramError("ERROR without a code")
            return Error(seq, payload[0], text(payload[1:]), _utf8(ident, "nickname"))
        case DatagramType.JOINED:
            _expect(payload, _TIMESTAMP.size, kind)
            (stamp,) = _TIMESTAMP.unpack(payload)
            return Joined(seq, _utf8(ident, "nickname"), stamp)
        case DatagramType.LEFT:
            _expect(payload, _LEFT.size, kind)
            stamp, reason = _LEFT.unpack(payload)
            return Left(seq, _utf8(ident, "nickname"), stamp, reason)
        case DatagramType.SHUTDOWN:
            _expect(payload, _TIMESTAMP.size, kind)
            if ident:
                raise DatagramError("SHUTDOWN carries no identity")
            (stamp,) = _TIMESTAMP.unpack(payload)
            return Shutdown(seq, stamp)
    raise DatagramError(f"unhandled type {kind.name}")  # pragma: no cover - the match is total
