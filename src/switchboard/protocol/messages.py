"""One frozen dataclass per message, and the payload codec compiled from its annotations.

Each payload field is annotated with its wire kind (``u32``, ``str16``, ``addr`` ...); the
fields appear on the wire in declaration order, with nothing between them.  The same
annotations drive the encoder, the decoder and the field tables in docs/PROTOCOL.md.

Every message carries ``request_id`` (keyword-only, not part of the payload): the id a
client chose for a request, echoed by its response; 0 on indications.

An OK response starts its payload with the u16 type of the request it answers, so a
reader (or Wireshark) can decode it without remembering what was asked.
"""

from __future__ import annotations

import enum
import struct
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, ClassVar, Final, TypeVar

from . import wire
from .errors import ErrorCode, LocalProtocolError, ProtocolError
from .wire import FieldKind, MessageClass, MessageType

u8 = Annotated[int, wire.U8]
u16 = Annotated[int, wire.U16]
u32 = Annotated[int, wire.U32]
u64 = Annotated[int, wire.U64]
i32 = Annotated[int, wire.I32]
i64 = Annotated[int, wire.I64]
str16 = Annotated[str, wire.STR16]
str32 = Annotated[str, wire.STR32]
addr = Annotated[str, wire.ADDR]


class ReceiptStatus(enum.IntEnum):
    """RECEIPT ``status``: did the recipient's client acknowledge the MESSAGE?"""

    DELIVERED = 1
    NOT_DELIVERED = 2


class LeftReason(enum.IntEnum):
    """LEFT ``reason``: why a member is no longer in the room."""

    LEFT = 1
    DISCONNECTED = 2
    TIMED_OUT = 3


class RoomFlags(enum.IntFlag):
    """RoomInfo ``flags`` bits."""

    NONE = 0
    MEMBER = 0x01  # the asking client is a member of the room


class HistoryMode(enum.IntEnum):
    """HISTORY ``mode``: which lines of the room's history a page holds."""

    LATEST = 1  # the newest lines
    BEFORE = 2  # the newest lines whose id is below ``anchor``
    AFTER = 3  # the oldest lines whose id is above ``anchor``
    BETWEEN = 4  # the oldest lines whose id is above ``anchor`` and below ``until``


class MessageFlags(enum.IntFlag):
    """MESSAGE ``flags`` bits."""

    NONE = 0
    HISTORY = 0x01  # replayed from the room's history on JOIN, not live


@dataclass(frozen=True, slots=True)
class Frame:
    """Base of every message."""

    MESSAGE_CLASS: ClassVar[MessageClass]
    MESSAGE_TYPE: ClassVar[MessageType]
    #: For OK responses: the request type this result answers.
    ANSWERS: ClassVar[MessageType | None] = None

    request_id: int = field(default=0, kw_only=True)


# --- payload codec compiled per class --------------------------------------------------------

Buffer = bytes | bytearray
Encoder = Callable[[Any, bytearray], None]
Reader = Callable[[Buffer, int, int], tuple[list[Any], int]]
Decoder = Callable[[Buffer, int, int, int], Any]


def _field_kinds(cls: type) -> list[tuple[str, FieldKind]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    kinds = []
    for f in fields(cls):
        if f.name == "request_id":
            continue
        meta = getattr(hints[f.name], "__metadata__", ())
        if not meta or not isinstance(meta[0], FieldKind):
            raise TypeError(f"{cls.__name__}.{f.name} has no wire kind")
        kinds.append((f.name, meta[0]))
    return kinds


def _compile(kinds: list[tuple[str, FieldKind]]) -> list[tuple[Any, tuple[str, ...]]]:
    """Group runs of fixed-size integers into one ``struct.Struct`` each."""
    steps: list[tuple[Any, tuple[str, ...]]] = []
    run: list[tuple[str, FieldKind]] = []

    def flush() -> None:
        if run:
            fmt = "!" + "".join(k.fmt or "" for _, k in run)
            steps.append((struct.Struct(fmt), tuple(n for n, _ in run)))
            run.clear()

    for name, kind in kinds:
        if kind.fmt is not None:
            run.append((name, kind))
        else:
            flush()
            steps.append((kind, (name,)))
    flush()
    return steps


def _make_codec(cls: type) -> tuple[Encoder, Reader]:
    """An encoder appending ``cls``'s payload fields, and a reader returning them and the offset."""
    steps = _compile(_field_kinds(cls))

    def encode(msg: Any, out: bytearray) -> None:
        for step, names in steps:
            if isinstance(step, struct.Struct):
                try:
                    out += step.pack(*[getattr(msg, n) for n in names])
                except struct.error as exc:
                    raise LocalProtocolError(
                        f"{type(msg).__name__}: a field of {names} is out of range"
                    ) from exc
            else:
                step.encode(out, getattr(msg, names[0]))

    # The reader's plan, resolved once: (unpack_from, size, name) for a run of integers,
    # (None, decode, name) for a variable field.  Per field: no isinstance, no attribute lookup.
    plan: list[tuple[Any, Any, str]] = [
        (step.unpack_from, step.size, names[0])
        if isinstance(step, struct.Struct)
        else (None, step.decode, names[0])
        for step, names in steps
    ]

    def read(buf: Buffer, off: int, end: int) -> tuple[list[Any], int]:
        values: list[Any] = []
        for unpack_from, arg, name in plan:
            if unpack_from is not None:
                if off + arg > end:
                    raise wire.truncated(name)
                values.extend(unpack_from(buf, off))
                off += arg
            else:
                value, off = arg(buf, off, end)
                values.append(value)
        return values, off

    return encode, read


def _message_decoder(cls: type, read: Reader) -> Decoder:
    def decode(buf: Buffer, off: int, end: int, request_id: int) -> Any:
        values, off = read(buf, off, end)
        if off != end:
            raise ProtocolError(
                ErrorCode.BAD_PAYLOAD,
                f"{end - off} unexpected byte(s) after the last field of {cls.__name__}",
            )
        return cls(*values, request_id=request_id)

    return decode


class RecordListKind(FieldKind):
    """A u32 count followed by that many records of one record class."""

    def __init__(self, record: type, min_size: int) -> None:
        self.name = f"list of {record.__name__}"
        self.record = record
        self.min_size = min_size
        self._encode, self._read = _make_codec(record)

    def encode(self, out: bytearray, value: Any) -> None:
        if not isinstance(value, tuple | list):
            raise LocalProtocolError(f"{self.name} field needs a tuple, got {type(value).__name__}")
        out += wire.U32.struct.pack(len(value))
        record = self.record
        for item in value:
            if not isinstance(item, record):
                raise LocalProtocolError(f"{self.name} holds a {type(item).__name__}")
            self._encode(item, out)

    def decode(self, buf: Buffer, off: int, end: int) -> tuple[Any, int]:
        count, off = wire.U32.decode(buf, off, end)
        # Refuse a count the remaining bytes cannot hold before looping over it.
        if count * self.min_size > end - off:
            raise wire.truncated(self.name)
        items = []
        for _ in range(count):
            values, off = self._read(buf, off, end)
            items.append(self.record(*values))
        return tuple(items), off


class IdListKind(FieldKind):
    """A u32 count followed by that many u64 message ids."""

    name = "ids"

    def encode(self, out: bytearray, value: Any) -> None:
        if not isinstance(value, tuple | list):
            raise LocalProtocolError(f"{self.name} field needs a tuple, got {type(value).__name__}")
        try:
            out += struct.pack(f"!I{len(value)}Q", len(value), *value)
        except struct.error as exc:
            raise LocalProtocolError(f"{self.name}: an id is not a u64") from exc

    def decode(self, buf: Buffer, off: int, end: int) -> tuple[Any, int]:
        count, off = wire.U32.decode(buf, off, end)
        # Refuse a count the remaining bytes cannot hold before unpacking it.
        if count * 8 > end - off:
            raise wire.truncated(self.name)
        return struct.unpack_from(f"!{count}Q", buf, off), off + count * 8


ID_LIST = IdListKind()
id_list = Annotated[tuple[int, ...], ID_LIST]


# --- the registry ----------------------------------------------------------------------------

#: (message class, message type) -> payload decoder, for everything but OK.
DECODERS: Final[dict[tuple[int, int], Decoder]] = {}
#: request type -> decoder of the OK result that answers it.
OK_DECODERS: Final[dict[int, Decoder]] = {}
ENCODERS: Final[dict[type, Encoder]] = {}
#: Every message class, in registration order (docs and tests iterate it).
ALL_MESSAGES: Final[list[type[Frame]]] = []

F = TypeVar("F", bound=type[Frame])


def message(
    mclass: MessageClass, mtype: MessageType, *, answers: MessageType | None = None
) -> Callable[[F], F]:
    """Register a message class and compile its payload codec."""

    def register(cls: F) -> F:
        cls.MESSAGE_CLASS = mclass
        cls.MESSAGE_TYPE = mtype
        cls.ANSWERS = answers
        encode, read = _make_codec(cls)
        decode = _message_decoder(cls, read)
        if answers is not None:
            OK_DECODERS[answers] = decode
            ok_prefix = wire.U16.struct.pack(answers)

            def encode_ok(msg: Any, out: bytearray) -> None:
                out += ok_prefix
                encode(msg, out)

            ENCODERS[cls] = encode_ok
        else:
            DECODERS[(mclass, mtype)] = decode
            ENCODERS[cls] = encode
        ALL_MESSAGES.append(cls)
        return cls

    return register


REQUEST, RESPONSE, INDICATION = MessageClass.REQUEST, MessageClass.RESPONSE, MessageClass.INDICATION
T = MessageType


# --- requests --------------------------------------------------------------------------------


@message(REQUEST, T.HELLO)
@dataclass(frozen=True, slots=True)
class HelloRequest(Frame):
    """Introduce the client: highest protocol version it speaks, nickname and token ("" = none)."""

    version: u16 = wire.PROTOCOL_VERSION
    nick: str16 = ""
    token: str16 = ""


@message(REQUEST, T.TIME)
@dataclass(frozen=True, slots=True)
class TimeRequest(Frame):
    """Ask for the server's current time."""


@message(REQUEST, T.NAME)
@dataclass(frozen=True, slots=True)
class NameRequest(Frame):
    """Ask for the server's name."""


@message(REQUEST, T.LIST)
@dataclass(frozen=True, slots=True)
class ListRequest(Frame):
    """Ask for the connected clients, or only the members of ``room`` when it is not ""."""

    room: str16 = ""


@message(REQUEST, T.SEND)
@dataclass(frozen=True, slots=True)
class SendRequest(Frame):
    """Forward ``text`` to the client ``target``."""

    target: u32
    text: str32


@message(REQUEST, T.NICK)
@dataclass(frozen=True, slots=True)
class NickRequest(Frame):
    """Set this client's nickname: 1-32 characters, no whitespace or control characters."""

    nick: str16


@message(REQUEST, T.JOIN)
@dataclass(frozen=True, slots=True)
class JoinRequest(Frame):
    """Join a chat room."""

    room: str16


@message(REQUEST, T.LEAVE)
@dataclass(frozen=True, slots=True)
class LeaveRequest(Frame):
    """Leave a chat room."""

    room: str16


@message(REQUEST, T.BROADCAST)
@dataclass(frozen=True, slots=True)
class BroadcastRequest(Frame):
    """Send ``text`` to every other member of ``room``."""

    room: str16
    text: str32


@message(REQUEST, T.PING_REQUEST)
@dataclass(frozen=True, slots=True)
class PingRequest(Frame):
    """Ask the server to answer at once (liveness and round-trip checks)."""


@message(REQUEST, T.SEND_NICK)
@dataclass(frozen=True, slots=True)
class SendNickRequest(Frame):
    """Forward ``text`` to the client that holds the nickname ``nick`` now (as SEND, but the
    server resolves the nickname when it forwards: no LIST-then-SEND race)."""

    nick: str16
    text: str32


@message(REQUEST, T.ROOMS)
@dataclass(frozen=True, slots=True)
class RoomsRequest(Frame):
    """Ask which rooms exist: the first ones (in name order) whose name sorts after ``after``
    ("" = from the start); page on with the last name received."""

    after: str16 = ""


@message(REQUEST, T.HISTORY)
@dataclass(frozen=True, slots=True)
class HistoryRequest(Frame):
    """Ask for one page of ``room``'s stored history (members only): see HistoryMode for
    ``anchor`` and ``until`` (0 where the mode takes none); ``limit`` lines at most (0: the
    server's page size)."""

    room: str16
    mode: u8 = 1
    anchor: u64 = 0
    until: u64 = 0
    limit: u16 = 0


# --- responses -------------------------------------------------------------------------------


@message(RESPONSE, T.OK, answers=T.HELLO)
@dataclass(frozen=True, slots=True)
class HelloOk(Frame):
    """HELLO accepted: the protocol version in use, your id and your nickname."""

    version: u16
    client_id: u32
    nick: str16


@message(RESPONSE, T.OK, answers=T.TIME)
@dataclass(frozen=True, slots=True)
class TimeOk(Frame):
    """Milliseconds since the Unix epoch, the server's UTC offset in seconds, its zone name."""

    epoch_ms: i64
    utc_offset_s: i32
    zone: str16


@message(RESPONSE, T.OK, answers=T.NAME)
@dataclass(frozen=True, slots=True)
class NameOk(Frame):
    """The server's name."""

    name: str16


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One record of a client list."""

    client_id: u32
    ip: addr
    port: u16
    nick: str16
    connected_ms: i64


CLIENT_LIST = RecordListKind(ClientInfo, min_size=4 + 1 + 2 + 2 + 8)
client_list = Annotated[tuple[ClientInfo, ...], CLIENT_LIST]


@message(RESPONSE, T.OK, answers=T.LIST)
@dataclass(frozen=True, slots=True)
class ListOk(Frame):
    """The clients (in id order) connected to the server, or in ``room``."""

    room: str16
    clients: client_list


@message(RESPONSE, T.OK, answers=T.SEND)
@dataclass(frozen=True, slots=True)
class SendOk(Frame):
    """The message was forwarded to ``target``; a RECEIPT for ``message_id`` will follow."""

    message_id: u64
    target: u32


@message(RESPONSE, T.OK, answers=T.SEND_NICK)
@dataclass(frozen=True, slots=True)
class SendNickOk(Frame):
    """The message was forwarded to the holder of the nickname, client ``target``; a RECEIPT
    for ``message_id`` will follow."""

    message_id: u64
    target: u32


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """One record of a room list."""

    name: str16
    members: u32
    flags: u8


ROOM_LIST = RecordListKind(RoomInfo, min_size=2 + 4 + 1)
room_list = Annotated[tuple[RoomInfo, ...], ROOM_LIST]


@message(RESPONSE, T.OK, answers=T.ROOMS)
@dataclass(frozen=True, slots=True)
class RoomsOk(Frame):
    """``total`` rooms exist; ``rooms`` are the next ones in name order (at most the server's
    page size); ``more`` is 1 when further rooms follow the last one listed."""

    total: u32
    more: u8
    rooms: room_list


@message(RESPONSE, T.OK, answers=T.HISTORY)
@dataclass(frozen=True, slots=True)
class HistoryOk(Frame):
    """``count`` MESSAGEs of ``room``'s history follow (flag HISTORY, in increasing id order);
    ``more`` is 1 when further lines lie beyond the page in the direction asked (older for
    LATEST and BEFORE, newer for AFTER and BETWEEN); ``epoch`` names the store the ids belong
    to (a different epoch: the store was reset, ids from before mean nothing)."""

    room: str16
    epoch: u64
    more: u8
    count: u32


@message(RESPONSE, T.OK, answers=T.NICK)
@dataclass(frozen=True, slots=True)
class NickOk(Frame):
    """Your nickname is now ``nick``."""

    nick: str16


@message(RESPONSE, T.OK, answers=T.JOIN)
@dataclass(frozen=True, slots=True)
class JoinOk(Frame):
    """Joined ``room`` of ``members`` members (you included); ``history`` MESSAGEs follow."""

    room: str16
    members: u32
    history: u32


@message(RESPONSE, T.OK, answers=T.LEAVE)
@dataclass(frozen=True, slots=True)
class LeaveOk(Frame):
    """Left ``room``."""

    room: str16


@message(RESPONSE, T.OK, answers=T.BROADCAST)
@dataclass(frozen=True, slots=True)
class BroadcastOk(Frame):
    """The message reached ``reached`` other members."""

    message_id: u64
    reached: u32


@message(RESPONSE, T.OK, answers=T.PING_REQUEST)
@dataclass(frozen=True, slots=True)
class PingOk(Frame):
    """The answer to a PING request."""


@message(RESPONSE, T.ERROR)
@dataclass(frozen=True, slots=True)
class ErrorResponse(Frame):
    """A request failed (or, with request id 0, the connection did)."""

    code: u16
    name: str16
    message: str16

    @classmethod
    def of(cls, code: ErrorCode, message: str, *, request_id: int = 0) -> ErrorResponse:
        return cls(int(code), code.name, message, request_id=request_id)


# --- indications -----------------------------------------------------------------------------


@message(INDICATION, T.WELCOME)
@dataclass(frozen=True, slots=True)
class Welcome(Frame):
    """Sent by the server on connect: who you are and the limits in force."""

    client_id: u32
    server_name: str16
    version: u16
    heartbeat_ms: u32
    max_frame: u32
    max_text: u32
    max_clients: u32
    ip: addr
    port: u16


@message(INDICATION, T.MESSAGE)
@dataclass(frozen=True, slots=True)
class Message(Frame):
    """A message for you: direct (``room`` == "") or broadcast in a room."""

    message_id: u64
    sender_id: u32
    sender_ip: addr
    sender_port: u16
    sender_nick: str16
    room: str16
    sent_ms: i64
    flags: u8
    text: str32


@message(INDICATION, T.ACK)
@dataclass(frozen=True, slots=True)
class Ack(Frame):
    """Client to server: the MESSAGE ``message_id`` reached this client."""

    message_id: u64


@message(INDICATION, T.RECEIPT)
@dataclass(frozen=True, slots=True)
class Receipt(Frame):
    """Server to sender: what became of the message ``message_id`` sent to ``target``."""

    message_id: u64
    target: u32
    status: u8


@message(INDICATION, T.ACKS)
@dataclass(frozen=True, slots=True)
class Acks(Frame):
    """Client to server (protocol version 2): the MESSAGEs ``message_ids`` reached this client
    (every MESSAGE of one read in one frame)."""

    message_ids: id_list


@message(INDICATION, T.RECEIPTS)
@dataclass(frozen=True, slots=True)
class Receipts(Frame):
    """Server to a sender that negotiated version 2: what became of its messages
    ``message_ids`` to ``target`` (many RECEIPTs in one frame)."""

    target: u32
    status: u8
    message_ids: id_list


@message(INDICATION, T.JOINED)
@dataclass(frozen=True, slots=True)
class Joined(Frame):
    """A client joined a room you are in."""

    room: str16
    client_id: u32
    nick: str16


@message(INDICATION, T.LEFT)
@dataclass(frozen=True, slots=True)
class Left(Frame):
    """A client left a room you are in (``reason``: see LeftReason)."""

    room: str16
    client_id: u32
    nick: str16
    reason: u8


@message(INDICATION, T.PING)
@dataclass(frozen=True, slots=True)
class Ping(Frame):
    """Server to client after a silent heartbeat interval: answer with PONG."""


@message(INDICATION, T.PONG)
@dataclass(frozen=True, slots=True)
class Pong(Frame):
    """Client to server: the answer to PING."""


@message(INDICATION, T.SHUTDOWN)
@dataclass(frozen=True, slots=True)
class Shutdown(Frame):
    """The server is going down; the connection closes after this frame."""

    reason: str16


@message(INDICATION, T.NICK_CHANGED)
@dataclass(frozen=True, slots=True)
class NickChanged(Frame):
    """A client that shares a room with you changed its nickname (``old_nick`` "" if it had
    none)."""

    client_id: u32
    old_nick: str16
    new_nick: str16
