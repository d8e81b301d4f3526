"""The incremental decoder: fragmentation, coalescing, every malformed input, the fuzz invariant."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.protocol_strategies import frame_streams
from switchboard.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    Ack,
    BroadcastRequest,
    ClientInfo,
    ErrorCode,
    ErrorResponse,
    Event,
    Frame,
    FrameDecoder,
    InvalidFrame,
    ListOk,
    Message,
    MessageClass,
    MessageType,
    NickRequest,
    Ping,
    PingRequest,
    ProtocolError,
    SendRequest,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
)

REQ, RESP, IND = MessageClass.REQUEST, MessageClass.RESPONSE, MessageClass.INDICATION

#: A varied stream: requests, OK results of different shapes, an error, indications with
#: addresses, a client list and multi-byte text.
STREAM_MESSAGES: list[Frame] = [
    TimeRequest(request_id=1),
    SendRequest(2, "héllo 你好 👩🏾‍💻", request_id=2),
    TimeOk(1_763_865_000_000, 3600, "CET", request_id=1),
    ListOk(
        "",
        (ClientInfo(1, "127.0.0.1", 50_000, "alice", 1), ClientInfo(2, "::1", 1, "", 2)),
        request_id=3,
    ),
    ErrorResponse.of(ErrorCode.NO_SUCH_CLIENT, "no client 9", request_id=4),
    Welcome(7, "switchboard", 1, 10_000, 65_536, 4096, 1024, "::1", 50_001),
    Message(42, 1, "10.1.2.3", 4000, "bob", "lobby", -5, 1, "e\u0301" * 30),
    Ack(42),
    Ping(),
    BroadcastRequest("lobby", "", request_id=0xFFFF_FFFF),
    PingRequest(request_id=5),
]
STREAM = b"".join(encode(m) for m in STREAM_MESSAGES)


def frame(
    mclass: int,
    mtype: int,
    payload: bytes = b"",
    *,
    request_id: int = 1,
    magic: int = MAGIC,
    version: int = 1,
    length: int | None = None,
) -> bytes:
    """A hand-made frame; any header field may be wrong on purpose."""
    if length is None:
        length = len(payload)
    return HEADER.pack(magic, version, mclass, mtype, request_id, length) + payload


def decode_all(*chunks: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[Event]:
    decoder = FrameDecoder(max_frame=max_frame)
    events: list[Event] = []
    for chunk in chunks:
        decoder.feed(chunk)
        events.extend(decoder)
    assert decoder.buffered == 0, "a complete stream left bytes behind"
    return events


def str16(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


# --- fragmentation and coalescing ------------------------------------------------------------


def test_whole_stream_in_one_chunk() -> None:
    assert decode_all(STREAM) == STREAM_MESSAGES


def test_every_split_point_into_two_chunks() -> None:
    for cut in range(len(STREAM) + 1):
        assert decode_all(STREAM[:cut], STREAM[cut:]) == STREAM_MESSAGES, f"split at {cut}"


def test_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    events: list[Event] = []
    for i in range(len(STREAM)):
        decoder.feed(STREAM[i : i + 1])
        events.extend(decoder)
    assert events == STREAM_MESSAGES
    assert decoder.buffered == 0


def test_partial_frame_waits_and_reports_what_is_buffered() -> None:
    data = encode(NickRequest("alice", request_id=3))
    decoder = FrameDecoder()
    decoder.feed(data[:5])
    assert decoder.next_event() is None
    assert decoder.buffered == 5
    decoder.feed(data[5:-1])
    assert decoder.next_event() is None
    assert decoder.buffered == len(data) - 1
    decoder.feed(memoryview(data)[-1:])  # any bytes-like object is accepted
    assert decoder.next_event() == NickRequest("alice", request_id=3)
    assert decoder.next_event() is None
    assert decoder.buffered == 0


def test_hundreds_of_frames_coalesced_in_one_chunk() -> None:
    messages = [TimeRequest(request_id=i) for i in range(1, 401)]
    messages += [SendRequest(i, "x" * (i % 50), request_id=i) for i in range(1, 301)]
    events = decode_all(b"".join(encode(m) for m in messages))
    assert events == messages


def test_coalesced_frames_followed_by_a_partial_one() -> None:
    tail = encode(TimeRequest(request_id=999))
    decoder = FrameDecoder()
    decoder.feed(STREAM * 3 + tail[:7])
    assert list(decoder) == STREAM_MESSAGES * 3
    assert decoder.buffered == 7
    decoder.feed(tail[7:])
    assert list(decoder) == [TimeRequest(request_id=999)]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_streams(), st.data())
def test_random_streams_split_anywhere_decode_identically(
    stream: tuple[list[Frame], bytes], data: st.DataObject
) -> None:
    messages, raw = stream
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert decode_all(*chunks, max_frame=1 << 20) == messages


# --- fatal header errors ---------------------------------------------------------------------


def expect_fatal(data: bytes, code: ErrorCode, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
    """Feeding ``data`` raises ``code``; the decoder then refuses every further call."""
    decoder = FrameDecoder(max_frame=max_frame)
    decoder.feed(data)
    with pytest.raises(ProtocolError) as info:
        decoder.next_event()
    err = info.value
    assert err.code == code
    assert err.closes_connection
    assert decoder.buffered == 0
    for call in (lambda: decoder.feed(encode(TimeRequest())), decoder.next_event):
        with pytest.raises(ProtocolError) as again:
            call()
        assert again.value is err
    with pytest.raises(ProtocolError):
        list(decoder)


def test_bad_magic_is_bad_frame_with_request_id_zero() -> None:
    data = frame(REQ, MessageType.TIME, magic=0x4745, request_id=77)  # "GE" as in "GET /"
    expect_fatal(data, ErrorCode.BAD_FRAME)
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(ProtocolError) as info:
        decoder.next_event()
    assert info.value.request_id == 0  # nothing in that header can be trusted


def test_http_request_is_bad_frame() -> None:
    expect_fatal(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode.BAD_FRAME)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version_is_fatal(version: int) -> None:
    data = frame(REQ, MessageType.TIME, version=version, request_id=5)
    expect_fatal(data, ErrorCode.UNSUPPORTED_VERSION)
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(ProtocolError) as info:
        decoder.next_event()
    assert info.value.request_id == 5


@pytest.mark.parametrize("mclass", [0, 4, 255])
def test_unknown_class_is_bad_frame(mclass: int) -> None:
    data = frame(mclass, MessageType.TIME, request_id=6)
    expect_fatal(data, ErrorCode.BAD_FRAME)
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(ProtocolError) as info:
        decoder.next_event()
    assert info.value.request_id == 6


def test_checks_run_in_the_documented_order() -> None:
    # magic before version before size before class
    expect_fatal(frame(9, 1, magic=0, version=9, length=1 << 30), ErrorCode.BAD_FRAME)
    expect_fatal(frame(9, 1, version=9, length=1 << 30), ErrorCode.UNSUPPORTED_VERSION)
    expect_fatal(frame(9, 1, length=1 << 30), ErrorCode.FRAME_TOO_LARGE)


@pytest.mark.parametrize("max_frame", [HEADER_SIZE, 100, DEFAULT_MAX_FRAME])
def test_oversized_header_is_refused_before_any_payload_arrives(max_frame: int) -> None:
    header = frame(REQ, MessageType.SEND, length=max_frame - HEADER_SIZE + 1, request_id=8)
    assert len(header) == HEADER_SIZE  # no payload fed at all
    decoder = FrameDecoder(max_frame=max_frame)
    decoder.feed(header[:-1])
    assert decoder.next_event() is None  # 13 bytes: not a header yet
    decoder.feed(header[-1:])
    with pytest.raises(ProtocolError) as info:
        decoder.next_event()
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert info.value.request_id == 8
    assert decoder.buffered == 0  # nothing kept, nothing waiting for the announced payload
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00" * 1000)  # and nothing more is accepted
    assert decoder.buffered == 0
    expect_fatal(header, ErrorCode.FRAME_TOO_LARGE, max_frame=max_frame)


def test_four_gigabyte_announcement_is_refused_from_the_header() -> None:
    expect_fatal(frame(REQ, MessageType.SEND, length=0xFFFF_FFFF), ErrorCode.FRAME_TOO_LARGE)


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    max_frame = 100
    msg = SendRequest(1, "x" * (max_frame - HEADER_SIZE - 8))
    data = encode(msg)
    assert len(data) == max_frame
    decoder = FrameDecoder(max_frame=max_frame)
    decoder.feed(data[:HEADER_SIZE])
    assert decoder.next_event() is None  # waits for the payload: within the limit
    decoder.feed(data[HEADER_SIZE:])
    assert list(decoder) == [msg]


def test_max_frame_smaller_than_a_header_is_refused() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=HEADER_SIZE - 1)


def test_frames_before_a_fatal_header_are_delivered_first() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(TimeRequest(request_id=1)) + encode(PingRequest(request_id=2)))
    decoder.feed(frame(REQ, MessageType.TIME, magic=0))
    assert decoder.next_event() == TimeRequest(request_id=1)
    assert decoder.next_event() == PingRequest(request_id=2)
    with pytest.raises(ProtocolError) as info:
        decoder.next_event()
    assert info.value.code == ErrorCode.BAD_FRAME


# --- recoverable errors: the frame is skipped, the stream goes on ----------------------------

NEXT = TimeRequest(request_id=4242)

TRUNCATED_ADDR = (
    struct.pack("!I", 1) + str16("s") + struct.pack("!HIIII", 1, 1, 1, 1, 1) + b"\x06\x00\x01"
)
BAD_FAMILY = (
    struct.pack("!I", 1) + str16("s") + struct.pack("!HIIII", 1, 1, 1, 1, 1) + b"\x05" + b"\0" * 6
)

#: One ClientInfo of 43 bytes: long enough that a count of 2 passes the cheap size check
#: (2 x 17 bytes) and the decoder runs out of bytes inside the second record.
ONE_RECORD = (
    struct.pack("!I", 1) + b"\x06" + b"\0" * 16 + struct.pack("!H", 2) + str16("abcdefghij")
    + struct.pack("!q", 3)
)  # fmt: skip

RECOVERABLE: dict[str, tuple[bytes, ErrorCode]] = {
    "unknown request type": (frame(REQ, 0x3F, b"whatever", request_id=9), ErrorCode.UNKNOWN_TYPE),
    "unknown indication type": (frame(IND, 0xFE, request_id=9), ErrorCode.UNKNOWN_TYPE),
    "unknown response type": (frame(RESP, 0x7E, request_id=9), ErrorCode.UNKNOWN_TYPE),
    "request type used as indication": (
        frame(IND, MessageType.TIME, request_id=9),
        ErrorCode.UNKNOWN_TYPE,
    ),
    "trailing byte after an empty payload": (
        frame(REQ, MessageType.TIME, b"\x00", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "trailing bytes after the last field": (
        frame(REQ, MessageType.NICK, str16("bob") + b"zz", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "str16 length beyond the payload": (
        frame(REQ, MessageType.NICK, b"\x00\x09bob", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "str16 length prefix cut": (
        frame(REQ, MessageType.NICK, b"\x00", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "str32 length beyond the payload": (
        frame(REQ, MessageType.SEND, struct.pack("!II", 2, 0xFFFF_FFFF) + b"hi", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "integer field cut": (
        frame(REQ, MessageType.SEND, b"\x00\x00", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "empty payload where fields are due": (
        frame(IND, MessageType.ACK, request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "invalid UTF-8": (
        frame(REQ, MessageType.NICK, b"\x00\x02\xff\xfe", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "UTF-8 encoded surrogate": (
        frame(REQ, MessageType.NICK, b"\x00\x03\xed\xa0\x80", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "overlong UTF-8": (
        frame(REQ, MessageType.NICK, b"\x00\x02\xc0\xaf", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "bad address family": (frame(IND, MessageType.WELCOME, BAD_FAMILY), ErrorCode.BAD_PAYLOAD),
    "address cut": (frame(IND, MessageType.WELCOME, TRUNCATED_ADDR), ErrorCode.BAD_PAYLOAD),
    "client-list count larger than the payload": (
        frame(RESP, MessageType.OK, b"\x00\x04" + str16("") + b"\xff\xff\xff\xff", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "client-list count one more than the records present": (
        frame(RESP, MessageType.OK, b"\x00\x04" + str16("") + b"\x00\x00\x00\x02" + ONE_RECORD),
        ErrorCode.BAD_PAYLOAD,
    ),
    "OK with an empty payload": (frame(RESP, MessageType.OK, request_id=9), ErrorCode.BAD_PAYLOAD),
    "OK with a one-byte payload": (
        frame(RESP, MessageType.OK, b"\x00", request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
    "OK answering an unknown request type": (
        frame(RESP, MessageType.OK, b"\x00\x3f", request_id=9),
        ErrorCode.UNKNOWN_TYPE,
    ),
    "OK answering a response type": (
        frame(RESP, MessageType.OK, b"\x00\x40", request_id=9),
        ErrorCode.UNKNOWN_TYPE,
    ),
    "OK result truncated": (
        frame(RESP, MessageType.OK, b"\x00\x02" + b"\x00" * 5, request_id=9),
        ErrorCode.BAD_PAYLOAD,
    ),
}


@pytest.mark.parametrize("case", sorted(RECOVERABLE))
def test_recoverable_error_then_the_stream_goes_on(case: str) -> None:
    data, code = RECOVERABLE[case]
    header = HEADER.unpack_from(data)
    events = decode_all(encode(TimeRequest(request_id=1)) + data + encode(NEXT))
    assert len(events) == 3
    assert events[0] == TimeRequest(request_id=1)
    invalid = events[1]
    assert isinstance(invalid, InvalidFrame)
    assert invalid.error.code == code
    assert not invalid.error.closes_connection
    assert (invalid.message_class, invalid.message_type) == (header[2], header[3])
    assert invalid.request_id == invalid.error.request_id == header[4]
    assert events[2] == NEXT


@pytest.mark.parametrize("case", sorted(RECOVERABLE))
def test_recoverable_errors_byte_at_a_time(case: str) -> None:
    data, code = RECOVERABLE[case]
    stream = data + encode(NEXT)
    events = decode_all(*(stream[i : i + 1] for i in range(len(stream))))
    assert [type(e) for e in events] == [InvalidFrame, TimeRequest]
    assert isinstance(events[0], InvalidFrame)
    assert events[0].error.code == code


def summary(events: list[Event]) -> list[object]:
    """Events made comparable: an InvalidFrame by its class, type, request id and code."""
    return [
        (e.message_class, e.message_type, e.request_id, e.error.code)
        if isinstance(e, InvalidFrame)
        else e
        for e in events
    ]


def test_stream_with_invalid_frames_split_at_every_point() -> None:
    cases = [RECOVERABLE[name][0] for name in sorted(RECOVERABLE)]
    stream = b"".join(part for case in cases for part in (case, encode(NEXT)))
    expected = summary(decode_all(stream))
    assert len(expected) == 2 * len(cases)
    assert summary(decode_all(*(stream[i : i + 1] for i in range(len(stream))))) == expected
    for cut in range(len(stream) + 1):
        assert summary(decode_all(stream[:cut], stream[cut:])) == expected, f"split at {cut}"


def test_client_list_count_is_refused_before_looping() -> None:
    # 2^32 - 1 announced records in a 10-byte payload: refused at once, not after a long loop
    payload = b"\x00\x04" + str16("") + b"\xff\xff\xff\xff"
    (event,) = decode_all(frame(RESP, MessageType.OK, payload))
    assert isinstance(event, InvalidFrame)
    assert "list of ClientInfo" in event.error.message


def test_room_list_count_is_refused_before_looping() -> None:
    # RoomsOk: total, more, then 2^32 - 1 announced rooms in no bytes at all
    payload = b"\x00\x0c" + b"\x00\x00\x00\x01" + b"\x00" + b"\xff\xff\xff\xff"
    (event,) = decode_all(frame(RESP, MessageType.OK, payload))
    assert isinstance(event, InvalidFrame)
    assert "list of RoomInfo" in event.error.message


# --- the fuzz invariant ----------------------------------------------------------------------


def fuzz(data: bytes, chunk: int, *, max_frame: int = 4096) -> list[Event]:
    """Feed ``data`` in ``chunk``-sized pieces: events, or a ProtocolError, nothing else."""
    decoder = FrameDecoder(max_frame=max_frame)
    events: list[Event] = []
    try:
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk])
            events.extend(decoder)
    except ProtocolError as err:
        assert isinstance(err.code, ErrorCode)
        # once failed, always failed
        with pytest.raises(ProtocolError):
            decoder.next_event()
    # every event consumed at least a header's worth of input
    assert len(events) <= len(data) // HEADER_SIZE
    for event in events:
        assert isinstance(event, Frame | InvalidFrame)
        if isinstance(event, InvalidFrame):
            assert event.error.code in (ErrorCode.UNKNOWN_TYPE, ErrorCode.BAD_PAYLOAD)
    return events


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Building valid streams costs hypothesis more than raw bytes: fewer, larger examples.
FUZZ_STREAMS = settings(FUZZ, max_examples=80)


@FUZZ
@given(st.binary(max_size=2048), st.integers(1, 64))
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    fuzz(data, chunk)


@FUZZ
@given(st.binary(max_size=512), st.integers(1, 64))
def test_fuzz_random_bytes_after_a_valid_header_prefix(data: bytes, chunk: int) -> None:
    # A correct magic and version steer the fuzzer past the first checks into the payloads.
    fuzz(b"SB\x01" + data, chunk)


@FUZZ
@given(
    st.sampled_from(STREAM_MESSAGES),
    st.integers(1, 3),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
)
def test_fuzz_well_framed_random_payloads(
    base: Frame, mclass: int, mtype: int, payload: bytes
) -> None:
    # Random payloads inside correct headers reach every field decoder.
    data = frame(mclass, mtype, payload) + frame(base.MESSAGE_CLASS, base.MESSAGE_TYPE, payload)
    events = fuzz(data + encode(NEXT), 4096)
    assert len(events) == 3  # well framed: one event each, garbage or not
    assert events[-1] == NEXT


@FUZZ_STREAMS
@given(frame_streams(8), st.binary(max_size=512), st.integers(1, 64))
def test_fuzz_random_bytes_after_valid_frames(
    stream: tuple[list[Frame], bytes], garbage: bytes, chunk: int
) -> None:
    messages, raw = stream
    events = fuzz(raw + garbage, chunk, max_frame=1 << 20)
    assert events[: len(messages)] == messages


@FUZZ_STREAMS
@given(frame_streams(8), st.data())
def test_fuzz_mutated_valid_streams(stream: tuple[list[Frame], bytes], data: st.DataObject) -> None:
    _, raw = stream
    if not raw:
        return
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        mutated[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    fuzz(bytes(mutated), data.draw(st.integers(1, 64)), max_frame=1 << 20)
