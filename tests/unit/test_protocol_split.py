"""Split loops run by the caller (FrameDecoder.split_input/keep/reject, HEADER_WORDS) find the
same frames and raise the same errors as FrameDecoder.frames(), however the bytes arrive."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.protocol_strategies import frame_streams
from switchboard.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    ErrorCode,
    Frame,
    FrameDecoder,
    MessageClass,
    MessageType,
    ProtocolError,
    SendRequest,
    TimeRequest,
    encode,
)
from switchboard.protocol.codec import FIRST_HEADER_WORD, HEADER_WORDS, LAST_HEADER_WORD
from switchboard.protocol.fastpath import KEY_SEND, KEY_TIME, WORD_TIME, header_word

Found = tuple[int, int, bytes]  # (frames() key, request id, payload)
Feed = Callable[[FrameDecoder, bytes], list[Found]]  # split_loop or via_frames


def split_loop(decoder: FrameDecoder, data: bytes) -> list[Found]:
    """The server's loop, without the server: every complete frame in ``data`` and before."""
    found: list[Found] = []
    buf, pos = decoder.split_input(data)
    try:
        size = len(buf)
        while size - pos >= HEADER_SIZE:
            magic, word, request_id, length = HEADER_WORDS.unpack_from(buf, pos)
            if (
                magic != MAGIC
                or not FIRST_HEADER_WORD <= word <= LAST_HEADER_WORD
                or length > decoder.max_payload
            ):
                decoder.reject(buf, pos)
            end = pos + HEADER_SIZE + length
            if end > size:
                break
            found.append((word & 0xFFFFFF, request_id, bytes(buf[pos + HEADER_SIZE : end])))
            pos = end
    finally:
        decoder.keep(buf, pos)
    return found


def via_frames(decoder: FrameDecoder, data: bytes) -> list[Found]:
    decoder.feed(data)
    buf = decoder.buffer
    return [(key, rid, bytes(buf[start:end])) for key, rid, start, end in decoder.frames()]


def chunked(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted(cuts)
    return [raw[a:b] for a, b in zip([0, *bounds], [*bounds, len(raw)], strict=True)]


def outcome(
    feed: Feed, chunks: list[bytes], max_frame: int
) -> tuple[list[Found], int, ErrorCode | None]:
    """Frames found, bytes left buffered, and the fatal error code if any."""
    decoder = FrameDecoder(max_frame=max_frame)
    found: list[Found] = []
    try:
        for chunk in chunks:
            found += feed(decoder, chunk)
    except ProtocolError as err:
        assert decoder.buffered == 0
        with pytest.raises(ProtocolError) as again:  # failed for good, as after frames()
            decoder.split_input(b"")
        assert again.value is err
        return found, 0, err.code
    return found, decoder.buffered, None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_streams(), st.binary(max_size=20), st.data())
def test_split_loop_matches_frames_however_the_stream_is_cut(
    stream: tuple[list[Frame], bytes], garbage: bytes, data: st.DataObject
) -> None:
    _, raw = stream
    raw += garbage  # often a bad or partial header at the end
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    max_frame = data.draw(st.sampled_from([HEADER_SIZE + 40, DEFAULT_MAX_FRAME]))
    expected = outcome(via_frames, chunked(raw, cuts), max_frame)
    assert outcome(split_loop, chunked(raw, cuts), max_frame) == expected


@pytest.mark.parametrize(
    ("header", "code", "request_id"),
    [
        (HEADER.pack(0x4745, 1, 1, 2, 7, 0), ErrorCode.BAD_FRAME, 0),
        (HEADER.pack(MAGIC, 2, 1, 2, 7, 0), ErrorCode.UNSUPPORTED_VERSION, 7),
        (HEADER.pack(MAGIC, 1, 4, 2, 7, 0), ErrorCode.BAD_FRAME, 7),
        (HEADER.pack(MAGIC, 1, 0, 2, 7, 0), ErrorCode.BAD_FRAME, 7),
        (HEADER.pack(MAGIC, 1, 1, 5, 7, DEFAULT_MAX_FRAME), ErrorCode.FRAME_TOO_LARGE, 7),
    ],
)
def test_bad_header_after_good_frames(header: bytes, code: ErrorCode, request_id: int) -> None:
    decoder = FrameDecoder()
    good = encode(TimeRequest(request_id=1)) + encode(SendRequest(2, "hi", request_id=2))
    with pytest.raises(ProtocolError) as info:
        split_loop(decoder, good + header)
    assert (info.value.code, info.value.request_id) == (code, request_id)
    assert decoder.buffered == 0


def test_partial_frame_is_kept_without_copying_complete_input() -> None:
    decoder = FrameDecoder()
    frame = encode(SendRequest(3, "hello", request_id=5))
    assert split_loop(decoder, frame + frame[:9]) == [(KEY_SEND, 5, frame[HEADER_SIZE:])]
    assert decoder.buffered == 9
    assert split_loop(decoder, frame[9:]) == [(KEY_SEND, 5, frame[HEADER_SIZE:])]
    assert decoder.buffered == 0
    buf, pos = decoder.split_input(frame)
    assert buf is frame and pos == 0  # nothing pending: the input itself is split
    decoder.keep(buf, len(frame))
    assert decoder.buffered == 0


def test_header_word_of_a_time_request() -> None:
    _, word, request_id, length = HEADER_WORDS.unpack_from(encode(TimeRequest(request_id=9)))
    assert (word, request_id, length) == (WORD_TIME, 9, 0)
    assert word == header_word(KEY_TIME)
    assert word & 0xFFFFFF == KEY_TIME == (MessageClass.REQUEST << 16) | MessageType.TIME
