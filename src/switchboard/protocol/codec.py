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

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NoReturn

from .errors import ErrorCode, LocalProtocolError, ProtocolError
from .messages import DECODERS, ENCODERS, OK_DECODERS, Frame
from .wire import DEFAULT_MAX_FRAME, HEADER, HEADER_SIZE, MAGIC, VERSION, MessageClass, MessageType

_pack_header = HEADER.pack
_pack_header_into = HEADER.pack_into

#: The one way every split loop reads a header (``frames()`` here, the server's split loop
#: in server/connection.py, the null server in bench/null_server.py): ``(magic, word,
#: request id, payload length)``, where ``word`` is ``version << 24 | class << 16 | type``,
#: so that one range check validates version and class together.  A header is valid when
#: ``magic == MAGIC``, ``FIRST_HEADER_WORD <= word <= LAST_HEADER_WORD`` and ``length <=
#: max_payload``; ``word & 0xFFFFFF`` is then the ``frames()`` key (``fastpath.header_word``
#: goes back).  Each loop writes that one comparison inline, as a function call per frame
#: is measurable there; tests/unit/test_header_check.py holds the three to the same answers
#: for any header bytes.
HEADER_WORDS: Final = struct.Struct("!HIII")
FIRST_HEADER_WORD: Final = (VERSION << 24) | (min(MessageClass) << 16)
LAST_HEADER_WORD: Final = (VERSION << 24) | (max(MessageClass) << 16) | 0xFFFF
_unpack_header = HEADER_WORDS.unpack_from


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

    __slots__ = ("_buf", "_error", "_pos", "max_frame", "max_payload")

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < HEADER_SIZE:
            raise ValueError(f"max_frame must be at least the header size ({HEADER_SIZE})")
        self.max_frame = max_frame
        #: The largest payload a header may announce (read-only; an attribute, not a
        #: property, because split loops read it once per batch).
        self.max_payload = max_frame - HEADER_SIZE
        self._buf = bytearray()
        self._pos = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (a partial frame)."""
        return len(self._buf) - self._pos

    @property
    def failed(self) -> bool:
        """Whether it has refused a header (every further call raises that error)."""
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    def split_input(self, data: bytes) -> tuple[bytes | bytearray, int]:
        """Take ``data`` for a split loop the caller runs itself (a server's hot path).

        Returns the buffer to split and the offset of its first unconsumed byte: ``data``
        itself when nothing was pending (no copy), otherwise the decoder's buffer with
        ``data`` appended.  The caller checks each header as ``HEADER_WORDS`` describes,
        calls ``reject`` on the first one that fails, and ends with ``keep``.  Raises the
        decoder's fatal error if it has one, as ``feed`` does.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        if self._pos == len(buf):
            if buf:
                buf.clear()
                self._pos = 0
            return data, 0
        buf += data
        return buf, self._pos

    def keep(self, buf: bytes | bytearray, pos: int) -> None:
        """End a split loop over ``buf`` (from ``split_input``) that consumed it up to ``pos``:
        the rest, a partial frame, waits in the decoder for the next call."""
        if self._error is not None:
            return
        if buf is self._buf:
            del self._buf[:pos]
            self._pos = 0
        elif pos < len(buf):
            self._buf += memoryview(buf)[pos:]

    def reject(self, buf: bytes | bytearray, pos: int) -> NoReturn:
        """Raise the ProtocolError ``frames()`` raises for the header at ``pos`` of ``buf``,
        which failed the checks; the decoder then refuses further calls, as after
        ``frames()``."""
        magic, word, request_id, length = _unpack_header(buf, pos)
        self._fail(magic, word >> 24, (word >> 16) & 0xFF, request_id, length)

    @property
    def buffer(self) -> bytearray:
        """The receive buffer that ``frames()`` offsets point into."""
        return self._buf

    def __iter__(self) -> Iterator[Event]:
        buf = self._buf
        for key, request_id, start, end in self.frames():
            yield decode_payload(key, request_id, buf, start, end)

    def next_event(self) -> Event | None:
        """The next complete event, or None when more data is needed."""
        for key, request_id, start, end in self.frames(limit=1):
            return decode_payload(key, request_id, self._buf, start, end)
        return None

    def frames(self, limit: int = -1) -> Iterator[tuple[int, int, int, int]]:
        """The low-level view: ``(key, request_id, start, end)`` for each complete frame.

        ``key`` is ``message_class << 16 | message_type``; the payload is
        ``self.buffer[start:end]``, valid until the next ``feed``.  This is the hot path of
        a server: per frame, one ``unpack_from`` and a few comparisons.  Raises
        ProtocolError for a bad header, after yielding every frame before it.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        max_payload = self.max_payload
        unpack = _unpack_header
        try:
            while limit != 0 and len(buf) - pos >= HEADER_SIZE:
                magic, word, request_id, length = unpack(buf, pos)
                # The header is checked before waiting for the payload, so an oversized
                # announcement is refused without buffering a byte of it (HEADER_WORDS).
                if (
                    magic != MAGIC
                    or not FIRST_HEADER_WORD <= word <= LAST_HEADER_WORD
                    or length > max_payload
                ):
                    self._pos = pos
                    self._fail(magic, word >> 24, (word >> 16) & 0xFF, request_id, length)
                start = pos + HEADER_SIZE
                end = start + length
                if end > len(buf):
                    break
                pos = end
                limit -= 1
                self._pos = pos
                yield word & 0xFFFFFF, request_id, start, end
        finally:
            # Drop consumed bytes once per batch, not once per frame: CPython makes deleting
            # a bytearray's prefix cheap, and only the partial frame is left to keep.
            if self._error is None and self._pos and (limit != 0 or self._pos == len(buf)):
                del buf[: self._pos]
                self._pos = 0

    def _fail(
        self, magic: int, version: int, mclass: int, request_id: int, length: int
    ) -> NoReturn:
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
        elif length > self.max_payload:
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


_OK_KEY: Final = (MessageClass.RESPONSE << 16) | MessageType.OK


def decode_payload(
    key: int, request_id: int, buf: bytes | bytearray, start: int, end: int
) -> Event:
    """The message (or InvalidFrame) for one frame found by ``FrameDecoder.frames``."""
    if key == _OK_KEY:
        if end - start < 2:
            return InvalidFrame(key >> 16, key & 0xFFFF, request_id, _short_ok(request_id))
        decode = OK_DECODERS.get((buf[start] << 8) | buf[start + 1])
        start += 2
    else:
        decode = DECODERS.get((key >> 16, key & 0xFFFF))
    if decode is None:
        err = ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type 0x{key & 0xFFFF:02x} in class {key >> 16}",
            request_id=request_id,
        )
        return InvalidFrame(key >> 16, key & 0xFFFF, request_id, err)
    try:
        msg: Frame = decode(buf, start, end, request_id)
    except ProtocolError as exc:
        exc.request_id = request_id
        return InvalidFrame(key >> 16, key & 0xFFFF, request_id, exc)
    return msg


def _short_ok(request_id: int) -> ProtocolError:
    return ProtocolError(
        ErrorCode.BAD_PAYLOAD, "OK payload lacks the answered request type", request_id=request_id
    )
