"""The frame header and the field encodings every payload is built from.

All integers are big-endian ("network byte order").  A frame is a 14-byte header
followed by ``length`` bytes of payload::

    0       2       3       4               6                       10                      14
    +-------+-------+-------+---------------+-----------------------+-----------------------+
    | magic | vers. | class |     type      |      request id       |    payload length     |
    | "SB"  |  u8   |  u8   |      u16      |          u32          |          u32          |
    +-------+-------+-------+---------------+-----------------------+-----------------------+
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import struct
from typing import Any, Final

from .errors import ErrorCode, LocalProtocolError, ProtocolError

HEADER: Final = struct.Struct("!HBBHII")
HEADER_SIZE: Final = HEADER.size  # 14
MAGIC: Final = 0x5342  # b"SB"
#: The header's version: the framing's, and this document's (PROTOCOL.md, "Versioning").
VERSION: Final = 1
#: The highest protocol version HELLO may negotiate (WELCOME states it): 2 adds ACKS and
#: RECEIPTS, acknowledgements and receipts in batches (PROTOCOL.md), within framing 1.
PROTOCOL_VERSION: Final = 2

#: The largest frame (header included) a peer accepts unless configured otherwise.
#: 64 KiB holds the longest text (4 KiB by default, see limits) many times over and
#: a client list of ~1,500 entries, while bounding what one connection may make us
#: buffer.  (IRC caps a line at 512 bytes; Redis a bulk string at 512 MiB; NATS
#: defaults max_payload to 1 MiB.)
DEFAULT_MAX_FRAME: Final = 64 * 1024
#: The WebSocket subprotocol (Sec-WebSocket-Protocol) that carries these frames, one frame
#: per binary message (docs/PROTOCOL.md, "WebSocket transport"); versioned as IRCv3's
#: ``binary.ircv3.net`` is not, so that a version 2 can be offered beside it.
WEBSOCKET_SUBPROTOCOL: Final = "switchboard.v1"


class MessageClass(enum.IntEnum):
    """What a frame is: asked for, an answer, or sent unasked."""

    REQUEST = 1
    RESPONSE = 2
    INDICATION = 3


class MessageType(enum.IntEnum):
    """The ``type`` field.  Requests are below 0x40, responses 0x40-0x7F, indications 0x80+."""

    HELLO = 0x01
    TIME = 0x02
    NAME = 0x03
    LIST = 0x04
    SEND = 0x05
    NICK = 0x06
    JOIN = 0x07
    LEAVE = 0x08
    BROADCAST = 0x09
    PING_REQUEST = 0x0A
    SEND_NICK = 0x0B
    ROOMS = 0x0C
    HISTORY = 0x0D

    OK = 0x40
    ERROR = 0x41

    WELCOME = 0x80
    MESSAGE = 0x81
    ACK = 0x82
    RECEIPT = 0x83
    JOINED = 0x84
    LEFT = 0x85
    PING = 0x86
    PONG = 0x87
    SHUTDOWN = 0x88
    NICK_CHANGED = 0x89
    ACKS = 0x8A
    RECEIPTS = 0x8B


# --- field kinds -----------------------------------------------------------------------------
# Each kind knows how to append a value to a bytearray and read one back from a buffer at an
# offset.  Consecutive integer fields of a message are merged into one struct by the codec.


class FieldKind:
    """How one payload field is laid out on the wire."""

    name: str
    fmt: str | None = None  # struct code for fixed-size integers, None for variable fields

    def encode(self, out: bytearray, value: Any) -> None:
        raise NotImplementedError

    def decode(self, buf: bytes | bytearray, off: int, end: int) -> tuple[Any, int]:
        raise NotImplementedError


class IntKind(FieldKind):
    def __init__(self, name: str, fmt: str) -> None:
        self.name = name
        self.fmt = fmt
        self.struct = struct.Struct("!" + fmt)

    def encode(self, out: bytearray, value: Any) -> None:
        try:
            out += self.struct.pack(value)
        except struct.error as exc:
            raise LocalProtocolError(f"{value!r} does not fit a {self.name}") from exc

    def decode(self, buf: bytes | bytearray, off: int, end: int) -> tuple[Any, int]:
        size = self.struct.size
        if off + size > end:
            raise truncated(self.name)
        return self.struct.unpack_from(buf, off)[0], off + size


class StrKind(FieldKind):
    """UTF-8 text after a big-endian length prefix of 2 (``str16``) or 4 (``str32``) bytes."""

    def __init__(self, name: str, prefix_fmt: str) -> None:
        self.name = name
        self.prefix = struct.Struct("!" + prefix_fmt)
        self.max_bytes = (1 << (8 * self.prefix.size)) - 1

    def encode(self, out: bytearray, value: Any) -> None:
        if not isinstance(value, str):
            raise LocalProtocolError(f"{self.name} field needs a str, got {type(value).__name__}")
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from surrogateescape input
            raise LocalProtocolError(
                f"{self.name} field is not valid Unicode: {exc.reason}"
            ) from exc
        if len(data) > self.max_bytes:
            raise LocalProtocolError(
                f"{len(data)} bytes of UTF-8 do not fit a {self.name} (max {self.max_bytes})"
            )
        out += self.prefix.pack(len(data))
        out += data

    def decode(self, buf: bytes | bytearray, off: int, end: int) -> tuple[Any, int]:
        psize = self.prefix.size
        if off + psize > end:
            raise truncated(self.name + " length")
        (n,) = self.prefix.unpack_from(buf, off)
        off += psize
        if off + n > end:
            raise truncated(self.name)
        try:
            return buf[off : off + n].decode("utf-8"), off + n
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                ErrorCode.BAD_PAYLOAD, f"invalid UTF-8 in {self.name} field: {exc.reason}"
            ) from None


class AddressFamily(enum.IntEnum):
    """The ``family`` byte of an ``addr`` field."""

    NONE = 0
    IPV4 = 4
    IPV6 = 6


@functools.lru_cache(maxsize=4096)
def pack_address(ip: str) -> bytes:
    """``addr`` field bytes for a textual IP address ("" for none).  Cached: peers repeat."""
    if not ip:
        return b"\x00"
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError as exc:
        raise LocalProtocolError(f"not an IP address: {ip!r}") from exc
    family = AddressFamily.IPV4 if parsed.version == 4 else AddressFamily.IPV6
    return bytes([family]) + parsed.packed


class AddressKind(FieldKind):
    """A family byte (0 none, 4 IPv4, 6 IPv6) followed by 0, 4 or 16 address bytes."""

    name = "addr"
    _sizes: Final = {AddressFamily.NONE: 0, AddressFamily.IPV4: 4, AddressFamily.IPV6: 16}

    def encode(self, out: bytearray, value: Any) -> None:
        out += pack_address(value)

    def decode(self, buf: bytes | bytearray, off: int, end: int) -> tuple[Any, int]:
        if off >= end:
            raise truncated("addr family")
        family = buf[off]
        size = self._sizes.get(family)  # type: ignore[call-overload]
        if size is None:
            raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"unknown address family {family}")
        off += 1
        if off + size > end:
            raise truncated("addr")
        if size == 0:
            return "", off
        return unpack_address(bytes(buf[off : off + size])), off + size


@functools.lru_cache(maxsize=4096)
def unpack_address(raw: bytes) -> str:
    """Textual form of 4 or 16 address bytes.  Cached: ``ipaddress`` is slow and peers repeat."""
    return str(ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw))


def truncated(what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_PAYLOAD, f"payload ends inside the {what} field")


U8: Final = IntKind("u8", "B")
U16: Final = IntKind("u16", "H")
U32: Final = IntKind("u32", "I")
U64: Final = IntKind("u64", "Q")
I32: Final = IntKind("i32", "i")
I64: Final = IntKind("i64", "q")
STR16: Final = StrKind("str16", "H")
STR32: Final = StrKind("str32", "I")
ADDR: Final = AddressKind()
