"""Hand-fused encoders and parsers for the frames a busy server handles most.

Byte for byte the same as ``encode``/``decode_payload`` (the unit tests check that with
hypothesis), but each is one ``struct`` call: no message object, no per-field loop.  A
server uses them on frames it splits itself (``FrameDecoder.split_input`` and
``codec.HEADER_WORDS``; ``FrameDecoder.frames()`` gives the same keys and offsets);
everything else goes the general way.  ``ServerClock`` is the TIME answer's packer: the
clock it reads is the only state here, kept so that a millisecond's answers are encoded once.
"""

from __future__ import annotations

import struct
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Final

from .errors import ErrorCode, ProtocolError
from .wire import MAGIC, VERSION, MessageClass, MessageType, pack_address

#: RECEIPTS' ids go out through array("Q") (8 bytes an item on every platform CPython
#: supports), byte-swapped to network order on little-endian machines.
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
assert array("Q").itemsize == 8

_REQ = MessageClass.REQUEST
_RESP = MessageClass.RESPONSE
_IND = MessageClass.INDICATION

#: ``FrameDecoder.frames()`` keys of the frames with a fast path.
KEY_TIME: Final = (_REQ << 16) | MessageType.TIME
KEY_SEND: Final = (_REQ << 16) | MessageType.SEND
KEY_LIST: Final = (_REQ << 16) | MessageType.LIST
KEY_PING_REQUEST: Final = (_REQ << 16) | MessageType.PING_REQUEST
KEY_HELLO: Final = (_REQ << 16) | MessageType.HELLO
KEY_ACK: Final = (_IND << 16) | MessageType.ACK
KEY_ACKS: Final = (_IND << 16) | MessageType.ACKS
KEY_PONG: Final = (_IND << 16) | MessageType.PONG
#: Keys at or above this are not requests.
FIRST_NON_REQUEST_KEY: Final = _RESP << 16


def header_word(key: int) -> int:
    """The ``codec.HEADER_WORDS`` word (version, class and type) of a ``frames()`` key."""
    return (VERSION << 24) | key


#: The same keys as header words, for split loops that read ``codec.HEADER_WORDS``.
WORD_TIME: Final = header_word(KEY_TIME)
WORD_HELLO: Final = header_word(KEY_HELLO)
WORD_ACK: Final = header_word(KEY_ACK)
WORD_SEND: Final = header_word(KEY_SEND)
WORD_FIRST_NON_REQUEST: Final = header_word(FIRST_NON_REQUEST_KEY)

_TIME_OK: Final = struct.Struct("!HBBHIIHqiH")
_PING_OK: Final = struct.Struct("!HBBHIIH")
_MESSAGE_HEAD: Final = struct.Struct("!HBBHIIQ")
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")
_U32_U32: Final = struct.Struct("!II")
_I64: Final = struct.Struct("!q")
_LIST_OK_HEAD: Final = struct.Struct("!HBBHIIHH")
_TIME_FLAGS: Final = struct.Struct("!qB")  # a MESSAGE's sent_ms and flags

# Frames packed from their constant parts in one struct call with few arguments.  A split
# loop that wants no function call per frame may call the packers itself, with their
# constants, exactly as the encoders below do (the unit tests hold both to ``encode``).
#: OK(SEND) = ``pack_send_ok(SEND_OK_PREFIX, request_id, SEND_OK_MIDDLE, message_id, target)``.
SEND_OK_PREFIX: Final = struct.pack("!HBB", MAGIC, VERSION, _RESP) + _U16.pack(MessageType.OK)
SEND_OK_MIDDLE: Final = _U32.pack(14) + _U16.pack(MessageType.SEND)  # length, answered type
pack_send_ok: Final = struct.Struct("!6sI6sQI").pack
#: RECEIPT = ``pack_receipt(RECEIPT_HEAD, message_id, target, status)``.
RECEIPT_HEAD: Final = _MESSAGE_HEAD.pack(MAGIC, VERSION, _IND, MessageType.RECEIPT, 0, 13, 0)[:14]
pack_receipt: Final = struct.Struct("!14sQIB").pack
#: RECEIPTS' header and fixed fields (target, status, id count); the ids follow.
_RECEIPTS_HEAD: Final = struct.Struct("!HBBHIIIBI")
#: ``unpack_send_head(buf, start)``: a SEND payload's target and text length (the text's 8
#: bytes of header fields), unchecked; ``parse_send`` checks them.
unpack_send_head: Final = _U32_U32.unpack_from
#: ``unpack_send_frame(buf, pos)``: a frame's header words (as ``HEADER_WORDS``) and, if it
#: is a SEND, its target and text length: one struct call for the frame's first
#: ``SEND_FRAME_HEAD`` bytes (the last two are another frame's when its payload is shorter).
_SEND_FRAME: Final = struct.Struct("!HIIIII")
unpack_send_frame: Final = _SEND_FRAME.unpack_from
SEND_FRAME_HEAD: Final = _SEND_FRAME.size
#: ``unpack_ack(buf, start)[0]``: an ACK payload's message id (the payload is exactly that).
unpack_ack: Final = struct.Struct("!Q").unpack_from
#: MESSAGE header up to its length field (magic, version, class, type, request id 0).
_MESSAGE_PREFIX: Final = _MESSAGE_HEAD.pack(MAGIC, VERSION, _IND, MessageType.MESSAGE, 0, 0, 0)[:10]
#: MESSAGE packers by the size of their pre-encoded block (a handful of distinct sizes).
_MESSAGE_PACKS: dict[int, Callable[..., bytes]] = {}


def encode_time_ok(request_id: int, epoch_ms: int, utc_offset_s: int, zone: bytes) -> bytes:
    """OK(TIME) = ``encode(TimeOk(epoch_ms, utc_offset_s, zone.decode(), request_id=...))``."""
    return (
        _TIME_OK.pack(
            MAGIC,
            VERSION,
            _RESP,
            MessageType.OK,
            request_id,
            16 + len(zone),
            MessageType.TIME,
            epoch_ms,
            utc_offset_s,
            len(zone),
        )
        + zone
    )


def encode_send_ok(request_id: int, message_id: int, target: int) -> bytes:
    return pack_send_ok(SEND_OK_PREFIX, request_id, SEND_OK_MIDDLE, message_id, target)


def encode_ping_ok(request_id: int) -> bytes:
    return _PING_OK.pack(
        MAGIC, VERSION, _RESP, MessageType.OK, request_id, 2, MessageType.PING_REQUEST
    )


def encode_receipt(message_id: int, target: int, status: int) -> bytes:
    return pack_receipt(RECEIPT_HEAD, message_id, target, status)


def encode_receipts(target: int, status: int, message_ids: list[int]) -> bytes:
    """RECEIPTS (protocol version 2): the outcome of many messages to ``target``, one frame."""
    count = len(message_ids)
    # The ids through an array: a quarter of the time of struct.pack with a format per count.
    ids = array("Q", message_ids)
    if _LITTLE_ENDIAN:
        ids.byteswap()
    return (
        _RECEIPTS_HEAD.pack(
            MAGIC, VERSION, _IND, MessageType.RECEIPTS, 0, 9 + 8 * count, target, status, count
        )
        + ids.tobytes()
    )


def parse_acks(buf: bytes | bytearray, start: int, end: int) -> Sequence[int] | None:
    """ACKS's message ids (an array of them, in order); None when the payload is not a u32
    count and that many u64s (a malformed indication is ignored, never answered)."""
    if end - start < 4:
        return None
    count = _U32.unpack_from(buf, start)[0]
    if end - start - 4 != 8 * count:
        return None
    # Through an array, as encode_receipts: less than half the time of struct.unpack_from
    # with a format per count.
    ids = array("Q", buf[start + 4 : end])
    if _LITTLE_ENDIAN:
        ids.byteswap()
    return ids


def sender_block(sender_id: int, ip: str, port: int, nick: str) -> bytes:
    """The MESSAGE fields that depend only on the sender (id, addr, port, nick): cache it."""
    nick_b = nick.encode("utf-8")
    return _U32.pack(sender_id) + pack_address(ip) + struct.pack("!HH", port, len(nick_b)) + nick_b


def client_record(sender: bytes, connected_ms: int) -> bytes:
    """One ClientInfo record: a ``sender_block`` (the same four leading fields) and the time."""
    return sender + _I64.pack(connected_ms)


def encode_list_ok(request_id: int, room: bytes, records: list[bytes]) -> bytes:
    """OK(LIST) from encoded ``room`` and ``client_record`` records, in the order given."""
    body = b"".join(records)
    return b"".join(
        (
            _LIST_OK_HEAD.pack(
                MAGIC, VERSION, _RESP, MessageType.OK, request_id,
                2 + 2 + len(room) + 4 + len(body), MessageType.LIST, len(room),
            ),
            room,
            _U32.pack(len(records)),
            body,
        )
    )  # fmt: skip


def parse_list(buf: bytes | bytearray, start: int, end: int) -> bytes | None:
    """LIST's room (valid UTF-8, still encoded), or None when the payload is not exactly one
    str16 of valid UTF-8 (the general decoder then says what is wrong)."""
    if end - start < 2 or start + 2 + _U16.unpack_from(buf, start)[0] != end:
        return None
    room = bytes(buf[start + 2 : end])
    try:
        room.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return room


def encode_message(
    message_id: int, sender: bytes, room: bytes, sent_ms: int, flags: int, text: bytes
) -> bytes:
    """A MESSAGE indication from a cached ``sender_block`` and already-encoded UTF-8."""
    return encode_message_fields(
        message_id, sender + _U16.pack(len(room)) + room, sent_ms, flags, text
    )


def direct_fields(sender: bytes) -> bytes:
    """A ``sender_block`` followed by an empty room: the ``fields`` of a direct MESSAGE."""
    return sender + b"\x00\x00"


def message_packer(
    fields: bytes, sent_ms: int, flags: int
) -> tuple[Callable[[bytes, int, int, bytes, int], bytes], bytes, int, bytes]:
    """``(pack, prefix, base, block)`` for MESSAGEs with these pre-encoded ``fields``, time
    and flags (the fields between the message id and the text): the MESSAGE is
    ``pack(prefix, base + len(text), message_id, block, len(text)) + text``, one struct call
    with no 64-bit time to convert (what ``encode_message_fields`` does, for loops that make
    many MESSAGEs from one sender in the same millisecond)."""
    block = fields + _TIME_FLAGS.pack(sent_ms, flags)
    size = len(block)
    pack = _MESSAGE_PACKS.get(size)
    if pack is None:
        pack = _MESSAGE_PACKS[size] = struct.Struct(f"!10sIQ{size}sI").pack
    return pack, _MESSAGE_PREFIX, 8 + size + 4, block


def encode_message_fields(
    message_id: int, fields: bytes, sent_ms: int, flags: int, text: bytes | bytearray
) -> bytes:
    """A MESSAGE from pre-encoded ``fields`` (a ``sender_block`` and the room as str16, e.g.
    ``direct_fields``): one struct call (profile: the field-by-field join took ~5 % of the
    server's samples under a send load)."""
    pack, prefix, base, block = message_packer(fields, sent_ms, flags)
    return pack(prefix, base + len(text), message_id, block, len(text)) + text


def parse_send(buf: bytes | bytearray, start: int, end: int) -> tuple[int, bytes | bytearray]:
    """SEND's target and text (UTF-8 checked, still encoded: a copy of the buffer's bytes,
    of the buffer's type); ProtocolError(BAD_PAYLOAD)."""
    if end - start < 8:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, "payload ends inside the SEND header fields")
    target, length = unpack_send_head(buf, start)
    if start + 8 + length != end:
        if start + 8 + length > end:
            raise ProtocolError(ErrorCode.BAD_PAYLOAD, "payload ends inside the str32 field")
        extra = end - start - 8 - length
        raise ProtocolError(
            ErrorCode.BAD_PAYLOAD, f"{extra} unexpected byte(s) after the last field of SendRequest"
        )
    text = buf[start + 8 : end]  # no bytes(...) around it: that call cost more than the slice
    if not text.isascii():  # ASCII is valid UTF-8, and checking it builds no str
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                ErrorCode.BAD_PAYLOAD, f"invalid UTF-8 in str32 field: {exc.reason}"
            ) from None
    return target, text


class ServerClock:
    """Answers TIME: the OK payload is the same for every request within one millisecond,
    so it is encoded once per millisecond, and the zone looked up once per second."""

    __slots__ = ("_ms", "_pack", "_second", "_tail", "_zone")

    def __init__(self) -> None:
        self._ms = -1
        self._second = -1
        self._zone: tuple[int, bytes] = (0, b"")
        self._tail = b""
        self._pack: Callable[[bytes, int, bytes], bytes] = _time_ok_struct(0).pack

    def zone_at(self, epoch_ms: int) -> tuple[int, bytes]:
        """(UTC offset in seconds, zone name) at ``epoch_ms``."""
        second = epoch_ms // 1000
        if second != self._second:
            local = time.localtime(second)
            self._zone = (local.tm_gmtoff, local.tm_zone.encode("utf-8"))
            self._second = second
        return self._zone

    def now(self) -> tuple[Callable[[bytes, int, bytes], bytes], bytes]:
        """``(pack, tail)`` for answers now: ``pack(TIME_OK_PREFIX, request_id, tail)`` is the
        whole OK(TIME) frame, one struct call.  The server's hot path reads it once per batch
        of requests (a batch takes far less than a millisecond), not once per request."""
        epoch_ms = time.time_ns() // 1_000_000
        if epoch_ms != self._ms:
            offset, zone = self.zone_at(epoch_ms)
            tail = encode_time_ok(0, epoch_ms, offset, zone)[10:]  # all after the request id
            if len(tail) != len(self._tail):  # the zone name's length changed
                self._pack = _time_ok_struct(len(tail)).pack
            self._tail = tail
            self._ms = epoch_ms
        return self._pack, self._tail


#: The first six bytes of every OK(TIME) frame: magic, version, class and type.
TIME_OK_PREFIX = encode_time_ok(0, 0, 0, b"")[:6]


def _time_ok_struct(tail_size: int) -> struct.Struct:
    return struct.Struct(f"!{len(TIME_OK_PREFIX)}sI{tail_size}s")
