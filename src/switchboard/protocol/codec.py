"""Bytes in, messages out; messages in, bytes out.  No I/O anywhere.

    decoder = FrameDecoder(max_frame=64 * 1024)
    decoder.feed(chunk)            # any chunk: one byte, or many frames at once
    for event in decoder:          # complete messages in order; stops when more data is needed
        ...                        # a Frame subclass, or an InvalidFrame (the stream goes on)

A fatal ``ProtocolError`` (bad magic, unsupported version, oversized or unknown-class
frame) is raised from the iteration after every frame before it has been yielded; from
then on the decoder refuses further calls by raising the same error again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .errors import ErrorCode, LocalProtocolError, ProtocolError
from .messages import DECODERS, ENCODERS, OK_DECODERS, Frame
from .wire import DEFAULT_MAX_FRAME, HEADER, HEADER_SIZE, MAGIC, VERSION, MessageClass, MessageType

_OK: Final = (MessageClass.RESPONSE, MessageType.OK)
_KNOWN_CLASSES: Final = frozenset(int(c) for c in MessageClass)
_pack_header = HEADER.pack
_pack_header_into = HEADER.pack_into
_unpack_header = HEADER.unpack_from


def encode(msg: Frame) -> bytes:
    """The whole frame (header and payload) for ``msg``."""
    try:
        encode_payload = ENCODERS[type(msg)]
    except KeyError:
        raise LocalProtocolError(f"{type(msg).__name__} is not a registered message") from None
    out = bytearray(HEADER_SIZE)
    encode_payload(msg, out)
    request_id = msg.request_id
    if not 0 <= request_id <= 0xFFFFFFFF:
        raise LocalProtocolError(f"request id {request_id} does not fit a u32")
    _pack_header_into(
        out, 0, MAGIC, VERSION, msg.MESSAGE_CLASS, msg.MESSAGE_TYPE, request_id,
        len(out) - HEADER_SIZE,
    )  # fmt: skip
    return bytes(out)


@dataclass(frozen=True, slots=True)
class InvalidFrame:
    """A well-delimited frame whose type or payload is not acceptable.

    The frame boundary is intact, so the stream goes on; the receiver answers a
    request with ERROR ``error.code`` (using ``request_id``) and ignores anything else.
    """

    message_class: int
    message_type: int
    request_id: int
    error: ProtocolError


Event = Frame | InvalidFrame


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes, iterate complete events."""

    __slots__ = ("_buf", "_error", "_max_payload", "_pos", "max_frame")

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < HEADER_SIZE:
            raise ValueError(f"max_frame must be at least the header size ({HEADER_SIZE})")
        self.max_frame = max_frame
        self._max_payload = max_frame - HEADER_SIZE
        self._buf = bytearray()
        self._pos = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (a partial frame)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    def __iter__(self) -> Iterator[Event]:
        while (event := self.next_event()) is not None:
            yield event

    def next_event(self) -> Event | None:
        """The next complete event, or None when more data is needed."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            self._compact()
            return None
        magic, version, mclass, mtype, request_id, length = _unpack_header(buf, pos)
        # Everything about the header is checked before waiting for the payload, so an
        # oversized announcement is refused without buffering a byte of it.
        if (
            magic != MAGIC
            or version != VERSION
            or length > self._max_payload
            or (mclass not in _KNOWN_CLASSES)
        ):
            self._fail(magic, version, mclass, request_id, length)
        start = pos + HEADER_SIZE
        end = start + length
        if end > len(buf):
            self._compact()
            return None
        self._pos = end
        if (mclass, mtype) == _OK:
            if length < 2:
                return InvalidFrame(mclass, mtype, request_id, _short_ok(request_id))
            answers = (buf[start] << 8) | buf[start + 1]
            decode = OK_DECODERS.get(answers)
            start += 2
        else:
            decode = DECODERS.get((mclass, mtype))
        if decode is None:
            err = ProtocolError(
                ErrorCode.UNKNOWN_TYPE,
                f"unknown message type 0x{mtype:02x} in class {mclass}",
                request_id=request_id,
            )
            return InvalidFrame(mclass, mtype, request_id, err)
        try:
            msg: Frame = decode(buf, start, end, request_id)
        except ProtocolError as exc:
            exc.request_id = request_id
            return InvalidFrame(mclass, mtype, request_id, exc)
        return msg

    def _compact(self) -> None:
        # Drop consumed bytes once per batch, not once per frame: CPython makes deleting
        # a bytearray's prefix cheap, and only the partial frame is left to keep.
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def _fail(self, magic: int, version: int, mclass: int, request_id: int, length: int) -> None:
        if magic != MAGIC:
            err = ProtocolError(
                ErrorCode.BAD_FRAME, f"bad magic 0x{magic:04x} (expected 0x{MAGIC:04x})"
            )
        elif version != VERSION:
            err = ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {version} is not supported (this peer speaks {VERSION})",
                request_id=request_id,
            )
        elif length > self._max_payload:
            err = ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {HEADER_SIZE + length} bytes exceeds the maximum of {self.max_frame}",
                request_id=request_id,
            )
        else:
            err = ProtocolError(
                ErrorCode.BAD_FRAME, f"unknown message class {mclass}", request_id=request_id
            )
        self._error = err
        self._buf = bytearray()
        self._pos = 0
        raise err


def _short_ok(request_id: int) -> ProtocolError:
    return ProtocolError(
        ErrorCode.BAD_PAYLOAD, "OK payload lacks the answered request type", request_id=request_id
    )
